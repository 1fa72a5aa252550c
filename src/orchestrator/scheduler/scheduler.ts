// The scheduler: agents from heartbeats, models from the registry, placement by the cost of
// DESIGN §5, the cold-start flow (convert once, spread chunk downloads over idle agents, load,
// infer), keep-alive unloading, admission, and retries before the first token. The edge and the
// SchedulerService RPCs both call this class.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Tier, type AgentStatus, type TokenOutput, type Usage } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { InferRequestSchema } from "../../gen/thaw/agent/v1/agent_service_pb.js";
import { CheckpointRefSchema, type CheckpointIndex, type CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { FinishReason } from "../../gen/thaw/engine/v1/engine_pb.js";
import { CompletionFinishReason, ModelInfoSchema, type ModelInfo, type ModelSpec } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";
import type { ChatCompletionRequest, CompletionRequest } from "../../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import type { OrchestratorMetrics } from "../metrics.js";
import type { Admission } from "./admission.js";
import type { AgentRecord, AgentRegistry } from "./agent-registry.js";
import { Channel } from "./channel.js";
import type { AgentClient, AgentConnector, ConverterLink } from "./links.js";
import type { ModelRegistry, RegisteredModel } from "./model-registry.js";
import { chatPlan, completionPlan } from "./requests.js";
import { cacheLevel, findEntry, sameRef, scoreAgents, type PlacementCandidate, type PlacementWeights, type Score } from "./placement.js";

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
  /** Period of the keep-alive sweep and the suspect probes, ms. */
  sweepIntervalMs: number;
}

export const DEFAULT_SCHEDULER_OPTIONS: Omit<SchedulerOptions, "weights"> = {
  heartbeatIntervalMs: 1000,
  keepAliveSeconds: 300,
  maxAttempts: 3,
  agentWaitMs: 30_000,
  sweepIntervalMs: 1000,
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
  log?: (message: string) => void;
}

/** Output of one choice since its previous message. */
export interface ChoiceOutput {
  index: number;
  text: string;
  tokens: TokenOutput[];
  finishReason: CompletionFinishReason;
  /** On the choice's last message. */
  usage?: Usage;
  agentId: string;
}

type InferInit = MessageInitShape<typeof InferRequestSchema>;

/** A request placed on an agent, holding `slots` admission slots there. */
interface Placement {
  agent: AgentRecord;
  client: AgentClient;
  score: Score;
}

/**
 * Transient knowledge newer than the last heartbeat: a finished load, a started unload. It holds
 * until a heartbeat confirms it, or until heartbeats received well after it say otherwise (the
 * agent's own view wins then), or for OVERRIDE_MAX_MS at most.
 */
interface TierOverride {
  tier: Tier;
  setAtMs: number;
}

const OVERRIDE_MAX_MS = 30_000;

/** The reason given to a request's own controller when it ends early (made once: errors are costly to make). */
const REQUEST_ENDED = new ConnectError("request ended", Code.Canceled);

const RETRYABLE = new Set([Code.Unavailable, Code.Unknown, Code.Internal, Code.Aborted, Code.ResourceExhausted, Code.FailedPrecondition, Code.Canceled, Code.DataLoss]);

export class Scheduler {
  readonly options: SchedulerOptions;
  private readonly now: () => number;
  private readonly log: (message: string) => void;
  /** Published indexes by model key (size and chunk list). */
  private readonly indexes = new Map<string, CheckpointIndex>();
  private readonly conversions = new Map<string, Promise<CheckpointIndex | undefined>>();
  private readonly loads = new Map<string, Promise<void>>();
  private readonly unloads = new Map<string, Promise<void>>();
  private readonly overrides = new Map<string, TierOverride>();
  /** Choices running per agent|model (keep-alive never unloads under them). */
  private readonly active = new Map<string, number>();
  private readonly lastUse = new Map<string, number>();
  private readonly probing = new Set<string>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: SchedulerDeps,
    options: Partial<SchedulerOptions> & { weights: PlacementWeights },
  ) {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.options = { ...DEFAULT_SCHEDULER_OPTIONS, ...given, weights: options.weights };
    this.now = deps.now ?? Date.now;
    this.log = deps.log ?? (() => {});
    deps.agents.onUsable(() => deps.admission.wakeAll());
    deps.metrics.setSnapshot(() => ({
      queued: deps.admission.queued,
      agents: deps.agents.all().map((a) => ({
        id: a.id,
        inflight: deps.admission.inflight(a.id),
        reportedQueue: a.status.queueLength,
        live: deps.agents.isUsable(a),
        tiers: a.status.tiers.map((t) => ({
          tier: tierName(t.tier),
          freeBytes: Number(t.freeBytes),
          totalBytes: Number(t.totalBytes),
          bandwidth: t.bandwidthBytesPerSecond,
        })),
      })),
    }));
  }

  /** Starts the periodic keep-alive sweep and suspect probes. */
  start(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => void this.sweep(), this.options.sweepIntervalMs);
    this.sweeper.unref();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  // ─── registry views ────────────────────────────────────────────────────────────────────────────

  heartbeat(status: AgentStatus): { intervalMs: number } {
    const record = this.deps.agents.heartbeat(status);
    // A heartbeat that confirms what an override anticipated ends the override.
    const now = this.now();
    for (const [key, o] of this.overrides) {
      if (!key.startsWith(`${record.id}|`)) continue;
      const ref = refOfKey(key);
      const entry = findEntry(status, ref);
      const reported = entry?.tier ?? Tier.REMOTE;
      const confirmed = (o.tier === Tier.GPU) === (reported === Tier.GPU);
      if (confirmed || now - o.setAtMs > 2 * this.options.heartbeatIntervalMs) this.overrides.delete(key);
    }
    return { intervalMs: this.options.heartbeatIntervalMs };
  }

  async registerModel(spec: ModelSpec): Promise<ModelInfo> {
    const model = await this.deps.models.register(spec);
    this.indexes.delete(keyOf(refOf(model)));
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
      .map((a) => ({ agentId: a.id, tier: this.tierOn(a, ref) }))
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
    const model = this.requireModel(modelId);
    return this.score(model, exclude);
  }

  private score(model: RegisteredModel, exclude: ReadonlySet<string>): Score[] {
    const ref = refOf(model);
    const now = this.now();
    const candidates: PlacementCandidate[] = this.deps.agents.all().map((a) => {
      let ineligible: string | undefined;
      if (!this.deps.agents.isLive(a)) ineligible = `expired: no heartbeat for ${((now - a.lastHeartbeatMs) / 1000).toFixed(1)}s`;
      else if (a.suspect !== undefined) ineligible = `suspect: ${a.suspect}`;
      else if (exclude.has(a.id)) ineligible = "failed this request already";
      const override = this.override(a.id, ref);
      return { status: a.status, inflight: this.deps.admission.inflight(a.id), ineligible, tierOverride: override };
    });
    return scoreAgents(ref, Number(this.sizeOf(model)), candidates, this.options.weights);
  }

  private sizeOf(model: RegisteredModel): bigint {
    return model.bytes > 0n ? model.bytes : (this.indexes.get(keyOf(refOf(model)))?.totalBytes ?? 0n);
  }

  private override(agentId: string, ref: CheckpointRef): Tier | undefined {
    const key = `${agentId}|${keyOf(ref)}`;
    const o = this.overrides.get(key);
    if (o === undefined) return undefined;
    if (this.now() - o.setAtMs > OVERRIDE_MAX_MS) {
      this.overrides.delete(key);
      return undefined;
    }
    return o.tier;
  }

  private tierOn(agent: AgentRecord, ref: CheckpointRef): Tier {
    const o = this.override(agent.id, ref);
    if (o !== undefined) return o;
    const e = findEntry(agent.status, ref);
    return e && e.tier !== Tier.UNSPECIFIED ? e.tier : Tier.REMOTE;
  }

  /**
   * Finds the best agent with `slots` free admission slots and takes them; waits in the
   * admission queue when every agent is full, and for an agent to appear when none is usable.
   */
  private async place(model: RegisteredModel, slots: number, exclude: ReadonlySet<string>, signal: AbortSignal, waitForAgents: boolean): Promise<Placement> {
    const { admission } = this.deps;
    const deadline = this.now() + (waitForAgents ? this.options.agentWaitMs : 0);
    let front = false;
    if (admission.queued > 0) {
      await admission.wait(signal); // newcomers queue behind those already waiting
      front = true;
    }
    for (;;) {
      signal.throwIfAborted();
      const scores = this.score(model, exclude);
      const eligible = scores.filter((s) => s.ineligibleReason === "");
      for (const s of eligible) {
        if (!admission.tryAcquire(s.agentId, slots)) continue;
        const agent = this.deps.agents.get(s.agentId)!;
        this.deps.metrics.placed(model.spec.id, s.cacheLevel);
        return { agent, client: this.deps.connector.client(agent.status.address), score: s };
      }
      if (eligible.length === 0) {
        const left = deadline - this.now();
        if (left <= 0) {
          const why = scores.length === 0 ? "no agent has sent a heartbeat" : scores.map((s) => `${s.agentId}: ${s.ineligibleReason}`).join("; ");
          throw new ConnectError(`no agent available for model ${model.spec.id} (${why})`, Code.Unavailable);
        }
        await this.waitForAgent(signal, left);
        continue;
      }
      await admission.wait(signal, front);
      front = true;
    }
  }

  private waitForAgent(signal: AbortSignal, ms: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        off();
        signal.removeEventListener("abort", aborted);
        resolve();
      };
      const aborted = () => {
        clearTimeout(timer);
        off();
        reject(signal.reason);
      };
      const timer = setTimeout(done, Math.min(ms, this.options.heartbeatIntervalMs));
      const off = this.deps.agents.onUsable(done);
      signal.addEventListener("abort", aborted, { once: true });
    });
  }

  // ─── cold start ────────────────────────────────────────────────────────────────────────────────

  /**
   * Makes sure the checkpoint exists: asks the converter once and converts when it is missing.
   * Concurrent first requests share one conversion; a conversion is not tied to any one request.
   */
  private async ensureConverted(model: RegisteredModel, signal: AbortSignal): Promise<void> {
    const converter = this.deps.converter;
    if (converter === undefined || model.spec.launchCommand.length > 0) return; // external runtimes have no checkpoint
    const ref = refOf(model);
    const key = keyOf(ref);
    if (this.indexes.has(key)) return;
    // An agent that already holds it (in any tier below remote) proves it exists.
    const held = this.deps.agents.usable().some((a) => cacheLevel(this.tierOn(a, ref)) < 3);
    let flight = this.conversions.get(key);
    if (flight === undefined) {
      flight = (async () => {
        let index = await converter.getCheckpoint(ref);
        if (index === undefined) {
          if (held) return undefined;
          this.log(`converting ${model.spec.source}@${model.spec.revision} as ${model.spec.id}`);
          try {
            index = await converter.convert({ source: model.spec.source, revision: model.spec.revision, modelId: model.spec.id });
            this.deps.metrics.conversions.inc({ result: "ok" });
          } catch (err) {
            this.deps.metrics.conversions.inc({ result: "error" });
            throw err;
          }
        }
        this.indexes.set(key, index);
        await this.deps.models.setBytes(model.spec.id, index.totalBytes);
        return index;
      })();
      this.conversions.set(key, flight);
      flight.then(
        () => this.conversions.delete(key),
        () => this.conversions.delete(key),
      );
    }
    try {
      await abortable(flight, signal);
    } catch (err) {
      if (signal.aborted) throw err;
      if (held) return; // the converter is down, but agents hold it: serve anyway
      const e = ConnectError.from(err);
      throw new ConnectError(`cannot prepare model ${model.spec.id}: ${e.rawMessage}`, e.code);
    }
  }

  /**
   * Brings the model onto the agent's GPU if the agent does not have it there: fetches missing
   * chunks (spread over idle agents when the model is only in the store), then LoadModel.
   * Concurrent requests for the same model on the same agent share one load.
   */
  private async ensureLoaded(model: RegisteredModel, agent: AgentRecord, client: AgentClient, signal: AbortSignal): Promise<void> {
    const ref = refOf(model);
    const key = `${agent.id}|${keyOf(ref)}`;
    const pendingUnload = this.unloads.get(key);
    if (pendingUnload) await abortable(pendingUnload, signal);
    if (this.tierOn(agent, ref) === Tier.GPU) return;
    let flight = this.loads.get(key);
    if (flight === undefined) {
      flight = this.load(model, ref, agent, client);
      this.loads.set(key, flight);
      flight.then(
        () => this.loads.delete(key),
        () => this.loads.delete(key),
      );
    }
    await abortable(flight, signal);
  }

  private async load(model: RegisteredModel, ref: CheckpointRef, agent: AgentRecord, client: AgentClient): Promise<void> {
    const holders = this.deps.agents
      .usable()
      .filter((a) => a.id !== agent.id && cacheLevel(this.tierOn(a, ref)) <= 2)
      .map((a) => a.status.address);
    if (this.tierOn(agent, ref) === Tier.REMOTE && holders.length === 0 && model.spec.launchCommand.length === 0) {
      const helpers = await this.spreadDownloads(ref, agent);
      holders.push(...helpers);
    }
    const started = this.now();
    let last: { ready: boolean; startTier: Tier; seconds: number; timings: { tier: Tier; bytes: bigint }[] } | undefined;
    const request = { ref, peers: holders, maxModelLen: model.spec.maxModelLen, launchCommand: model.spec.launchCommand };
    for await (const progress of client.loadModel(request)) last = progress;
    if (!last?.ready) throw new ConnectError(`agent ${agent.id} ended the load of ${model.spec.id} before it was ready`, Code.Unavailable);
    const startTier = last.startTier !== Tier.UNSPECIFIED ? last.startTier : this.tierOn(agent, ref);
    const seconds = last.seconds > 0 ? last.seconds : (this.now() - started) / 1000;
    const tier = tierName(startTier);
    this.deps.metrics.coldStarts.inc({ tier });
    this.deps.metrics.modelLoadSeconds.observe({ tier }, seconds);
    for (const t of last.timings) this.deps.metrics.loadBytes.inc({ tier: tierName(t.tier) }, Number(t.bytes));
    this.overrides.set(`${agent.id}|${keyOf(ref)}`, { tier: Tier.GPU, setAtMs: this.now() });
    this.log(`loaded ${model.spec.id} on ${agent.id} from ${tier} in ${seconds.toFixed(3)}s`);
  }

  /**
   * The model is only in the store: split its chunks over the chosen agent and other idle agents
   * that lack it, fetch in parallel, and return the helpers' addresses (the chosen agent then
   * takes their chunks from them as peers). Best effort: a helper that fails is left out.
   */
  private async spreadDownloads(ref: CheckpointRef, target: AgentRecord): Promise<string[]> {
    const index = this.indexes.get(keyOf(ref));
    if (index === undefined || index.chunks.length < 2) return [];
    const idle = this.deps.agents
      .usable()
      .filter((a) => a.id !== target.id && this.deps.admission.inflight(a.id) === 0 && a.status.queueLength === 0 && this.tierOn(a, ref) === Tier.REMOTE);
    if (idle.length === 0) return [];
    const workers = [target, ...idle.slice(0, index.chunks.length - 1)];
    const shares = workers.map(() => [] as string[]);
    index.chunks.forEach((c, i) => shares[i % workers.length].push(c.fileName));
    const results = await Promise.allSettled(
      workers.map(async (w, i) => {
        const client = this.deps.connector.client(w.status.address);
        for await (const _ of client.downloadChunks({ ref, fileNames: shares[i] }));
        return w;
      }),
    );
    const helpers: string[] = [];
    results.forEach((r, i) => {
      if (r.status === "fulfilled") {
        if (i > 0) helpers.push(r.value.status.address);
      } else {
        this.log(`download of ${keyOf(ref)} chunks on ${workers[i].id} failed: ${ConnectError.from(r.reason).message}`);
      }
    });
    return helpers;
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

  /**
   * Runs `n` choices of one request and streams their output, interleaved, in order per choice.
   * Nothing happens until the first `next()`; errors before any output have their own code
   * (NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE …) and surface there; an agent that fails after a
   * choice's first token ends the stream with UNAVAILABLE. Leaving early (`return()`) or the
   * signal aborting stops every choice. (A plain iterator over a channel rather than an async
   * generator: the edge pays no generator hops per token.)
   */
  generate(modelId: string, n: number, infer: (choice: number) => InferInit, signal: AbortSignal): AsyncIterable<ChoiceOutput> {
    const model = this.requireModel(modelId);
    const { metrics } = this.deps;
    const label = model.spec.id;
    const series = metrics.forModel(label);
    const arrived = this.now();
    const ctl = new AbortController();
    const onAbort = () => ctl.abort(signal.reason);
    const stats = { firstToken: false, arrived, model: label };
    const channel = new Channel<ChoiceOutput>();
    const channelIterator = channel[Symbol.asyncIterator]();
    let state: "new" | "waiting" | "running" | "done" = "new";
    let started: Promise<void> | undefined;

    const finish = (completed: boolean) => {
      if (state === "done") return;
      if (state === "waiting") series.waiting.dec();
      if (state === "running") series.running.dec();
      state = "done";
      signal.removeEventListener("abort", onAbort);
      if (completed) {
        const seconds = (this.now() - arrived) / 1000;
        series.e2eLatency.observe(seconds);
        series.inferenceLatency.observe(seconds);
      } else {
        ctl.abort(REQUEST_ENDED);
      }
    };
    const failure = (err: unknown): ConnectError => {
      if (signal.aborted) return new ConnectError("request cancelled by the client", Code.Canceled);
      const e = ConnectError.from(err);
      metrics.requestErrors.inc({ model: label, code: Code[e.code] ?? String(e.code) });
      return e;
    };
    const start = async () => {
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
      state = "waiting";
      series.waiting.inc();
      await this.ensureConverted(model, ctl.signal);
      const placement = await this.place(model, n, new Set(), ctl.signal, true);
      series.waiting.dec();
      series.running.inc();
      state = "running";
      let remaining = n;
      for (let i = 0; i < n; i++) {
        this.runChoice(model, i, placement, infer(i), channel, ctl.signal, stats).then(
          () => {
            if (--remaining === 0) channel.close();
          },
          (err) => {
            ctl.abort(err);
            channel.fail(err);
          },
        );
      }
    };
    const iterator: AsyncIterator<ChoiceOutput> = {
      next: async () => {
        if (state === "done") return { value: undefined, done: true };
        try {
          if (started === undefined) started = start();
          await started;
          const r = await channelIterator.next();
          if (r.done) finish(true);
          return r;
        } catch (err) {
          const e = failure(err);
          finish(false);
          throw e;
        }
      },
      return: async () => {
        finish(false);
        await channelIterator.return?.();
        return { value: undefined, done: true };
      },
    };
    return { [Symbol.asyncIterator]: () => iterator };
  }

  /** One choice: load if needed, Infer, retry elsewhere on a failure before the first token. */
  private async runChoice(
    model: RegisteredModel,
    index: number,
    initial: Placement,
    request: InferInit,
    out: Channel<ChoiceOutput>,
    signal: AbortSignal,
    stats: { firstToken: boolean; arrived: number; model: string },
  ): Promise<void> {
    const { metrics } = this.deps;
    const m = metrics.forModel(stats.model);
    const ref = refOf(model);
    const tried = new Set<string>();
    let placement = initial;
    for (let attempt = 1; ; attempt++) {
      const agent = placement.agent;
      const key = `${agent.id}|${keyOf(ref)}`;
      this.active.set(key, (this.active.get(key) ?? 0) + 1);
      const started = this.now();
      let released = false;
      const releaseOnce = () => {
        if (released) return;
        released = true;
        this.release(key, agent.id, started);
      };
      let produced = false;
      try {
        await this.ensureLoaded(model, agent, placement.client, signal);
        let last = this.now();
        let finished = false;
        // Read every stream to its end, even past the finish: leaving early resets the HTTP/2
        // stream, and servers count resets (rapid-reset protection closes sessions that send many).
        for await (const r of placement.client.infer({ ...request, ref }, { signal })) {
          if (finished) continue;
          const t = this.now();
          const count = r.tokens.length;
          if (count > 0) {
            if (!stats.firstToken) {
              stats.firstToken = true;
              m.timeToFirstToken.observe((t - stats.arrived) / 1000);
            } else if (produced) {
              const gap = (t - last) / 1000 / count;
              for (let k = 0; k < count; k++) m.interTokenLatency.observe(gap);
            }
            m.generationTokens.inc(count);
            last = t;
          }
          const finishReason = toCompletionFinish(r.finishReason);
          if (count > 0 || r.text !== "" || finishReason !== CompletionFinishReason.UNSPECIFIED) produced = true;
          out.push({ index, text: r.text, tokens: r.tokens, finishReason, usage: r.usage, agentId: agent.id });
          if (finishReason !== CompletionFinishReason.UNSPECIFIED) {
            if (index === 0 && r.usage) m.promptTokens.inc(r.usage.promptTokens);
            metrics.requestSuccess.inc({ model: stats.model, finished_reason: finishName(finishReason) });
            finished = true;
          }
        }
        if (finished) return;
        throw new ConnectError(`agent ${agent.id} ended the stream without a finish reason`, Code.Unavailable);
      } catch (err) {
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : err;
        const e = agentError(agent.id, err);
        const broken = e.code === Code.Unavailable || e.code === Code.Unknown || e.code === Code.Internal || e.code === Code.Canceled;
        if (broken) {
          // Not placed on again until a status probe answers (heartbeats alone may lag a crash).
          this.suspect(agent, e.rawMessage);
        }
        if (produced) {
          this.log(`agent ${agent.id} failed after the first token (${Code[e.code]}: ${e.rawMessage})`);
          throw new ConnectError(`agent ${agent.id} failed while generating: ${e.rawMessage}`, Code.Unavailable);
        }
        if (!RETRYABLE.has(e.code) || attempt >= this.options.maxAttempts) throw e;
        if (broken) this.log(`agent ${agent.id} failed before the first token (${Code[e.code]}: ${e.rawMessage}); retrying elsewhere`);
        tried.add(agent.id);
        metrics.retries.inc({ model: stats.model });
        releaseOnce();
        try {
          placement = await this.place(model, 1, tried, signal, false);
        } catch (placeErr) {
          if (signal.aborted) throw placeErr;
          throw new ConnectError(`${e.rawMessage} (no other agent to retry on)`, e.code);
        }
      } finally {
        releaseOnce();
      }
    }
  }

  private release(key: string, agentId: string, started: number): void {
    const left = (this.active.get(key) ?? 1) - 1;
    if (left > 0) this.active.set(key, left);
    else this.active.delete(key);
    this.lastUse.set(key, this.now());
    this.deps.admission.release(agentId, 1, this.now() - started);
  }

  private requireModel(id: string): RegisteredModel {
    const model = this.deps.models.get(id);
    if (model === undefined) throw new ConnectError(`The model \`${id}\` does not exist.`, Code.NotFound);
    return model;
  }

  // ─── keep-alive, probes ────────────────────────────────────────────────────────────────────────

  /** One pass of the periodic work: keep-alive unloads, probes of suspect agents, queue wake-ups. */
  async sweep(): Promise<void> {
    const now = this.now();
    const { agents, admission } = this.deps;
    for (const agent of agents.usable()) {
      for (const entry of agent.status.models) {
        if (entry.ref === undefined) continue;
        const ref = entry.ref;
        const key = `${agent.id}|${keyOf(ref)}`;
        if (this.tierOn(agent, ref) !== Tier.GPU) continue;
        if ((this.active.get(key) ?? 0) > 0 || this.unloads.has(key) || this.loads.has(key)) continue;
        const model = this.deps.models.list().find((m) => sameRef(refOf(m), ref));
        const ttlMs = (model?.spec.keepAliveSeconds || this.options.keepAliveSeconds) * 1000;
        const reportedIdle = Number(entry.idleMs) + (now - agent.lastHeartbeatMs);
        const used = this.lastUse.get(key);
        const idle = used === undefined ? reportedIdle : Math.min(reportedIdle, now - used);
        if (entry.queueLength > 0 || idle <= ttlMs) continue;
        this.unload(agent, ref, model === undefined ? "unregistered" : "keep_alive");
      }
    }
    for (const agent of agents.suspects()) if (agents.isLive(agent)) this.probe(agent);
    if (admission.queued > 0) admission.wakeAll();
  }

  /** Marks an agent suspect (not placed on) and asks it for its status; an answer clears it. */
  private suspect(agent: AgentRecord, reason: string): void {
    this.deps.agents.markSuspect(agent.id, reason);
    this.probe(agent);
  }

  private probe(agent: AgentRecord): void {
    const { agents } = this.deps;
    if (this.probing.has(agent.id)) return;
    this.probing.add(agent.id);
    const client = this.deps.connector.client(agent.status.address);
    client
      .getStatus({}, { timeoutMs: Math.max(500, this.options.heartbeatIntervalMs) })
      .then(
        (r) => {
          if (r.status) agents.heartbeat(r.status);
          if (agents.get(agent.id)?.suspect !== undefined) this.log(`agent ${agent.id} answers again`);
          agents.clearSuspect(agent.id);
        },
        () => {},
      )
      .finally(() => this.probing.delete(agent.id));
  }

  /** Unloads a model from an agent's GPU (DRAM and disk copies stay). */
  unload(agent: AgentRecord, ref: CheckpointRef, reason: string): Promise<void> {
    const key = `${agent.id}|${keyOf(ref)}`;
    const existing = this.unloads.get(key);
    if (existing) return existing;
    this.overrides.set(key, { tier: Tier.DRAM, setAtMs: this.now() });
    const client = this.deps.connector.client(agent.status.address);
    const done = client
      .unloadModel({ ref, downTo: Tier.GPU }, { timeoutMs: 30_000 })
      .then(
        () => {
          this.overrides.set(key, { tier: Tier.DRAM, setAtMs: this.now() });
          this.deps.metrics.unloads.inc({ reason });
          this.lastUse.delete(key);
          this.log(`unloaded ${keyOf(ref)} from ${agent.id} (${reason})`);
        },
        (err) => {
          this.overrides.delete(key);
          this.log(`unload of ${keyOf(ref)} on ${agent.id} failed: ${ConnectError.from(err).message}`);
        },
      )
      .finally(() => this.unloads.delete(key));
    this.unloads.set(key, done);
    return done;
  }
}

// ─── helpers ─────────────────────────────────────────────────────────────────────────────────────

const refs = new WeakMap<RegisteredModel, CheckpointRef>();

/** The checkpoint a registration names (made once per registration). */
export function refOf(model: RegisteredModel): CheckpointRef {
  let ref = refs.get(model);
  if (ref === undefined) {
    ref = create(CheckpointRefSchema, { modelId: model.spec.id, revision: model.spec.revision || "main" });
    refs.set(model, ref);
  }
  return ref;
}

function keyOf(ref: CheckpointRef): string {
  return `${ref.modelId}@${ref.revision || "main"}`;
}

function refOfKey(key: string): CheckpointRef {
  const modelKey = key.slice(key.indexOf("|") + 1);
  const at = modelKey.lastIndexOf("@");
  return create(CheckpointRefSchema, { modelId: modelKey.slice(0, at), revision: modelKey.slice(at + 1) });
}

export function tierName(tier: Tier): string {
  switch (tier) {
    case Tier.GPU:
      return "gpu";
    case Tier.DRAM:
      return "dram";
    case Tier.DISK:
      return "disk";
    case Tier.REMOTE:
      return "remote";
    default:
      return "unknown";
  }
}

function toCompletionFinish(reason: FinishReason): CompletionFinishReason {
  switch (reason) {
    case FinishReason.STOP:
      return CompletionFinishReason.STOP;
    case FinishReason.LENGTH:
      return CompletionFinishReason.LENGTH;
    case FinishReason.ABORT:
      return CompletionFinishReason.ABORT;
    default:
      return CompletionFinishReason.UNSPECIFIED;
  }
}

function finishName(reason: CompletionFinishReason): string {
  return reason === CompletionFinishReason.STOP ? "stop" : reason === CompletionFinishReason.LENGTH ? "length" : "abort";
}

/** An agent's error as the scheduler reports it: auth problems between services are internal. */
function agentError(agentId: string, err: unknown): ConnectError {
  const e = ConnectError.from(err);
  if (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied) {
    return new ConnectError(`agent ${agentId} refused the scheduler (${e.rawMessage}); check THAW_INTERNAL_TOKEN`, Code.Internal);
  }
  return e;
}

/** Awaits `promise`, or rejects with the signal's reason when it aborts first. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
