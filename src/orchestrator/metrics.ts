// The orchestrator's Prometheus metrics, registered on a Registry created once per process and
// injected. Names: the seed's (inference_latency_seconds, cache_hit_ratio, agent_loads,
// queue_lengths), vLLM's where they mean the same thing, and thaw's load and cache series.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** Live figures read when /metrics is scraped (gauges are computed, not kept up to date per request). */
export interface MetricsSnapshot {
  /** Per agent: requests in flight from this orchestrator, the agent's reported queue, and liveness. */
  agents: { id: string; inflight: number; reportedQueue: number; live: boolean; tiers: { tier: string; freeBytes: number; totalBytes: number; bandwidth: number }[] }[];
  /** Requests waiting for an agent slot (the admission queue), all models. */
  queued: number;
}

/** Per-model children of the request series. */
export interface ModelSeries {
  e2eLatency: Histogram.Internal<"model">;
  inferenceLatency: Histogram.Internal<"model">;
  timeToFirstToken: Histogram.Internal<"model">;
  interTokenLatency: Histogram.Internal<"model">;
  promptTokens: Counter.Internal;
  generationTokens: Counter.Internal;
  running: Gauge.Internal<"model">;
  waiting: Gauge.Internal<"model">;
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160];
const TOKEN_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5];
const LOAD_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120];

export class OrchestratorMetrics {
  /** Seed: whole-request latency as the scheduler sees it (placement, cold start, generation). */
  readonly inferenceLatency: Histogram<"model">;
  readonly e2eLatency: Histogram<"model">;
  readonly timeToFirstToken: Histogram<"model">;
  readonly interTokenLatency: Histogram<"model">;
  readonly running: Gauge<"model">;
  readonly waiting: Gauge<"model">;
  readonly promptTokens: Counter<"model">;
  readonly generationTokens: Counter<"model">;
  readonly requestSuccess: Counter<"model" | "finished_reason">;
  readonly requestErrors: Counter<"model" | "code">;
  /** Seed: fraction of placements that found the model already on the GPU (cache level 0). */
  readonly cacheHitRatio: Gauge<"model">;
  readonly placements: Counter<"model" | "cache_level">;
  readonly agentLoads: Gauge<"agent">;
  readonly queueLengths: Gauge<"queue">;
  readonly modelLoadSeconds: Histogram<"tier">;
  readonly coldStarts: Counter<"tier">;
  readonly loadBytes: Counter<"tier">;
  readonly unloads: Counter<"reason">;
  readonly conversions: Counter<"result">;
  readonly retries: Counter<"model">;
  readonly reloads: Counter<"model">;
  readonly progressTimeouts: Counter<"rpc">;
  readonly agentsLive: Gauge;
  readonly tierFreeBytes: Gauge<"agent" | "tier">;
  readonly tierBandwidth: Gauge<"agent" | "tier">;
  readonly httpRequests: Counter<"endpoint" | "status">;
  readonly rpcRequests: Counter<"method" | "code">;
  readonly rpcDuration: Histogram<"method">;

  private snapshot: () => MetricsSnapshot = () => ({ agents: [], queued: 0 });
  private readonly hits = new Map<string, { warm: number; all: number }>();
  private readonly models = new Map<string, ModelSeries>();

  constructor(readonly registry: Registry) {
    const registers = [registry];
    const self = this;
    this.inferenceLatency = new Histogram({ name: "inference_latency_seconds", help: "Request latency inside the scheduler: placement, cold start and generation, seconds", labelNames: ["model"], buckets: LATENCY_BUCKETS, registers });
    this.e2eLatency = new Histogram({ name: "e2e_request_latency_seconds", help: "End-to-end request latency, from arrival to the last token, seconds", labelNames: ["model"], buckets: LATENCY_BUCKETS, registers });
    this.timeToFirstToken = new Histogram({ name: "time_to_first_token_seconds", help: "Time from arrival to the first generated token, seconds", labelNames: ["model"], buckets: LATENCY_BUCKETS, registers });
    this.interTokenLatency = new Histogram({ name: "inter_token_latency_seconds", help: "Time between generated tokens of one choice, seconds", labelNames: ["model"], buckets: TOKEN_BUCKETS, registers });
    this.running = new Gauge({ name: "num_requests_running", help: "Requests generating on an agent", labelNames: ["model"], registers });
    this.waiting = new Gauge({ name: "num_requests_waiting", help: "Requests waiting for an agent slot, a conversion or a model load", labelNames: ["model"], registers });
    this.promptTokens = new Counter({ name: "prompt_tokens_total", help: "Prompt tokens processed", labelNames: ["model"], registers });
    this.generationTokens = new Counter({ name: "generation_tokens_total", help: "Tokens generated", labelNames: ["model"], registers });
    this.requestSuccess = new Counter({ name: "request_success_total", help: "Choices finished, by finish reason", labelNames: ["model", "finished_reason"], registers });
    this.requestErrors = new Counter({ name: "request_errors_total", help: "Requests that ended in an error, by gRPC code", labelNames: ["model", "code"], registers });
    this.placements = new Counter({ name: "placements_total", help: "Requests placed on an agent, by the model's cache level there (0 GPU, 1 DRAM, 2 disk, 3 remote)", labelNames: ["model", "cache_level"], registers });
    this.cacheHitRatio = new Gauge({
      name: "cache_hit_ratio",
      help: "Fraction of placements that found the model already on the GPU",
      labelNames: ["model"],
      registers,
      collect() {
        for (const [model, h] of self.hits) this.set({ model }, h.all === 0 ? 0 : h.warm / h.all);
      },
    });
    this.agentLoads = new Gauge({
      name: "agent_loads",
      help: "Requests in flight on each agent, as the scheduler counts them",
      labelNames: ["agent"],
      registers,
      collect() {
        this.reset();
        for (const a of self.snapshot().agents) this.set({ agent: a.id }, a.inflight);
      },
    });
    this.queueLengths = new Gauge({
      name: "queue_lengths",
      help: 'Queue lengths: queue="scheduler" is the admission queue; queue="agent:<id>" is what each agent reports',
      labelNames: ["queue"],
      registers,
      collect() {
        this.reset();
        const s = self.snapshot();
        this.set({ queue: "scheduler" }, s.queued);
        for (const a of s.agents) this.set({ queue: `agent:${a.id}` }, a.reportedQueue);
      },
    });
    this.agentsLive = new Gauge({
      name: "agents_live",
      help: "Agents whose heartbeats are current",
      registers,
      collect() {
        this.set(self.snapshot().agents.filter((a) => a.live).length);
      },
    });
    this.tierFreeBytes = new Gauge({
      name: "agent_tier_free_bytes",
      help: "Free bytes per agent and tier, as last reported",
      labelNames: ["agent", "tier"],
      registers,
      collect() {
        this.reset();
        for (const a of self.snapshot().agents) for (const t of a.tiers) this.set({ agent: a.id, tier: t.tier }, t.freeBytes);
      },
    });
    this.tierBandwidth = new Gauge({
      name: "agent_tier_bandwidth_bytes_per_second",
      help: "Measured read bandwidth out of each tier towards the GPU, per agent, as last reported",
      labelNames: ["agent", "tier"],
      registers,
      collect() {
        this.reset();
        for (const a of self.snapshot().agents) for (const t of a.tiers) this.set({ agent: a.id, tier: t.tier }, t.bandwidth);
      },
    });
    this.modelLoadSeconds = new Histogram({ name: "model_load_seconds", help: "Model loads onto an engine, by the tier the model started from, seconds", labelNames: ["tier"], buckets: LOAD_BUCKETS, registers });
    this.coldStarts = new Counter({ name: "cold_starts_total", help: "Model loads (cold starts), by the tier the model started from", labelNames: ["tier"], registers });
    this.loadBytes = new Counter({ name: "load_bytes_total", help: "Bytes moved by model loads, by the tier they came from", labelNames: ["tier"], registers });
    this.unloads = new Counter({ name: "unloads_total", help: "Models unloaded from a GPU by the scheduler", labelNames: ["reason"], registers });
    this.conversions = new Counter({ name: "conversions_total", help: "Conversions the scheduler started, by result", labelNames: ["result"], registers });
    this.retries = new Counter({ name: "request_retries_total", help: "Choices retried on another agent after failing before their first token", labelNames: ["model"], registers });
    this.reloads = new Counter({ name: "not_loaded_reloads_total", help: "Infers an agent answered \"not loaded\" (the scheduler's view was stale): loaded again and retried there", labelNames: ["model"], registers });
    this.progressTimeouts = new Counter({ name: "agent_progress_timeouts_total", help: "LoadModel and DownloadChunks calls aborted for reporting no progress, by RPC", labelNames: ["rpc"], registers });
    this.httpRequests = new Counter({ name: "http_requests_total", help: "Edge HTTP requests, by endpoint and status", labelNames: ["endpoint", "status"], registers });
    this.rpcRequests = new Counter({ name: "rpc_requests_total", help: "SchedulerService and reflection calls, by method and final gRPC code", labelNames: ["method", "code"], registers });
    this.rpcDuration = new Histogram({ name: "rpc_duration_seconds", help: "SchedulerService and reflection calls, start to last message, seconds", labelNames: ["method"], buckets: LATENCY_BUCKETS, registers });
  }

  /** The per-model series, label lookups done once per model (they cost on every token otherwise). */
  forModel(model: string): ModelSeries {
    let series = this.models.get(model);
    if (series === undefined) {
      series = {
        e2eLatency: this.e2eLatency.labels(model),
        inferenceLatency: this.inferenceLatency.labels(model),
        timeToFirstToken: this.timeToFirstToken.labels(model),
        interTokenLatency: this.interTokenLatency.labels(model),
        promptTokens: this.promptTokens.labels(model),
        generationTokens: this.generationTokens.labels(model),
        running: this.running.labels(model),
        waiting: this.waiting.labels(model),
      };
      this.models.set(model, series);
    }
    return series;
  }

  /** Where the computed gauges read live state from (the scheduler). */
  setSnapshot(source: () => MetricsSnapshot): void {
    this.snapshot = source;
  }

  /** Counts one placement at `cacheLevel` towards placements_total and cache_hit_ratio. */
  placed(model: string, cacheLevel: number): void {
    this.placements.inc({ model, cache_level: String(cacheLevel) });
    const h = this.hits.get(model) ?? { warm: 0, all: 0 };
    h.all++;
    if (cacheLevel === 0) h.warm++;
    this.hits.set(model, h);
  }
}
