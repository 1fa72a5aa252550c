// The placement policies compared on one workload. Each ranks the same candidates the real Placer
// gathers; all share thaw's memory verdicts (what fits, what would be evicted, what can never fit),
// so they differ only in the choice among agents that can take the model:
//   thaw            the cost of placement.ts (cache level, KV hits, queue, transfer, eviction, wake)
//   thaw-before     the same as it was before the simulator: α = 1, no wake term
//   round-robin     a warm agent (model resident) in turn; else the next agent in a global rotation
//   least-loaded    a warm agent with the fewest requests in flight; else the least loaded agent
//   serverlessllm   ServerlessLLM's startup-time estimate (Fu et al., OSDI 2024, §5, migration off):
//                   the least (queueing + model bytes / bandwidth of the fastest tier holding it)
import { scoreAgents, type PlacementPolicy, type Score } from "../../src/orchestrator/scheduler/placement.js";

export type PolicyName = "thaw" | "thaw-before" | "round-robin" | "least-loaded" | "serverlessllm";
export const POLICIES: PolicyName[] = ["thaw", "thaw-before", "serverlessllm", "least-loaded", "round-robin"];

/** A fresh policy (round-robin keeps its rotation). */
export function makePolicy(name: PolicyName): PlacementPolicy {
  switch (name) {
    case "thaw":
      return scoreAgents;
    case "thaw-before":
      // thaw's cost as it was before the simulator (α = 1, no wake term): kept to show what changed.
      return (model, candidates, weights) => scoreAgents(model, candidates, { ...weights, alpha: 1, zeta: 0 });
    case "round-robin": {
      let turn = 0;
      return reorder((eligible) => {
        const warm = eligible.filter((s) => s.cacheLevel === 0);
        const pool = warm.length > 0 ? warm : eligible;
        const first = turn++ % pool.length;
        return [...pool.slice(first), ...pool.slice(0, first), ...eligible.filter((s) => !pool.includes(s))];
      });
    }
    case "least-loaded":
      return reorder((eligible) => {
        const warm = eligible.filter((s) => s.cacheLevel === 0);
        const byLoad = (a: Score, b: Score) => a.queueLength - b.queueLength || byId(a, b);
        return [...warm.sort(byLoad), ...eligible.filter((s) => s.cacheLevel !== 0).sort(byLoad)];
      });
    case "serverlessllm":
      return reorder((eligible) => {
        // Queueing: the requests ahead on the agent, each taking the load's turn (as thaw's γ does);
        // loading: bytes over the measured bandwidth of the tier that holds the model (0 when resident).
        const estimate = (s: Score) => 0.25 * s.queueLength + s.transferSeconds;
        return [...eligible].sort((a, b) => estimate(a) - estimate(b) || byId(a, b));
      });
  }
}

/** Wraps an ordering of the eligible scores: ineligible ones follow, the first eligible is chosen. */
function reorder(order: (eligible: Score[]) => Score[]): PlacementPolicy {
  return (model, candidates, weights) => {
    const scores = scoreAgents(model, candidates, weights).map((s) => ({ ...s, chosen: false }));
    const eligible = scores.filter((s) => s.ineligibleReason === "").sort(byId);
    const ranked = [...order(eligible), ...scores.filter((s) => s.ineligibleReason !== "")];
    if (ranked.length > 0 && ranked[0].ineligibleReason === "") ranked[0].chosen = true;
    return ranked;
  };
}

function byId(a: Score, b: Score): number {
  return a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0;
}
