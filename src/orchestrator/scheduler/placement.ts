// The placement cost of DESIGN §5, term by term; the lowest total wins:
//   score(a) = α·cache_level(a,m) − β·kv_hit_rate(a,m) + γ·queue_len(a) + δ·size(m)/bandwidth(a,tier)
//              + ε·eviction_bytes(a,m)/dram_bandwidth(a) + ζ·wakes_device(a,m)
// The memory term follows the order placement prefers: an agent where the model is resident
// (level 0, nothing to move), else one with room on a device without eviction (term 0), else the
// one whose eviction costs least (the seconds it would take to bring the evicted models back from
// DRAM). Models with running requests are never evictable.
// The wake term: a model loaded onto a device that holds nothing (an idle GPU) holds that whole GPU
// for its keep-alive, where one loaded beside others costs no GPU time of its own. ζ (0.3) is about
// one request of queue (γ) or the eviction term of a 15 GB idle model, 0.3 s of transfer (δ): it
// trades at most that much start time for consolidation, but among equally fast starts it fills GPUs in use
// (evicting a small idle model, whose DRAM copy stays for a 0.3 s return) before waking another.
// In the scheduling simulator (bench/sim) this cut GPU-seconds 4–12% at the same p99 TTFT.
// α (0.1) only breaks near-ties between tiers: the transfer term already prices a tier by the time
// its bytes take, as the agent measures it. With α = 1 a local disk copy (1.5 GB/s) beat a store
// download as fast or faster (1.55 GB/s, and several times that when idle agents share the chunks),
// and the simulator's p99 TTFT at low load was 19 s instead of 10.5 s (bench/RESULTS.md).
// Pure: the scheduler gathers the inputs (heartbeats plus what it knows newer than them), this
// ranks them.
import { Tier, type AgentStatus, type ModelCacheEntry } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";

export interface PlacementWeights {
  alpha: number;
  beta: number;
  gamma: number;
  delta: number;
  /** Weight of the eviction term (seconds of DRAM reads to bring evicted models back). */
  epsilon: number;
  /** The wake term: the cost of loading onto a device that holds no model (an idle GPU). */
  zeta: number;
}

export const DEFAULT_WEIGHTS: PlacementWeights = { alpha: 0.1, beta: 0.5, gamma: 0.25, delta: 1, epsilon: 1, zeta: 0.3 };

/**
 * Bandwidth assumed for a tier an agent has not measured yet (bytes/s). Placement uses the
 * agent's measured figure as soon as it reports one.
 */
export const FALLBACK_BANDWIDTH: Record<number, number> = {
  [Tier.GPU]: Infinity,
  [Tier.DRAM]: 10e9,
  [Tier.DISK]: 1e9,
  [Tier.REMOTE]: 100e6,
};

/** A model resident on a device, as placement sees it. */
export interface ResidentModel {
  /** Model key ("org--name@rev"). */
  key: string;
  /** Bytes it holds in the device budget (weights plus its KV floor). */
  bytes: number;
  /** Requests running or queued for it: while > 0 it is never evicted. */
  running: number;
  /** Milliseconds since it last served a request (the least recently used leaves first). */
  idleMs: number;
}

/** One device of an agent as a byte budget of its GPU tier. */
export interface DeviceView {
  device: string;
  budgetBytes: number;
  freeBytes: number;
  /** The largest model the device could hold at all (its budget less one KV floor). */
  maxModelBytes: number;
  resident: ResidentModel[];
}

/** The model being placed. */
export interface PlacementModel {
  ref: CheckpointRef;
  key: string;
  /** Checkpoint bytes; 0 while unknown (then the agent's own figure is used, and memory is not judged). */
  bytes: number;
}

/** What placement needs to know about one agent. */
export interface PlacementCandidate {
  status: AgentStatus;
  /** Requests in flight from this orchestrator (fresher than the reported queue). */
  inflight: number;
  /** Why the agent cannot take the request at all, or undefined. */
  ineligible?: string;
  /** The scheduler knows better than the last heartbeat (a load it just finished, an unload it started). */
  tierOverride?: Tier;
  /** Its devices with what the scheduler knows newer than the heartbeat. Empty: the agent reports none
   * (an older agent, an external runtime); memory is then not judged, as before. */
  devices: readonly DeviceView[];
}

/**
 * Where the model would go on an agent, memory-wise:
 * - resident: already on a device (or on the GPU tier of an agent that reports no devices);
 * - fits: room on a device without evicting anything;
 * - evicts: room once `evictionBytes` of idle models leave;
 * - busy: every device that could hold it is full of models with running requests (wait, not an error);
 * - too-large: bigger than every device of the agent, or than its pinned DRAM pool (never, on this agent);
 * - unknown: the agent reports no devices (or one without a budget yet), or the model's size is unknown.
 */
export type Fit = "resident" | "fits" | "evicts" | "busy" | "too-large" | "unknown";

export interface MemoryFit {
  fit: Fit;
  /** Device the model is on or would go to ("" when unknown). */
  device: string;
  /** Bytes of idle models that would be evicted (fit "evicts" only). */
  evictionBytes: number;
  /** Their keys, least recently used first. */
  evicted: string[];
  /** For "busy" and "too-large": why, with the sizes. */
  reason: string;
  /** The most this agent could ever load (its largest device, capped by its pinned pool); Infinity when it does not say. */
  limitBytes: number;
}

export interface Score {
  agentId: string;
  cacheLevel: number;
  kvHitRate: number;
  queueLength: number;
  transferSeconds: number;
  cacheTerm: number;
  kvTerm: number;
  queueTerm: number;
  transferTerm: number;
  /** Seconds to read the evicted models back from DRAM (eviction_bytes / DRAM bandwidth). */
  evictionSeconds: number;
  evictionTerm: number;
  /** The model would go to a device that holds no model now (an idle GPU). */
  wakesDevice: boolean;
  wakeTerm: number;
  total: number;
  chosen: boolean;
  /** Why the agent cannot take the model now ("" when it can). */
  ineligibleReason: string;
  /** The agent could take it but for models with running requests filling its devices: wait, it frees up. */
  busy: boolean;
  /** Tier the model is in on that agent. */
  tier: Tier;
  /** Bandwidth used for the transfer term, bytes/s (Infinity for the GPU tier). */
  bandwidth: number;
  /** The memory side of the choice. */
  memory: MemoryFit;
}

/**
 * A ranking of agents for a model: scores lowest total first, eligible before ineligible, the first
 * eligible `chosen` (scoreAgents is thaw's; a simulation puts others in its place to compare).
 */
export type PlacementPolicy = (model: PlacementModel, candidates: readonly PlacementCandidate[], weights: PlacementWeights) => Score[];

/** cache_level of a tier: GPU 0, DRAM 1, disk 2, remote (or unknown) 3. */
export function cacheLevel(tier: Tier): number {
  switch (tier) {
    case Tier.GPU:
      return 0;
    case Tier.DRAM:
      return 1;
    case Tier.DISK:
      return 2;
    default:
      return 3;
  }
}

export function sameRef(a: CheckpointRef | undefined, b: CheckpointRef): boolean {
  return a !== undefined && a.modelId === b.modelId && (a.revision || "main") === (b.revision || "main");
}

/** The agent's cache entry for `ref`, if it holds it in any tier. */
export function findEntry(status: AgentStatus, ref: CheckpointRef): ModelCacheEntry | undefined {
  return status.models.find((m) => sameRef(m.ref, ref));
}

/** Measured bandwidth out of `tier` on the agent, or the fallback while it is unmeasured. */
export function tierBandwidth(status: AgentStatus, tier: Tier): number {
  if (tier === Tier.GPU) return Infinity;
  const reported = status.tiers.find((t) => t.tier === tier)?.bandwidthBytesPerSecond ?? 0;
  return reported > 0 ? reported : (FALLBACK_BANDWIDTH[tier] ?? FALLBACK_BANDWIDTH[Tier.REMOTE]);
}

/**
 * Where a model of `bytes`, not resident on the agent, would go among its `devices` (see Fit). A
 * device's KV floor is its budget less the largest model it can hold, so a model needs `bytes + floor`
 * of free budget. Among devices with room the fullest wins (packing keeps large holes for large
 * models); otherwise the device that must evict the fewest bytes, evicting idle models least
 * recently used first, as the agent does.
 */
export function memoryFit(devices: readonly DeviceView[], bytes: number, dramPoolBytes = 0): MemoryFit {
  // A device with no budget yet (its worker has not reported its memory) could hold anything: the
  // agent's devices are not judged until every one has a budget.
  const judged = devices.length > 0 && devices.every((d) => d.budgetBytes > 0);
  const largestDevice = judged ? Math.max(...devices.map(deviceLimit)) : Infinity;
  const limitBytes = Math.min(largestDevice, dramPoolBytes > 0 ? dramPoolBytes : Infinity);
  const verdict = (fit: Fit, reason = "", device = "", evictionBytes = 0, evicted: string[] = []): MemoryFit => ({ fit, device, evictionBytes, evicted, reason, limitBytes });
  if (bytes <= 0) return verdict("unknown");
  if (dramPoolBytes > 0 && bytes > dramPoolBytes) {
    return verdict("too-large", `needs ${formatBytes(bytes)}, more than its pinned DRAM pool (${formatBytes(dramPoolBytes)})`);
  }
  if (!judged) return verdict("unknown");
  const able = devices.filter((d) => deviceLimit(d) >= bytes);
  if (able.length === 0) return verdict("too-large", `needs ${formatBytes(bytes)}, more than its largest device can hold (${formatBytes(largestDevice)})`);

  const need = (d: DeviceView) => bytes + Math.max(0, d.budgetBytes - deviceLimit(d));
  const roomy = able.filter((d) => d.freeBytes >= need(d)).sort((a, b) => a.freeBytes - b.freeBytes || byName(a, b));
  if (roomy.length > 0) return verdict("fits", "", roomy[0].device);

  let best: MemoryFit | undefined;
  for (const d of [...able].sort(byName)) {
    // Models with running requests never leave; the least recently used idle ones leave first.
    const idle = d.resident.filter((r) => r.running === 0).sort((a, b) => b.idleMs - a.idleMs || (a.key < b.key ? -1 : 1));
    let free = d.freeBytes;
    let evictionBytes = 0;
    const evicted: string[] = [];
    for (const r of idle) {
      if (free >= need(d)) break;
      free += r.bytes;
      evictionBytes += r.bytes;
      evicted.push(r.key);
    }
    if (free < need(d)) continue;
    if (best === undefined || evictionBytes < best.evictionBytes) best = verdict("evicts", "", d.device, evictionBytes, evicted);
  }
  return best ?? verdict("busy", `busy: every device that could hold its ${formatBytes(bytes)} is full of models with running requests`);
}

/** The device a resident model is on ("" when no device lists it). */
function residentFit(devices: readonly DeviceView[], key: string): MemoryFit {
  const home = devices.find((d) => d.resident.some((r) => r.key === key));
  return { fit: "resident", device: home?.device ?? "", evictionBytes: 0, evicted: [], reason: "", limitBytes: Infinity };
}

/**
 * Scores every candidate for `model`. Returns eligible agents lowest total first (ties by agent id),
 * then ineligible ones; the first eligible is `chosen`.
 */
export function scoreAgents(model: PlacementModel, candidates: readonly PlacementCandidate[], w: PlacementWeights): Score[] {
  const scores = candidates.map((c): Score => {
    const entry = findEntry(c.status, model.ref);
    const tier = c.tierOverride ?? (entry && entry.tier !== Tier.UNSPECIFIED ? entry.tier : Tier.REMOTE);
    const level = cacheLevel(tier);
    // Residence in the GPU tier: no transfer, the KV cache may already hold the prompt's prefix.
    const kvHitRate = level === 0 ? clamp01(entry?.kvHitRate ?? 0) : 0;
    // Work ahead of this request on the agent.
    const queueLength = Math.max(c.status.queueLength, c.inflight);
    // Seconds to move the weights from the tier that holds them to the GPU.
    const bandwidth = tierBandwidth(c.status, tier);
    const size = model.bytes > 0 ? model.bytes : Number(entry?.bytes ?? 0n);
    const transferSeconds = level === 0 || size === 0 ? 0 : size / bandwidth;
    // Room on the GPU: resident or free costs nothing; an eviction costs what it takes to bring the
    // evicted models back from DRAM when they are asked for again.
    const memory = level === 0 ? residentFit(c.devices, model.key) : memoryFit(c.devices, size, Number(c.status.dramPoolBytes));
    const evictionSeconds = memory.evictionBytes === 0 ? 0 : memory.evictionBytes / tierBandwidth(c.status, Tier.DRAM);
    const wakesDevice = level > 0 && memory.device !== "" && c.devices.some((d) => d.device === memory.device && d.resident.length === 0);
    const cacheTerm = w.alpha * level;
    const kvTerm = -w.beta * kvHitRate;
    const queueTerm = w.gamma * queueLength;
    const transferTerm = w.delta * transferSeconds;
    const evictionTerm = w.epsilon * evictionSeconds;
    const wakeTerm = wakesDevice ? w.zeta : 0;
    const memoryReason = memory.fit === "busy" || memory.fit === "too-large" ? memory.reason : "";
    return {
      agentId: c.status.agentId,
      cacheLevel: level,
      kvHitRate,
      queueLength,
      transferSeconds,
      cacheTerm,
      kvTerm,
      queueTerm,
      transferTerm,
      evictionSeconds,
      evictionTerm,
      wakesDevice,
      wakeTerm,
      total: cacheTerm + kvTerm + queueTerm + transferTerm + evictionTerm + wakeTerm,
      chosen: false,
      ineligibleReason: c.ineligible ?? (memory.fit === "too-large" ? `too large: ${memoryReason}` : memoryReason),
      busy: c.ineligible === undefined && memory.fit === "busy",
      tier,
      bandwidth,
      memory,
    };
  });
  scores.sort((a, b) => {
    const ea = a.ineligibleReason === "" ? 0 : 1;
    const eb = b.ineligibleReason === "" ? 0 : 1;
    if (ea !== eb) return ea - eb;
    if (a.total !== b.total) return a.total - b.total;
    return a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0;
  });
  if (scores.length > 0 && scores[0].ineligibleReason === "") scores[0].chosen = true;
  return scores;
}

/** "1.5 GiB", "512 MiB", "4096 B". */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return "unlimited";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** The largest model a device could hold (its budget when it does not say). */
function deviceLimit(d: DeviceView): number {
  return d.maxModelBytes > 0 ? d.maxModelBytes : d.budgetBytes;
}

function byName(a: DeviceView, b: DeviceView): number {
  return a.device < b.device ? -1 : a.device > b.device ? 1 : 0;
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0;
}
