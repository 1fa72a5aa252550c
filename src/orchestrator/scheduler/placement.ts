// The placement cost of DESIGN §5, term by term; the lowest total wins:
//   score(a) = α·cache_level(a,m) − β·kv_hit_rate(a,m) + γ·queue_len(a) + δ·size(m)/bandwidth(a,tier)
// Pure: the scheduler gathers the inputs, this ranks them.
import { Tier, type AgentStatus, type ModelCacheEntry } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";

export interface PlacementWeights {
  alpha: number;
  beta: number;
  gamma: number;
  delta: number;
}

export const DEFAULT_WEIGHTS: PlacementWeights = { alpha: 1, beta: 0.5, gamma: 0.25, delta: 1 };

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

/** What placement needs to know about one agent. */
export interface PlacementCandidate {
  status: AgentStatus;
  /** Requests in flight from this orchestrator (fresher than the reported queue). */
  inflight: number;
  /** Why the agent cannot take the request at all, or undefined. */
  ineligible?: string;
  /** The scheduler knows better than the last heartbeat (a load it just finished, an unload it started). */
  tierOverride?: Tier;
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
  total: number;
  chosen: boolean;
  ineligibleReason: string;
  /** Tier the model is in on that agent. */
  tier: Tier;
  /** Bandwidth used for the transfer term, bytes/s (Infinity for the GPU tier). */
  bandwidth: number;
}

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
 * Scores every candidate for a model of `sizeBytes` (0 when unknown). Returns eligible agents
 * lowest total first (ties by agent id), then ineligible ones; the first eligible is `chosen`.
 */
export function scoreAgents(ref: CheckpointRef, sizeBytes: number, candidates: readonly PlacementCandidate[], w: PlacementWeights): Score[] {
  const scores = candidates.map((c): Score => {
    const entry = findEntry(c.status, ref);
    const tier = c.tierOverride ?? (entry && entry.tier !== Tier.UNSPECIFIED ? entry.tier : Tier.REMOTE);
    const level = cacheLevel(tier);
    const kvHitRate = level === 0 ? clamp01(entry?.kvHitRate ?? 0) : 0;
    const queueLength = Math.max(c.status.queueLength, c.inflight);
    const bandwidth = tierBandwidth(c.status, tier);
    const size = sizeBytes > 0 ? sizeBytes : Number(entry?.bytes ?? 0n);
    const transferSeconds = level === 0 || size === 0 ? 0 : size / bandwidth;
    const cacheTerm = w.alpha * level;
    const kvTerm = -w.beta * kvHitRate;
    const queueTerm = w.gamma * queueLength;
    const transferTerm = w.delta * transferSeconds;
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
      total: cacheTerm + kvTerm + queueTerm + transferTerm,
      chosen: false,
      ineligibleReason: c.ineligible ?? "",
      tier,
      bandwidth,
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

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0;
}
