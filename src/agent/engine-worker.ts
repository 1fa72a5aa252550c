// One engine worker process (python -m thaw_engine) and the agent's view of it: its state, the
// model it serves, the Infer streams running on it, and an EngineService client over its socket.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import type { Client } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CheckpointRef } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { EngineState } from "../gen/thaw/agent/v1/agent_pb.js";
import { EngineService, type GetStatsResponse } from "../gen/thaw/engine/v1/engine_service_pb.js";
import { unixClient } from "./rpc-clients.js";

/** How to start a worker. */
export interface EngineLaunch {
  /** Python interpreter (THAW_PYTHON; default /usr/bin/python3 where torch is installed). */
  python: string;
  /** PYTHONPATH entries that hold thaw_engine and the generated stubs. */
  pythonPath: string[];
  /** Folder for the workers' unix sockets. */
  socketDir: string;
  /** Extra arguments for every worker (e.g. --kv-cache-bytes, --threads). */
  args: string[];
  /** Longest a worker may take to report ready, in milliseconds. */
  startTimeoutMs: number;
  log: (line: string) => void;
}

/** A model served by a worker. */
export interface ResidentModel {
  key: string;
  ref: CheckpointRef;
  bytes: number;
  loadedAt: number;
  lastUsed: number;
  /** Gives back what the engine holds of other tiers (the DRAM region a CPU engine maps). */
  release: () => void;
}

export class EngineWorker {
  state = EngineState.STARTING;
  model: ResidentModel | undefined;
  /** Infer streams running on this worker; aborted with the reason when the worker dies. */
  readonly streams = new Set<AbortController>();
  stats: GetStatsResponse | undefined;
  healthFailures = 0;
  readonly client: Client<typeof EngineService>;
  readonly socket: string;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  exitReason: string | undefined;
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
        this.exitReason ??= signal !== null ? `killed by ${signal}` : `exited with status ${code}`;
        this.state = EngineState.FAILED;
        this.closeClient();
        resolve();
      });
      this.child.once("error", (err) => {
        this.exitReason = `could not start ${launch.python}: ${err.message}`;
        this.state = EngineState.FAILED;
        resolve();
      });
    });
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`engine ${id} did not report ready within ${launch.startTimeoutMs} ms`));
        this.kill();
      }, launch.startTimeoutMs);
      createInterface({ input: this.child.stdout! }).on("line", (line) => {
        try {
          const event = JSON.parse(line) as { event?: string };
          if (event.event === "ready") {
            clearTimeout(timer);
            if (this.state === EngineState.STARTING) this.state = EngineState.IDLE;
            resolve();
          }
        } catch {
          launch.log(`[${id}] ${line}`);
        }
      });
      void this.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`engine ${id} ${this.exitReason} before it was ready: ${this.stderrTail.slice(-3).join(" | ")}`));
      });
    });
    this.ready.catch(() => {});
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get alive(): boolean {
    return this.state !== EngineState.FAILED;
  }

  /** The error an Infer stream on this worker ends with once it has died. */
  deathError(): ConnectError {
    return new ConnectError(`engine worker ${this.id} (pid ${this.pid}) ${this.exitReason ?? "failed"}; the request did not finish`, Code.Unavailable);
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    this.exitReason ??= "stopped by the agent";
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}
