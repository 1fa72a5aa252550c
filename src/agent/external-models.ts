// Models served by external OpenAI-compatible runtimes (`--external`, or LoadModel's launch_command
// when the operator allows it), by model key. LoadModel starts a model's runtime; Infer forwards to
// a running one; UnloadModel stops it.
import { Code, ConnectError } from "@connectrpc/connect";
import type { EngineInfo } from "../gen/thaw/agent/v1/agent_pb.js";
import { Tier } from "../gen/thaw/agent/v1/agent_pb.js";
import type { CheckpointRef } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { modelKey } from "../checkpoint/model-key.js";
import type { AgentMetrics } from "./agent-metrics.js";
import { type ExternalModelConfig, ExternalRuntime } from "./external-runtime.js";
import type { LoadResult } from "./model-loader.js";

export interface ExternalModelsOptions {
  /** LoadModel may name a command to start (off unless the operator allows it). */
  allowLaunch: boolean;
  metrics: AgentMetrics;
  log: (line: string) => void;
}

export class ExternalModels {
  private readonly runtimes = new Map<string, ExternalRuntime>();

  constructor(
    configs: readonly ExternalModelConfig[],
    private readonly options: ExternalModelsOptions,
  ) {
    for (const config of configs) this.runtimes.set(modelKey(config.modelId, config.revision), new ExternalRuntime(config, options.log));
  }

  has(key: string): boolean {
    return this.runtimes.has(key);
  }

  keys(): string[] {
    return [...this.runtimes.keys()];
  }

  /** The runtime serving `key` when it is running. */
  running(key: string): ExternalRuntime | undefined {
    const runtime = this.runtimes.get(key);
    return runtime?.running ? runtime : undefined;
  }

  /** GPU while its runtime runs, REMOTE otherwise; undefined for a model no runtime serves. */
  tierOf(key: string): Tier | undefined {
    const runtime = this.runtimes.get(key);
    if (runtime === undefined) return undefined;
    return runtime.running ? Tier.GPU : Tier.REMOTE;
  }

  infos(): EngineInfo[] {
    return [...this.runtimes.values()].map((r) => r.info());
  }

  /** Serves `key` with a runtime started with `command` (the first time it is named). */
  register(ref: CheckpointRef, key: string, command: readonly string[]): void {
    if (!this.options.allowLaunch) {
      // The caller's (the registration's) precondition, not a credential problem: a 400 that says what to do.
      throw new ConnectError(
        `${key} names a launch command, and this agent starts launch commands only when it runs with --allow-launch ` +
          "(or serve the model on it with --external MODEL=COMMAND, or register it without a launch command)",
        Code.FailedPrecondition,
      );
    }
    const existing = this.runtimes.get(key);
    if (existing !== undefined) {
      if (existing.config.command.join("\0") !== command.join("\0")) {
        throw new ConnectError(`${key} already runs with another launch command; unload it first`, Code.FailedPrecondition);
      }
      return;
    }
    this.runtimes.set(key, new ExternalRuntime({ modelId: ref.modelId, revision: ref.revision, command: [...command] }, this.options.log));
  }

  /** Starts the runtime of `key` (shared with a start in progress) and waits for its health. */
  async load(key: string): Promise<LoadResult> {
    const runtime = this.runtimes.get(key);
    if (runtime === undefined) throw new ConnectError(`no external runtime serves ${key}`, Code.NotFound);
    this.options.metrics.lookup(runtime.running);
    if (runtime.running) return { key, bytes: 0, engineId: runtime.id, device: "external", startTier: Tier.GPU, timings: [], evicted: [], seconds: 0 };
    const started = performance.now();
    await runtime.start();
    const seconds = (performance.now() - started) / 1000;
    this.options.metrics.modelLoadSeconds.observe({ tier: "remote" }, seconds);
    this.options.metrics.coldStarts.inc({ tier: "remote" });
    return {
      key,
      bytes: 0,
      engineId: runtime.id,
      device: "external",
      startTier: Tier.REMOTE,
      timings: [{ tier: Tier.REMOTE, bytes: 0, seconds }],
      evicted: [],
      seconds,
    };
  }

  /** Stops the runtime of `key`; false when it was not running. */
  stop(key: string): Promise<boolean> {
    return this.runtimes.get(key)?.stop() ?? Promise.resolve(false);
  }

  async close(): Promise<void> {
    for (const runtime of this.runtimes.values()) await runtime.stop();
  }
}
