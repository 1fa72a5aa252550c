// Engine worker processes, one per device ("cuda:0", …, or "cpu"), each started at agent start so
// that a cold start finds Python imported and the device up. The supervisor only keeps processes
// alive: it health-checks every worker with GetStats and replaces one that dies or stops answering
// (its models are reported lost and their streams end with UNAVAILABLE), backing off when workers
// keep dying. Which models live where is the GPU tier's business.
import { mkdir } from "node:fs/promises";
import { type EngineLaunch, EngineWorker } from "./engine-worker.js";
import type { ResidentModel } from "./resident-model.js";

export interface SupervisorOptions {
  /** One worker per entry: "cpu", "cuda:0", ... */
  devices: string[];
  launch: EngineLaunch;
  /** GetStats every this many milliseconds (default 1000). */
  healthIntervalMs?: number;
  /** A worker that misses this many health checks in a row is killed and replaced (default 3). */
  healthFailures?: number;
  /** A worker died: these models were resident in it and are gone (their streams have ended). */
  onWorkerLost?: (worker: EngineWorker, models: ResidentModel[]) => void;
  /** A worker became ready, died or was replaced (room on its device may have changed). */
  onChange?: () => void;
}

export class EngineSupervisor {
  private readonly slots: EngineWorker[] = [];
  private readonly healthMs: number;
  private readonly maxFailures: number;
  private closed = false;
  private healthTimer: NodeJS.Timeout | undefined;
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

  /** Devices, one per worker slot. */
  get devices(): readonly string[] {
    return this.options.devices;
  }

  /** The current worker of every slot (a replaced one is swapped in place). */
  workers(): readonly EngineWorker[] {
    return this.slots;
  }

  get closing(): boolean {
    return this.closed;
  }

  /** Why workers cannot be used: every one is down and they keep dying; undefined otherwise. */
  keepsFailing(): string | undefined {
    const anyUp = this.slots.some((w) => w.up);
    return !anyUp && this.crashes.length > 3 ? `engine workers keep failing: ${this.lastFailure ?? "unknown reason"}` : undefined;
  }

  private spawn(slot: number): EngineWorker {
    const device = this.options.devices[slot];
    const worker = new EngineWorker(`engine-${slot}-${++this.spawned}`, device, this.options.launch);
    void worker.ready.then(
      () => this.options.onChange?.(),
      (err: Error) => {
        if (!this.closed) this.options.launch.log(err.message);
      },
    );
    void worker.exited.then(() => this.onExit(slot, worker));
    return worker;
  }

  private onExit(slot: number, worker: EngineWorker): void {
    const lost = worker.dropAll();
    if (this.closed) return;
    this.options.onWorkerLost?.(worker, lost);
    if (this.slots[slot] !== worker) return;
    this.lastFailure = `engine ${worker.id} (pid ${worker.pid}) ${worker.exitReason}`;
    this.options.launch.log(`${this.lastFailure}; starting a new one`);
    // Back off when workers keep dying (a broken install must not spin the CPU).
    const now = Date.now();
    this.crashes.push(now);
    while (this.crashes.length > 0 && now - this.crashes[0] > 60_000) this.crashes.shift();
    const wait = this.crashes.length > 3 ? Math.min(30_000, 1000 * 2 ** (this.crashes.length - 3)) : 0;
    const replace = (): void => {
      if (this.closed || this.slots[slot] !== worker) return;
      this.slots[slot] = this.spawn(slot);
      this.options.onChange?.();
    };
    if (wait === 0) replace();
    else setTimeout(replace, wait).unref();
    this.options.onChange?.();
  }

  private async checkHealth(): Promise<void> {
    await Promise.all(
      this.slots.map(async (worker) => {
        if (!worker.up) return;
        try {
          const first = worker.stats === undefined;
          worker.recordStats(await worker.client.getStats({}, { timeoutMs: Math.max(2000, this.healthMs * 2) }));
          if (first) this.options.onChange?.(); // its budget is known now
        } catch (err) {
          if (!worker.alive) return;
          // A worker busy loading answers late; only one that is not loading and stops answering is replaced.
          if (worker.loading) return;
          if (worker.missedCheck() >= this.maxFailures) {
            worker.kill("SIGKILL", `stopped answering health checks (${(err as Error).message})`);
          }
        }
      }),
    );
  }

  /** Stops every worker. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.healthTimer !== undefined) clearInterval(this.healthTimer);
    this.options.onChange?.();
    await Promise.all(this.slots.map((w) => w.stop()));
  }
}
