// The agent's Prometheus metrics (DESIGN.md §6), registered on a Registry the process creates once
// and injects. Gauges that mirror state (pool bytes, queues) are filled when scraped.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** Tier label values. */
export type TierLabel = "gpu" | "dram" | "disk" | "remote";

export interface AgentGauges {
  poolBytes(): { used: number; loading: number; free: number };
  queueLengths(): Map<string, number>;
  running(): number;
}

export class AgentMetrics {
  readonly modelLoadSeconds: Histogram<"tier">;
  readonly coldStarts: Counter<"tier">;
  readonly loadBytes: Counter<"tier">;
  readonly evictions: Counter<"tier">;
  readonly cacheHitRatio: Gauge;
  private hits = 0;
  private lookups = 0;

  constructor(
    readonly registry: Registry,
    gauges: AgentGauges,
  ) {
    const registers = [registry];
    this.modelLoadSeconds = new Histogram({
      name: "model_load_seconds",
      help: "Seconds from LoadModel to ready, by the tier the model was found in",
      labelNames: ["tier"],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
      registers,
    });
    this.coldStarts = new Counter({
      name: "cold_starts_total",
      help: "Loads of a model that was not on an engine, by the tier it was found in",
      labelNames: ["tier"],
      registers,
    });
    this.loadBytes = new Counter({
      name: "load_bytes_total",
      help: "Bytes moved out of each tier by loads and downloads",
      labelNames: ["tier"],
      registers,
    });
    this.evictions = new Counter({
      name: "evictions_total",
      help: "Models (GPU: down to DRAM; DRAM) and chunks (disk) evicted to make room, by tier",
      labelNames: ["tier"],
      registers,
    });
    this.cacheHitRatio = new Gauge({
      name: "cache_hit_ratio",
      help: "Share of LoadModel calls that found the model already on an engine",
      registers,
      collect: () => {
        this.cacheHitRatio.set(this.lookups === 0 ? 0 : this.hits / this.lookups);
      },
    });
    const pool = new Gauge({
      name: "pinned_pool_bytes",
      help: "Bytes of the pinned DRAM pool by state (used: holding models, loading, free)",
      labelNames: ["state"],
      registers,
      collect: () => {
        const p = gauges.poolBytes();
        pool.set({ state: "used" }, p.used);
        pool.set({ state: "loading" }, p.loading);
        pool.set({ state: "free" }, p.free);
      },
    });
    const queues = new Gauge({
      name: "queue_lengths",
      help: "Requests running or waiting per model on this agent",
      labelNames: ["model"],
      registers,
      collect: () => {
        queues.reset();
        for (const [model, n] of gauges.queueLengths()) queues.set({ model }, n);
      },
    });
    const loads: Gauge = new Gauge({
      name: "agent_loads",
      help: "Requests in flight on this agent (all models)",
      registers,
      collect: () => {
        loads.set(gauges.running());
      },
    });
  }

  /** Counts a model request: `hit` when the model was already on an engine. */
  lookup(hit: boolean): void {
    this.lookups++;
    if (hit) this.hits++;
  }
}
