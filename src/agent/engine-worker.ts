// One engine worker process (python -m thaw_engine) and the agent's view of it: whether it is up,
// the models resident in it, and an EngineService client over its socket. One worker per device
// hosts many models; loads in progress belong to the GPU tier, which counts them here only so that
// a worker busy loading is not mistaken for a hung one.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import type { Client } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { EngineState } from "../gen/thaw/agent/v1/agent_pb.js";
import type { ModelStats } from "../gen/thaw/engine/v1/engine_pb.js";
import { EngineService, type GetStatsResponse } from "../gen/thaw/engine/v1/engine_service_pb.js";
import type { ResidentModel } from "./resident-model.js";
import { unixClient } from "./rpc-clients.js";

/** How to start a worker. */
export interface EngineLaunch {
  /** Python interpreter (THAW_PYTHON; default /usr/bin/python3 where torch is installed). */
  python: string;
  /** PYTHONPATH entries that hold thaw_engine and the generated stubs. */
  pythonPath: string[];
  /** Folder for the workers' unix sockets. */
  socketDir: string;
  /** Extra arguments for every worker (e.g. --kv-pool-bytes, --threads). */
  args: string[];
  /** Longest a worker may take to report ready, in milliseconds. */
  startTimeoutMs: number;
  log: (line: string) => void;
}

export class EngineWorker {
  readonly client: Client<typeof EngineService>;
  readonly socket: string;
  /** Resolves once the worker is up and answered its first GetStats (its budget is known). */
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  private started = false;
  private failed = false;
  private exitWhy: string | undefined;
  private readonly resident = new Map<string, ResidentModel>();
  private loadsRunning = 0;
  private lastStats: GetStatsResponse | undefined;
  private missedChecks = 0;
  private readonly child: ChildProcess;
  private readonly closeClient: () => void;
  private readonly stderrTail: string[] = [];

  constructor(
    readonly id: string,
    readonly device: string,
    launch: EngineLaunch,
  ) {
    this.socket = path.join(launch.socketDir, `${id}.sock`);
    const env = {
      ...process.env,
      PYTHONPATH: [...launch.pythonPath, process.env.PYTHONPATH].filter((p) => p).join(path.delimiter),
      PYTHONUNBUFFERED: "1",
    };
    this.child = spawn(launch.python, ["-m", "thaw_engine", "--socket", this.socket, "--device", device, ...launch.args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const owned = unixClient(EngineService, this.socket);
    this.client = owned.client;
    this.closeClient = owned.close;

    createInterface({ input: this.child.stderr! }).on("line", (line) => {
      this.stderrTail.push(line);
      if (this.stderrTail.length > 20) this.stderrTail.shift();
      launch.log(`[${id}] ${line}`);
    });
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exitWhy ??= signal !== null ? `killed by ${signal}` : `exited with status ${code}`;
        this.failed = true;
        this.closeClient();
        resolve();
      });
      this.child.once("error", (err) => {
        this.exitWhy = `could not start ${launch.python}: ${err.message}`;
        this.failed = true;
        resolve();
      });
    });
    const announced = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`engine ${id} did not report ready within ${launch.startTimeoutMs} ms`));
        this.kill();
      }, launch.startTimeoutMs);
      createInterface({ input: this.child.stdout! }).on("line", (line) => {
        try {
          const event = JSON.parse(line) as { event?: string };
          if (event.event === "ready") {
            clearTimeout(timer);
            resolve();
          }
        } catch {
          launch.log(`[${id}] ${line}`);
        }
      });
      void this.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`engine ${id} ${this.exitWhy} before it was ready: ${this.stderrTail.slice(-3).join(" | ")}`));
      });
    });
    this.ready = announced.then(async () => {
      // The first figures (device memory, weights budget, KV pool) before anyone places a model here.
      try {
        this.recordStats(await this.client.getStats({}, { timeoutMs: 30_000 }));
      } catch (err) {
        if (this.failed) throw new Error(`engine ${id} ${this.exitWhy} before it was ready`);
        launch.log(`engine ${id}: first GetStats failed (${(err as Error).message})`);
      }
      if (!this.failed) this.started = true;
    });
    this.ready.catch(() => {});
  }

  /** STARTING until ready, then IDLE (no model) or SERVING (one or more), FAILED once it exited. */
  get state(): EngineState {
    if (this.failed) return EngineState.FAILED;
    if (!this.started) return EngineState.STARTING;
    return this.resident.size > 0 ? EngineState.SERVING : EngineState.IDLE;
  }

  /** Up and answering: models may be placed on it. */
  get up(): boolean {
    return this.started && !this.failed;
  }

  get alive(): boolean {
    return !this.failed;
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get exitReason(): string | undefined {
    return this.exitWhy;
  }

  /** The latest GetStats answer (health checks refresh it). */
  get stats(): GetStatsResponse | undefined {
    return this.lastStats;
  }

  /** The worker's own figures for one of its models. */
  modelStats(key: string): ModelStats | undefined {
    return this.lastStats?.models.find((m) => m.model === key);
  }

  recordStats(stats: GetStatsResponse): void {
    this.lastStats = stats;
    this.missedChecks = 0;
  }

  /** Counts a health check it did not answer; returns how many in a row. */
  missedCheck(): number {
    return ++this.missedChecks;
  }

  /** A load onto this worker is running (it may answer health checks late meanwhile). */
  get loading(): boolean {
    return this.loadsRunning > 0;
  }

  beginLoad(): () => void {
    this.loadsRunning++;
    let done = false;
    return () => {
      if (!done) this.loadsRunning--;
      done = true;
    };
  }

  models(): ResidentModel[] {
    return [...this.resident.values()];
  }

  model(key: string): ResidentModel | undefined {
    return this.resident.get(key);
  }

  /** Records a model its LoadWeights made ready. */
  add(model: ResidentModel): void {
    if (this.failed) throw this.deathError();
    this.resident.set(model.key, model);
  }

  /** Forgets a model (after its Unload); the model if it was here. */
  remove(key: string): ResidentModel | undefined {
    const model = this.resident.get(key);
    this.resident.delete(key);
    return model;
  }

  /** After the process exited: every model is gone, its streams end with the worker's error. */
  dropAll(): ResidentModel[] {
    const lost = this.models();
    this.resident.clear();
    const error = this.deathError();
    for (const model of lost) model.close(error);
    return lost;
  }

  /** The error an Infer stream on this worker ends with once it has died. */
  deathError(): ConnectError {
    return new ConnectError(`engine worker ${this.id} (pid ${this.pid}) ${this.exitWhy ?? "failed"}; the request did not finish`, Code.Unavailable);
  }

  /** Kills the process, recording why (the first reason given wins). */
  kill(signal: NodeJS.Signals = "SIGKILL", why?: string): void {
    if (why !== undefined) this.exitWhy ??= why;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    this.exitWhy ??= "stopped by the agent";
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}
