// The scheduler: the public face the edge and the SchedulerService RPCs call, and the one place
// its parts are composed. Each part has one job:
//   Residency      what each agent holds: heartbeats plus what was learnt since (loads, unloads, evictions)
//   Conversions    convert once; checkpoint sizes and chunk lists
//   ModelLoads     cold start (spread chunk downloads, LoadModel) and unloads, with progress timeouts
//   Placer         placement scores (placement.ts, pure) and admission slots (admission.ts)
//   RequestRunner  a request's choices, their Infers, reloads after "not loaded", retries elsewhere
//   KeepAlive      unloads models idle past their keep-alive
//   AgentProbes    suspect agents and the probes that clear them
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Tier, type AgentStatus } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { ModelInfoSchema, type ModelInfo, type ModelSpec } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";
import type { ChatCompletionRequest, CompletionRequest } from "../../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import type { OrchestratorMetrics } from "../metrics.js";
import type { Admission } from "./admission.js";
import { AgentProbes } from "./agent-probes.js";
import type { AgentRecord, AgentRegistry } from "./agent-registry.js";
import { Conversions } from "./conversions.js";
import { KeepAlive } from "./keep-alive.js";
import type { AgentConnector, ConverterLink } from "./links.js";
import { ModelLoads } from "./model-loads.js";
import type { ModelRegistry, RegisteredModel } from "./model-registry.js";
import { refOf, tierName } from "./model-refs.js";
import type { PlacementPolicy, PlacementWeights, Score } from "./placement.js";
import { Placer } from "./placer.js";
import { RequestRunner, type ChoiceOutput, type InferInit } from "./request-runner.js";
import { chatPlan, completionPlan } from "./requests.js";
import { Residency } from "./residency.js";
import type { Timers } from "./timers.js";

export { refOf, tierName };
export type { ChoiceOutput };

export interface SchedulerOptions {
  weights: PlacementWeights;
  /** Interval agents are asked to heartbeat at, ms. */
  heartbeatIntervalMs: number;
  /** Default keep-alive of a model idle on a GPU, seconds (a registration may set its own). */
  keepAliveSeconds: number;
  /** Attempts per choice when it fails before its first token (each on another agent). */
  maxAttempts: number;
  /** How long a request waits for an agent to appear when none is usable, ms. */
  agentWaitMs: number;
  /** Period of the keep-alive sweep, the suspect probes and the queue's retries, ms. */
  sweepIntervalMs: number;
  /** LoadModel or DownloadChunks silent this long is aborted and its agent made suspect, ms. */
  progressTimeoutMs: number;
  /** How long an agent whose call hung stays suspect at least, ms (default: progressTimeoutMs). */
  suspectHoldMs?: number;
}

export const DEFAULT_SCHEDULER_OPTIONS: Omit<SchedulerOptions, "weights"> = {
  heartbeatIntervalMs: 1000,
  keepAliveSeconds: 300,
  maxAttempts: 3,
  agentWaitMs: 30_000,
  sweepIntervalMs: 1000,
  progressTimeoutMs: 60_000,
};

export interface SchedulerDeps {
  agents: AgentRegistry;
  models: ModelRegistry;
  admission: Admission;
  metrics: OrchestratorMetrics;
  connector: AgentConnector;
  /** Absent: models are expected to be in the store already (agents fetch them themselves). */
  converter?: ConverterLink;
  now?: () => number;
  /** Node's timers unless given: with `now`, a simulation runs the scheduler in virtual time (bench/sim). */
  timers?: Timers;
  /** thaw's placement cost unless given (bench/sim compares others on the same workload). */
  placementPolicy?: PlacementPolicy;
  log?: (message: string) => void;
}

export class Scheduler {
  readonly options: SchedulerOptions;
  private readonly residency: Residency;
  private readonly conversions: Conversions;
  private readonly probes: AgentProbes;
  private readonly loads: ModelLoads;
  private readonly placer: Placer;
  private readonly runner: RequestRunner;
  private readonly keepAlive: KeepAlive;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private lastSweepMs: number | undefined;
  /** Since when the sweeps have kept time (see sweep()). */
  private steadySinceMs: number | undefined;

  constructor(
    private readonly deps: SchedulerDeps,
    options: Partial<SchedulerOptions> & { weights: PlacementWeights },
  ) {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.options = { ...DEFAULT_SCHEDULER_OPTIONS, ...given, weights: options.weights };
    const o = this.options;
    const now = deps.now ?? Date.now;
    this.now = now;
    const log = deps.log ?? (() => {});
    const { agents, models, admission, metrics, connector } = deps;
    this.residency = new Residency({ heartbeatIntervalMs: o.heartbeatIntervalMs, now });
    this.conversions = new Conversions({ models, metrics, converter: deps.converter, log });
    this.probes = new AgentProbes({
      agents,
      connector,
      heartbeat: (s) => this.heartbeat(s),
      probeTimeoutMs: Math.max(500, o.heartbeatIntervalMs),
      verifyRetryMs: Math.max(1000, 2 * o.heartbeatIntervalMs),
      now,
      log,
    });
    this.loads = new ModelLoads({
      agents,
      residency: this.residency,
      conversions: this.conversions,
      admission,
      connector,
      probes: this.probes,
      metrics,
      now,
      log,
      progressTimeoutMs: o.progressTimeoutMs,
      suspectHoldMs: o.suspectHoldMs ?? o.progressTimeoutMs,
      timers: deps.timers,
    });
    this.placer = new Placer({ agents, residency: this.residency, admission, conversions: this.conversions, connector, metrics, weights: o.weights, agentWaitMs: o.agentWaitMs, now, timers: deps.timers, policy: deps.placementPolicy });
    this.runner = new RequestRunner({
      agents,
      residency: this.residency,
      admission,
      conversions: this.conversions,
      placer: this.placer,
      loads: this.loads,
      probes: this.probes,
      metrics,
      maxAttempts: o.maxAttempts,
      now,
      log,
    });
    this.keepAlive = new KeepAlive({ agents, models, residency: this.residency, loads: this.loads, keepAliveSeconds: o.keepAliveSeconds, now });
    agents.onUsable(() => admission.retryWaiting());
    metrics.setSnapshot(() => ({
      queued: admission.queued,
      agents: agents.all().map((a) => ({
        id: a.id,
        inflight: admission.inflight(a.id),
        reportedQueue: a.status.queueLength,
        live: agents.isUsable(a),
        tiers: a.status.tiers.map((t) => ({
          tier: tierName(t.tier),
          freeBytes: Number(t.freeBytes),
          totalBytes: Number(t.totalBytes),
          bandwidth: t.bandwidthBytesPerSecond,
        })),
      })),
    }));
  }

  /** Starts the periodic sweep: keep-alive unloads, suspect probes, queue retries. */
  start(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep(), this.options.sweepIntervalMs);
    this.sweeper.unref();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /**
   * One pass of the periodic work. Agents are judged silent only once the sweeps have kept time for
   * a whole expiry period: a stall of this process (a long synchronous task) also stalls the
   * heartbeats it receives, and must not end the streams of agents that kept beating.
   */
  sweep(): void {
    const now = this.now();
    const late = this.lastSweepMs !== undefined && now - this.lastSweepMs > 2 * this.options.sweepIntervalMs;
    this.lastSweepMs = now;
    if (late || this.steadySinceMs === undefined) this.steadySinceMs = now;
    this.keepAlive.sweep();
    if (now - this.steadySinceMs >= this.deps.agents.expiryMs) this.runner.endSilentAgents();
    this.probes.probeSuspects();
    // Time changes what placement sees (agents expire, idle times grow): waiting requests look again.
    if (this.deps.admission.queued > 0) this.deps.admission.retryWaiting();
  }

  // ─── agents and models ─────────────────────────────────────────────────────────────────────────

  /**
   * Records an agent's status. The heartbeat that introduces an agent (or a new address of one) is
   * answered once the agent proved itself there; until then it is listed but not placed on, and
   * the heartbeat fails with why (PERMISSION_DENIED), which the agent logs.
   */
  async heartbeat(status: AgentStatus): Promise<{ intervalMs: number }> {
    const record = this.deps.agents.heartbeat(status);
    this.residency.heartbeat(record);
    await this.probes.verify(record);
    return { intervalMs: this.options.heartbeatIntervalMs };
  }

  async registerModel(spec: ModelSpec): Promise<ModelInfo> {
    const model = await this.deps.models.register(spec);
    this.conversions.forget(model);
    return this.modelInfo(model);
  }

  async unregisterModel(id: string): Promise<void> {
    if (!(await this.deps.models.unregister(id))) {
      throw new ConnectError(`The model \`${id}\` does not exist.`, Code.NotFound);
    }
  }

  getModel(id: string): ModelInfo | undefined {
    const model = this.deps.models.get(id);
    return model && this.modelInfo(model);
  }

  listModels(): ModelInfo[] {
    return this.deps.models.list().map((m) => this.modelInfo(m));
  }

  listAgents(): { status: AgentStatus; lastHeartbeatUnixMs: bigint; expired: boolean }[] {
    return this.deps.agents.all().map((a) => ({
      status: a.status,
      lastHeartbeatUnixMs: BigInt(a.lastHeartbeatMs),
      expired: !this.deps.agents.isLive(a),
    }));
  }

  /** True once at least one agent can be placed on. */
  ready(): boolean {
    return this.deps.agents.usable().length > 0;
  }

  private modelInfo(model: RegisteredModel): ModelInfo {
    const ref = refOf(model);
    const placements = this.deps.agents
      .usable()
      .map((a) => ({ agentId: a.id, tier: this.residency.tier(a, ref) }))
      .filter((p) => p.tier !== Tier.REMOTE);
    return create(ModelInfoSchema, {
      spec: { ...model.spec, keepAliveSeconds: model.spec.keepAliveSeconds || this.options.keepAliveSeconds },
      createdUnixMs: BigInt(model.createdUnixMs),
      bytes: model.bytes,
      placements,
    });
  }

  // ─── placement ─────────────────────────────────────────────────────────────────────────────────

  /** Every known agent's score for a model, lowest total first. */
  explain(modelId: string, exclude: ReadonlySet<string> = new Set()): Score[] {
    return this.placer.score(this.requireModel(modelId), exclude);
  }

  /** Bytes of a model's checkpoint (0 until known). */
  modelBytes(modelId: string): number {
    return this.conversions.sizeOf(this.requireModel(modelId));
  }

  // ─── generation ────────────────────────────────────────────────────────────────────────────────

  /** A chat completion (what the edge and SchedulerService.ChatCompletion call). */
  chat(request: ChatCompletionRequest, signal: AbortSignal): AsyncIterable<ChoiceOutput> {
    const plan = chatPlan(request);
    return this.generate(plan.model, plan.n, plan.infer, signal);
  }

  /** A text completion (what the edge and SchedulerService.Completion call). */
  complete(request: CompletionRequest, signal: AbortSignal): AsyncIterable<ChoiceOutput> {
    const plan = completionPlan(request);
    return this.generate(plan.model, plan.n, plan.infer, signal);
  }

  /** Runs `n` choices of one request (see RequestRunner.generate). */
  generate(modelId: string, n: number, infer: (choice: number) => InferInit, signal: AbortSignal): AsyncIterable<ChoiceOutput> {
    return this.runner.generate(this.requireModel(modelId), n, infer, signal);
  }

  /** Unloads a model from an agent's GPU (DRAM and disk copies stay). */
  unload(agent: AgentRecord, ref: CheckpointRef, reason: string): Promise<void> {
    return this.loads.unload(agent, ref, reason);
  }

  private requireModel(id: string): RegisteredModel {
    const model = this.deps.models.get(id);
    if (model === undefined) throw new ConnectError(`The model \`${id}\` does not exist.`, Code.NotFound);
    return model;
  }
}
