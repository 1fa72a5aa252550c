// The GPU tier (cache level 0): engine workers, one slot per GPU (or one on CPU), each started at
// agent start so that a cold start finds Python imported and the device up. The supervisor hands
// out idle workers for loads (unloading the least recently used idle model when none is free),
// health-checks every worker with GetStats, and replaces one that dies or stops answering: its
// Infer streams end with UNAVAILABLE, its model is reported unloaded, and a fresh warm worker
// takes its slot.
import { mkdir } from "node:fs/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { EngineState } from "../gen/thaw/agent/v1/agent_pb.js";
import { type EngineLaunch, EngineWorker, type ResidentModel } from "./engine-worker.js";

export interface SupervisorOptions {
  /** One worker per entry: "cpu", "cuda:0", ... */
  devices: string[];
  launch: EngineLaunch;
  /** GetStats every this many milliseconds (default 1000). */
  healthIntervalMs?: number;
  /** A worker that misses this many health checks in a row is killed and replaced (default 3). */
  healthFailures?: number;
  /** A model left an engine: unloaded ("unload"), evicted for another ("evict") or lost with its worker ("failed"). */
  onModelGone?: (model: ResidentModel, why: "unload" | "evict" | "failed") => void;
  /** A worker died; its replacement is starting. */
  onWorkerFailed?: (worker: EngineWorker) => void;
}

export class EngineSupervisor {
  private readonly slots: EngineWorker[] = [];
  private readonly healthMs: number;
  private readonly maxFailures: number;
  private closed = false;
  private healthTimer: NodeJS.Timeout | undefined;
  private waiters: (() => void)[] = [];
  private spawned = 0;
  /** Times of recent worker deaths, for backing off. */
  private readonly crashes: number[] = [];
  private lastFailure: string | undefined;

  constructor(private readonly options: SupervisorOptions) {
    this.healthMs = options.healthIntervalMs ?? 1000;
    this.maxFailures = options.healthFailures ?? 3;
  }

  /** Starts one warm worker per device (does not wait for them to be ready). */
  async start(): Promise<void> {
    await mkdir(this.options.launch.socketDir, { recursive: true });
    for (let slot = 0; slot < this.options.devices.length; slot++) this.slots.push(this.spawn(slot));
    if (this.slots.length > 0) {
      this.healthTimer = setInterval(() => void this.checkHealth(), this.healthMs);
      this.healthTimer.unref();
    }
  }

  /** Waits until every worker has started (or failed to). */
  async whenReady(): Promise<void> {
    await Promise.all(this.slots.map((w) => w.ready.catch(() => {})));
  }

  get size(): number {
    return this.slots.length;
  }

  workers(): readonly EngineWorker[] {
    return this.slots;
  }

  /** The worker serving `key`, if any. */
  find(key: string): EngineWorker | undefined {
    return this.slots.find((w) => w.state === EngineState.SERVING && w.model?.key === key);
  }

  /** Wakes anyone waiting for a worker (a stream ended, a model was unloaded). */
  notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * An idle worker, marked LOADING for the caller. When every worker serves a model, the least
   * recently used model with no request running is unloaded; when all are busy, waits.
   */
  async acquire(signal?: AbortSignal): Promise<EngineWorker> {
    if (this.slots.length === 0) {
      throw new ConnectError("this agent runs no engine workers (--engines none)", Code.FailedPrecondition);
    }
    for (;;) {
      signal?.throwIfAborted();
      if (this.closed) throw new ConnectError("the agent is shutting down", Code.Unavailable);
      const idle = this.slots.find((w) => w.state === EngineState.IDLE);
      if (idle !== undefined) {
        idle.state = EngineState.LOADING;
        return idle;
      }
      const victim = this.lruIdleServing();
      if (victim !== undefined) {
        await this.unloadWorker(victim, "evict");
        continue;
      }
      const anyUp = this.slots.some((w) => w.state !== EngineState.STARTING && w.alive);
      if (!anyUp && this.crashes.length > 3) {
        throw new ConnectError(`engine workers keep failing: ${this.lastFailure ?? "unknown reason"}`, Code.Unavailable);
      }
      await this.waitForChange(signal);
    }
  }

  /** Returns a worker taken with acquire whose load failed: it goes back to idle (after an Unload for safety). */
  async giveBack(worker: EngineWorker): Promise<void> {
    if (!worker.alive) return;
    try {
      await worker.client.unload({}, { timeoutMs: 30_000 });
    } catch {
      // a worker that cannot even unload is replaced by the health check
    }
    if (worker.alive) worker.state = EngineState.IDLE;
    this.notify();
  }

  /** Marks a worker taken with acquire as serving `model`. */
  serve(worker: EngineWorker, model: ResidentModel): void {
    worker.model = model;
    worker.state = EngineState.SERVING;
    this.notify();
  }

  /** Unloads the engine copy of `key`; false when no engine serves it. Refused while requests run. */
  async unload(key: string, force = false): Promise<boolean> {
    const worker = this.find(key);
    if (worker === undefined) return false;
    if (worker.streams.size > 0 && !force) {
      throw new ConnectError(`${key} has ${worker.streams.size} request(s) running`, Code.FailedPrecondition);
    }
    await this.unloadWorker(worker, "unload");
    return true;
  }

  /** Unloads the least recently used idle model that holds something `holds` selects; false when none. */
  async reclaim(holds: (model: ResidentModel) => boolean): Promise<boolean> {
    const victim = this.lruIdleServing(holds);
    if (victim === undefined) return false;
    await this.unloadWorker(victim, "evict");
    return true;
  }

  private lruIdleServing(filter: (model: ResidentModel) => boolean = () => true): EngineWorker | undefined {
    let victim: EngineWorker | undefined;
    for (const w of this.slots) {
      if (w.state !== EngineState.SERVING || w.streams.size > 0 || w.model === undefined || !filter(w.model)) continue;
      if (victim === undefined || w.model.lastUsed < victim.model!.lastUsed) victim = w;
    }
    return victim;
  }

  private async unloadWorker(worker: EngineWorker, why: "unload" | "evict"): Promise<void> {
    const model = worker.model;
    worker.state = EngineState.LOADING; // nobody starts a stream on it meanwhile
    worker.model = undefined;
    try {
      await worker.client.unload({}, { timeoutMs: 60_000 });
      if (worker.alive) worker.state = EngineState.IDLE;
    } catch (err) {
      if (worker.alive) {
        this.options.launch.log(`engine ${worker.id}: Unload failed (${(err as Error).message}); replacing it`);
        worker.kill();
      }
    } finally {
      if (model !== undefined) {
        model.release();
        this.options.onModelGone?.(model, why);
      }
      this.notify();
    }
  }

  private waitForChange(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(signal!.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
    });
  }

  private spawn(slot: number): EngineWorker {
    const device = this.options.devices[slot];
    const worker = new EngineWorker(`engine-${slot}-${++this.spawned}`, device, this.options.launch);
    void worker.ready.then(
      () => this.notify(),
      (err: Error) => {
        if (!this.closed) this.options.launch.log(err.message);
      },
    );
    void worker.exited.then(() => this.onExit(slot, worker));
    return worker;
  }

  private onExit(slot: number, worker: EngineWorker): void {
    const error = worker.deathError();
    for (const stream of worker.streams) stream.abort(error);
    worker.streams.clear();
    const model = worker.model;
    worker.model = undefined;
    if (model !== undefined) {
      model.release();
      if (!this.closed) this.options.onModelGone?.(model, "failed");
    }
    if (this.closed || this.slots[slot] !== worker) return;
    this.lastFailure = `engine ${worker.id} (pid ${worker.pid}) ${worker.exitReason}`;
    this.options.launch.log(`${this.lastFailure}; starting a new one`);
    this.options.onWorkerFailed?.(worker);
    // Back off when workers keep dying (a broken install must not spin the CPU).
    const now = Date.now();
    this.crashes.push(now);
    while (this.crashes.length > 0 && now - this.crashes[0] > 60_000) this.crashes.shift();
    const wait = this.crashes.length > 3 ? Math.min(30_000, 1000 * 2 ** (this.crashes.length - 3)) : 0;
    const replace = (): void => {
      if (this.closed || this.slots[slot] !== worker) return;
      this.slots[slot] = this.spawn(slot);
      this.notify();
    };
    if (wait === 0) replace();
    else setTimeout(replace, wait).unref();
    this.notify();
  }

  private async checkHealth(): Promise<void> {
    await Promise.all(
      this.slots.map(async (worker) => {
        if (worker.state === EngineState.STARTING || !worker.alive) return;
        try {
          worker.stats = await worker.client.getStats({}, { timeoutMs: Math.max(2000, this.healthMs * 2) });
          worker.healthFailures = 0;
        } catch (err) {
          if (!worker.alive) return;
          // A worker busy loading answers late; only an idle or serving one that stops answering is replaced.
          if (worker.state === EngineState.LOADING) return;
          worker.healthFailures++;
          if (worker.healthFailures >= this.maxFailures) {
            worker.exitReason = `stopped answering health checks (${(err as Error).message})`;
            worker.kill();
          }
        }
      }),
    );
  }

  /** Stops every worker. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.healthTimer !== undefined) clearInterval(this.healthTimer);
    this.notify();
    await Promise.all(this.slots.map((w) => w.stop()));
  }
}
