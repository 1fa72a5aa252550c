// One simulated run: the real Scheduler (placement, admission, cold starts, chunk spreading,
// keep-alive, eviction bookkeeping, retries) on a virtual clock, over simulated agents, fed one
// workload, with one placement policy. Nothing here listens on a socket.
//
// What differs from a real cluster, on purpose:
// - Agents heartbeat when their state changes, at their next 1 s tick, not every second: between
//   changes a simulated agent has nothing new to say, and a year of 1 s heartbeats from 1,000
//   agents would be 3·10^10 events. Agents never fail, so they never expire.
// - The periodic sweep (every second in `thaw orchestrator`) runs at the 1 s ticks where it can do
//   something: a keep-alive falling due. A sweep with nothing due changes nothing.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Registry } from "prom-client";
import type { AgentStatus } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { CheckpointIndexSchema, CheckpointRefSchema, type CheckpointRef } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { ModelSpecSchema } from "../../src/gen/thaw/scheduler/v1/scheduler_pb.js";
import { OrchestratorMetrics } from "../../src/orchestrator/metrics.js";
import { Admission } from "../../src/orchestrator/scheduler/admission.js";
import { AgentRegistry } from "../../src/orchestrator/scheduler/agent-registry.js";
import type { AgentClient, AgentConnector, ConverterLink } from "../../src/orchestrator/scheduler/links.js";
import { ModelRegistry } from "../../src/orchestrator/scheduler/model-registry.js";
import { keyOf } from "../../src/orchestrator/scheduler/model-refs.js";
import { DEFAULT_WEIGHTS, type PlacementPolicy } from "../../src/orchestrator/scheduler/placement.js";
import { Scheduler } from "../../src/orchestrator/scheduler/scheduler.js";
import { MODEL_SIZES, type AgentHardware } from "./hardware.js";
import { makePolicy, type PolicyName } from "./policies.js";
import { chunkCount, SimAgent, type AgentTally, type Catalog } from "./sim-agent.js";
import { VirtualClock } from "./virtual-clock.js";
import { rng, type Request } from "./workload.js";

export interface SimConfig {
  policy: PolicyName;
  /** A ranking of your own in place of the named policy's (to try a change to placement). */
  placementPolicyOverride?: PlacementPolicy;
  agents: number;
  models: number;
  hardware: AgentHardware;
  /** Requests in time order (made afresh for each run). */
  workload: () => Iterator<Request>;
  /** Requests arriving before this are not counted, nor GPU time before it, ms. */
  warmupMs: number;
  /** The window ends here (GPU time is counted up to it), ms. */
  endMs: number;
  keepAliveSeconds: number;
  maxInflightPerAgent: number;
  maxQueue: number;
  /** Each model starts on the disks of this many agents (a prefetch), else only in the store. */
  diskCopies: number;
  seed: number;
}

export interface SimResult {
  policy: PolicyName;
  requests: number;
  completed: number;
  failed: Record<string, number>;
  /** TTFT of the counted requests that completed, ms, ascending. */
  ttftMs: Float64Array;
  coldStarts: AgentTally["coldStarts"];
  gpuSeconds: number;
  gpuByteSeconds: number;
  evictions: number;
  simulatedSeconds: number;
  wallSeconds: number;
  events: number;
}

/** Bytes of each model: the size mix of hardware.ts, shuffled over the popularity ranks. */
export function modelBytes(models: number, seed: number): number[] {
  const random = rng(seed ^ 0x5eed);
  return Array.from({ length: models }, () => {
    let x = random();
    for (const s of MODEL_SIZES) if ((x -= s.share) < 0) return s.bytes;
    return MODEL_SIZES[MODEL_SIZES.length - 1].bytes;
  });
}

export async function simulate(config: SimConfig): Promise<SimResult> {
  const wallStart = performance.now();
  const clock = new VirtualClock();
  const bytes = modelBytes(config.models, config.seed);
  const ids = bytes.map((_, i) => `m${String(i).padStart(5, "0")}`);
  const refs = ids.map((id) => create(CheckpointRefSchema, { modelId: id, revision: "main" }));
  const byKey = new Map<string, number>(refs.map((r, i) => [keyOf(r), i]));
  const catalog: Catalog = {
    ref: (key) => refs[byKey.get(key)!],
    bytes: (key) => bytes[byKey.get(key)!],
  };
  const shapes = new Map<string, { promptTokens: number; outputTokens: number }>();

  // The scheduler, as orchestrator.ts composes it, on the virtual clock.
  const agents = new AgentRegistry({ expiryMs: Number.MAX_SAFE_INTEGER, forgetMs: Number.MAX_SAFE_INTEGER, now: clock.now });
  const models = await ModelRegistry.open(undefined, clock.now);
  for (let i = 0; i < ids.length; i++) {
    await models.register(create(ModelSpecSchema, { id: ids[i] }));
    await models.setBytes(ids[i], BigInt(Math.round(bytes[i])));
  }
  const admission = new Admission({ maxInflightPerAgent: config.maxInflightPerAgent, maxQueue: config.maxQueue });
  const sims = new Map<string, SimAgent>();
  const connector: AgentConnector = {
    client: (address) => sims.get(address) as unknown as AgentClient,
    identify: async (address) => {
      const a = sims.get(address);
      if (a === undefined) throw new ConnectError(`no agent at ${address}`, Code.Unavailable);
      return a.id;
    },
  };
  const converter: ConverterLink = {
    async getCheckpoint(ref: CheckpointRef) {
      const i = byKey.get(keyOf(ref));
      if (i === undefined) return undefined;
      const chunks = chunkCount(bytes[i]);
      return create(CheckpointIndexSchema, {
        formatVersion: 1,
        ref,
        modelKey: keyOf(ref),
        totalBytes: BigInt(Math.round(bytes[i])),
        chunks: Array.from({ length: chunks }, (_, c) => ({ fileName: `chunk-${String(c).padStart(5, "0")}.bin` })),
      });
    },
    convert: () => Promise.reject(new ConnectError("every model is converted before the run", Code.Internal)),
  };
  const scheduler = new Scheduler(
    {
      agents,
      models,
      admission,
      metrics: new OrchestratorMetrics(new Registry()),
      connector,
      converter,
      now: clock.now,
      timers: clock.timers,
      placementPolicy: config.placementPolicyOverride ?? makePolicy(config.policy),
    },
    { weights: DEFAULT_WEIGHTS, keepAliveSeconds: config.keepAliveSeconds, agentWaitMs: 0 },
  );
  const heartbeat = (status: AgentStatus) => void scheduler.heartbeat(status).catch(() => undefined);

  const random = rng(config.seed);
  for (let i = 0; i < config.agents; i++) {
    const id = `a${String(i).padStart(4, "0")}`;
    const agent = new SimAgent(id, config.hardware, clock, catalog, (r) => shapes.get(r)!, heartbeat, Math.floor(random() * 1000), (a) => sims.get(a));
    sims.set(agent.address, agent);
  }
  const all = [...sims.values()];
  for (let m = 0; m < ids.length; m++) {
    for (let c = 0; c < Math.min(config.diskCopies, all.length); c++) all[(m * 7919 + c * 104729) % all.length].seedDisk(keyOf(refs[m]));
  }
  for (const a of all) heartbeat(a.status());
  await clock.run(0);

  // Sweeps at the 1 s ticks where a keep-alive can fall due.
  const sweeps = new Set<number>();
  const sweepAfterIdle = () => {
    const tick = Math.ceil((clock.now() + config.keepAliveSeconds * 1000 + 1) / 1000) * 1000;
    if (sweeps.has(tick)) return;
    sweeps.add(tick);
    clock.at(tick, () => {
      sweeps.delete(tick);
      scheduler.sweep();
    });
  };

  const ttft: number[] = [];
  const failed: Record<string, number> = {};
  let requests = 0;
  let completed = 0;
  const run = async (r: Request, n: number) => {
    const requestId = `r${n}`;
    const counted = r.atMs >= config.warmupMs && r.atMs < config.endMs;
    if (counted) requests++;
    shapes.set(requestId, r);
    const arrived = clock.now();
    let first = -1;
    try {
      const stream = scheduler.generate(ids[r.model], 1, () => ({ requestId, sampling: { maxTokens: r.outputTokens } }), new AbortController().signal);
      for await (const _ of stream) if (first < 0) first = clock.now() - arrived;
      if (counted) {
        completed++;
        ttft.push(first);
      }
    } catch (err) {
      if (process.env.SIM_DEBUG) console.error(err);
      if (counted) {
        const code = Code[ConnectError.from(err).code] ?? "Unknown";
        failed[code] = (failed[code] ?? 0) + 1;
      }
    } finally {
      shapes.delete(requestId);
      sweepAfterIdle();
    }
  };

  const arrivals = config.workload();
  let n = 0;
  const next = () => {
    const r = arrivals.next();
    if (r.done || r.value.atMs >= config.endMs) return;
    clock.at(r.value.atMs, () => {
      void run(r.value, n++);
      next();
    });
  };
  next();

  // GPU time counts inside the window only.
  const tallies = () => {
    const t = { gpuSeconds: 0, gpuByteSeconds: 0, evictions: 0, coldStarts: { dram: 0, disk: 0, remote: 0 } };
    for (const a of all) {
      a.finish();
      t.gpuSeconds += a.tally.gpuSeconds;
      t.gpuByteSeconds += a.tally.gpuByteSeconds;
      t.evictions += a.tally.evictions;
      for (const k of ["dram", "disk", "remote"] as const) t.coldStarts[k] += a.tally.coldStarts[k];
    }
    return t;
  };
  let atStart = tallies();
  let atEnd = atStart;
  clock.at(config.warmupMs, () => (atStart = tallies()));
  clock.at(config.endMs, () => (atEnd = tallies()));
  await clock.run();

  const sorted = Float64Array.from(ttft).sort();
  return {
    policy: config.policy,
    requests,
    completed,
    failed,
    ttftMs: sorted,
    coldStarts: {
      dram: atEnd.coldStarts.dram - atStart.coldStarts.dram,
      disk: atEnd.coldStarts.disk - atStart.coldStarts.disk,
      remote: atEnd.coldStarts.remote - atStart.coldStarts.remote,
    },
    gpuSeconds: atEnd.gpuSeconds - atStart.gpuSeconds,
    gpuByteSeconds: atEnd.gpuByteSeconds - atStart.gpuByteSeconds,
    evictions: atEnd.evictions - atStart.evictions,
    simulatedSeconds: (config.endMs - config.warmupMs) / 1000,
    wallSeconds: (performance.now() - wallStart) / 1000,
    events: clock.executed,
  };
}

/** The q-quantile of an ascending array (nearest rank). */
export function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export function mean(values: Float64Array): number {
  let s = 0;
  for (const v of values) s += v;
  return values.length === 0 ? NaN : s / values.length;
}
