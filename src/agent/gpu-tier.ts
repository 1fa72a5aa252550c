// The GPU tier (cache level 0): the models resident in the engine workers, one worker per device,
// each device a byte budget. A load first reserves room on a device (room-plan.ts decides where and
// what leaves): idle models are evicted least recently used first, down to DRAM (engine Unload; the
// DRAM copy stays); a model with a request running is never evicted; when busy models leave no room
// the load waits for some (as long as its caller waits); a model no device could ever hold fails at
// once. Room decisions and evictions run one at a time; copies into reserved room run in parallel,
// and the other models of a device keep serving throughout.
import { Code, ConnectError } from "@connectrpc/connect";
import type { CheckpointRef } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { EngineSupervisor, type SupervisorOptions } from "./engine-supervisor.js";
import type { EngineWorker } from "./engine-worker.js";
import { ResidentModel } from "./resident-model.js";
import { type DeviceView, type RoomNeed, maxModelBytes, planRoom, usedBytes } from "./room-plan.js";

export type GoneWhy = "unload" | "evict" | "failed";

export interface GpuTierOptions extends Pick<SupervisorOptions, "devices" | "launch" | "healthIntervalMs" | "healthFailures"> {
  /** Budget of every device in bytes (--gpu-bytes); default: what a CUDA worker reports, cpuBudgetBytes on CPU. */
  gpuBytes?: number;
  /** Budget of a CPU engine when gpuBytes is not given (its weights live in the pinned pool). */
  cpuBudgetBytes: number;
  /** KV floor of each model on a device (LoadWeightsRequest.kv_cache_bytes), held in the budget. */
  floorBytes: (device: string) => number;
  /** Each worker's shared KV pool as passed at spawn (--kv-pool-bytes); default: what the worker reports. */
  kvPoolBytes?: number;
  /** A model became resident on a device. */
  onResident?: (model: ResidentModel, device: string) => void;
  /** A model left its device: unloaded, evicted for another, or lost with its worker. */
  onGone?: (model: ResidentModel, why: GoneWhy, device: string) => void;
}

/** Where a model is resident. */
export interface Residence {
  worker: EngineWorker;
  model: ResidentModel;
}

/** Room held on a device for a load in progress. */
export interface Reservation {
  readonly key: string;
  readonly worker: EngineWorker;
  readonly weightBytes: number;
  /** KV floor to ask the worker for. */
  readonly floorBytes: number;
  /** Models evicted (down to DRAM) to make the room. */
  readonly evicted: readonly CheckpointRef[];
  /** The load finished: the model becomes resident on the worker. */
  commit(ref: CheckpointRef, release: () => void): ResidentModel;
  /** The load failed: the room is given back. */
  cancel(): void;
}

/** One device as the tier sees it (for status). */
export interface DeviceState {
  worker: EngineWorker;
  budgetBytes: number | undefined;
  usedBytes: number;
  floorBytes: number;
  kvPoolBytes: number | undefined;
  residents: ResidentModel[];
}

interface Held {
  key: string;
  worker: EngineWorker;
  bytes: number;
  floorBytes: number;
}

export class GpuTier {
  readonly engines: EngineSupervisor;
  private readonly held = new Map<string, Held>();
  private waiters: (() => void)[] = [];
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: GpuTierOptions) {
    this.engines = new EngineSupervisor({
      devices: options.devices,
      launch: options.launch,
      healthIntervalMs: options.healthIntervalMs,
      healthFailures: options.healthFailures,
      onWorkerLost: (worker, models) => {
        for (const model of models) this.options.onGone?.(model, "failed", worker.device);
        this.notify();
      },
      onChange: () => this.notify(),
    });
  }

  /** Where `key` is resident and serving (not leaving). */
  find(key: string): Residence | undefined {
    for (const worker of this.engines.workers()) {
      const model = worker.model(key);
      if (model !== undefined && !model.leaving && worker.alive) return { worker, model };
    }
    return undefined;
  }

  /** A load of `key` holds room (it is loading onto a device). */
  loading(key: string): boolean {
    return this.held.has(key);
  }

  /** Wakes loads waiting for room (a stream ended, a model left, a worker came up). */
  notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** The budget of a worker's device; undefined until a CUDA worker has reported it. */
  budgetOf(worker: EngineWorker): number | undefined {
    if (this.options.gpuBytes !== undefined) return this.options.gpuBytes;
    if (worker.device === "cpu") return this.options.cpuBudgetBytes;
    const stats = worker.stats;
    if (stats === undefined) return undefined;
    if (stats.weightsBudgetBytes > 0n) return Number(stats.weightsBudgetBytes);
    // A worker that does not report a weights budget: most of its memory.
    return stats.deviceMemoryTotal > 0n ? Math.floor(Number(stats.deviceMemoryTotal) * 0.8) : undefined;
  }

  kvPoolOf(worker: EngineWorker): number | undefined {
    if (this.options.kvPoolBytes !== undefined && this.options.kvPoolBytes > 0) return this.options.kvPoolBytes;
    const reported = Number(worker.stats?.kvPoolBytes ?? 0n);
    return reported > 0 ? reported : undefined;
  }

  floorBytes(device: string): number {
    return this.options.floorBytes(device);
  }

  /** Every device with its budget and resident models. */
  devices(): DeviceState[] {
    return this.views().map((view, slot) => {
      const worker = this.engines.workers()[slot];
      return {
        worker,
        budgetBytes: view.budgetBytes,
        usedBytes: usedBytes(view),
        floorBytes: this.floorBytes(worker.device),
        kvPoolBytes: view.kvPoolBytes,
        residents: worker.models(),
      };
    });
  }

  /** The largest model (weights) some device of this agent could hold; undefined while a budget is unknown. */
  maxModelBytes(): number | undefined {
    let max = 0;
    for (const worker of this.engines.workers()) {
      const budget = this.budgetOf(worker);
      if (budget === undefined) return undefined;
      max = Math.max(max, maxModelBytes(budget, this.floorBytes(worker.device)));
    }
    return max;
  }

  /** FAILED_PRECONDITION when no device could ever hold `weightBytes` (checked before anything moves). */
  checkFits(key: string, weightBytes: number): void {
    const plan = planRoom(this.views(), this.need(key, weightBytes));
    if (plan.kind === "never") throw new ConnectError(plan.reason, Code.FailedPrecondition);
  }

  /**
   * Room for `key` on a device: the model's residence when it is already resident, else a
   * reservation (after evicting idle models if needed). Waits while busy models leave no room,
   * until `signal` aborts.
   */
  async reserve(key: string, weightBytes: number, signal?: AbortSignal): Promise<Residence | Reservation> {
    const evicted: CheckpointRef[] = [];
    let waited = false;
    for (;;) {
      signal?.throwIfAborted();
      const step = await this.exclusive(async (): Promise<Residence | Reservation | { wait: Promise<void> } | "again"> => {
        const resident = this.find(key);
        if (resident !== undefined) return resident;
        // Another load of the same model holds room (an abandoned load still copying): wait for it.
        if (this.held.has(key)) return { wait: this.nextChange() };
        if (this.engines.closing) throw new ConnectError("the agent is shutting down", Code.Unavailable);
        const plan = planRoom(this.views(), this.need(key, weightBytes));
        switch (plan.kind) {
          case "never":
            throw new ConnectError(plan.reason, Code.FailedPrecondition);
          case "fits":
            return this.hold(key, weightBytes, this.engines.workers()[plan.slot], evicted);
          case "evict": {
            const worker = this.engines.workers()[plan.slot];
            for (const victim of plan.victims) {
              const model = worker.model(victim)!;
              evicted.push(model.ref);
              await this.drop(worker, model, "evict");
            }
            return "again";
          }
          case "wait": {
            const failing = this.engines.keepsFailing();
            if (failing !== undefined) throw new ConnectError(failing, Code.Unavailable);
            if (!waited) this.options.launch.log(`${key} waits for room: ${plan.reason}`);
            waited = true;
            return { wait: this.nextChange() };
          }
        }
      });
      if (step === "again") continue;
      if ("wait" in step) {
        await abortable(step.wait, signal);
        continue;
      }
      return step;
    }
  }

  /** Unloads `key` from its device (its DRAM copy stays); false when it is not resident. Refused while requests run. */
  unload(key: string): Promise<boolean> {
    return this.exclusive(async () => {
      const resident = this.find(key);
      if (resident === undefined) return false;
      if (resident.model.running > 0) {
        throw new ConnectError(`${key} has ${resident.model.running} request(s) running`, Code.FailedPrecondition);
      }
      await this.drop(resident.worker, resident.model, "unload");
      return true;
    });
  }

  /** Evicts the least recently used idle model that `select` accepts; false when there is none. */
  evictIdle(select: (model: ResidentModel) => boolean): Promise<boolean> {
    return this.exclusive(async () => {
      let victim: Residence | undefined;
      for (const worker of this.engines.workers()) {
        for (const model of worker.models()) {
          if (model.leaving || model.busy || !select(model)) continue;
          if (victim === undefined || model.lastUsed < victim.model.lastUsed) victim = { worker, model };
        }
      }
      if (victim === undefined) return false;
      await this.drop(victim.worker, victim.model, "evict");
      return true;
    });
  }

  private need(key: string, weightBytes: number): RoomNeed {
    // Floors differ by device kind only; a model is placed by the floor of the devices it could go to.
    const devices = this.engines.devices;
    const floor = devices.length > 0 ? Math.max(...devices.map((d) => this.floorBytes(d))) : 0;
    return { key, weightBytes, floorBytes: floor };
  }

  private views(): DeviceView[] {
    return this.engines.workers().map((worker, slot) => {
      let reservedBytes = 0;
      let reservedFloorBytes = 0;
      for (const h of this.held.values()) {
        if (h.worker !== worker) continue;
        reservedBytes += h.bytes;
        reservedFloorBytes += h.floorBytes;
      }
      return {
        slot,
        device: worker.device,
        budgetBytes: this.budgetOf(worker),
        up: worker.up,
        residents: worker.models().map((m) => ({
          key: m.key,
          bytes: m.bytes,
          floorBytes: m.floorBytes,
          running: m.running + (m.useAnnounced ? 1 : 0),
          lastUsed: m.lastUsed,
          leaving: m.leaving,
        })),
        reservedBytes,
        reservedFloorBytes,
        kvPoolBytes: this.kvPoolOf(worker),
      };
    });
  }

  private hold(key: string, weightBytes: number, worker: EngineWorker, evicted: CheckpointRef[]): Reservation {
    const floorBytes = this.floorBytes(worker.device);
    const held: Held = { key, worker, bytes: weightBytes + floorBytes, floorBytes };
    this.held.set(key, held);
    const endLoad = worker.beginLoad();
    const end = (): void => {
      endLoad();
      if (this.held.get(key) === held) this.held.delete(key);
      this.notify();
    };
    return {
      key,
      worker,
      weightBytes,
      floorBytes,
      evicted,
      commit: (ref, release) => {
        end();
        if (!worker.alive) {
          release();
          throw worker.deathError();
        }
        const model = new ResidentModel({ key, ref, weightBytes, floorBytes, release });
        worker.add(model);
        this.options.onResident?.(model, worker.device);
        return model;
      },
      cancel: end,
    };
  }

  /** Unloads one model from its worker; a worker that cannot unload is replaced. */
  private async drop(worker: EngineWorker, model: ResidentModel, why: GoneWhy): Promise<void> {
    model.markLeaving();
    try {
      await worker.client.unload({ model: model.key }, { timeoutMs: 60_000 });
    } catch (err) {
      if (worker.alive) {
        this.options.launch.log(`engine ${worker.id}: Unload of ${model.key} failed (${(err as Error).message}); replacing it`);
        worker.kill("SIGKILL", `could not unload ${model.key}`);
      }
    }
    // A worker that died meanwhile has reported its models lost itself.
    if (worker.remove(model.key) === model) {
      model.close();
      this.options.onGone?.(model, why, worker.device);
    }
    this.notify();
  }

  /** Resolves at the next change; taken inside a room decision so that no wake-up is missed. */
  private nextChange(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Runs room decisions and evictions one at a time. */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work);
    this.tail = run.catch(() => {});
    return run;
  }
}

function abortable(wait: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return wait;
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    void wait.then(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
  });
}
