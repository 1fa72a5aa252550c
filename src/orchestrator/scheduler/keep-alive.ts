// Keep-alive: a model idle on an agent's GPU for longer than its keep-alive (the registration's,
// else the default; a model no longer registered has the default) is unloaded; its DRAM and disk
// copies stay. Never a model with requests running or queued, or being loaded or unloaded.
import { Tier } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { AgentRegistry } from "./agent-registry.js";
import type { ModelLoads } from "./model-loads.js";
import type { ModelRegistry } from "./model-registry.js";
import { keyOf, refOf } from "./model-refs.js";
import type { Residency } from "./residency.js";

export interface KeepAliveDeps {
  agents: AgentRegistry;
  models: ModelRegistry;
  residency: Residency;
  loads: ModelLoads;
  /** Default keep-alive, seconds. */
  keepAliveSeconds: number;
  now: () => number;
}

export class KeepAlive {
  constructor(private readonly deps: KeepAliveDeps) {}

  /**
   * Starts the unloads that are due (they run on their own). Runs every second over every agent, so
   * it looks only at what can be on a GPU: each model the heartbeat lists there, or that the
   * scheduler loaded since (an override), found without a search (an agent may list hundreds of
   * models on disk; a registry thousands).
   */
  sweep(): void {
    const { agents, models, residency, loads } = this.deps;
    const now = this.deps.now();
    for (const agent of agents.usable()) {
      const corrected = residency.corrects(agent.id);
      for (const entry of agent.status.models) {
        const ref = entry.ref;
        if (ref === undefined) continue;
        // residency.tier() without its search for the entry: the scheduler's correction, else the heartbeat's word.
        const tier = corrected ? (residency.tierOverride(agent.id, ref) ?? entry.tier) : entry.tier;
        if (tier !== Tier.GPU) continue;
        if (residency.running(agent.id, ref) > 0 || entry.queueLength > 0 || loads.busy(agent.id, ref)) continue;
        const registration = models.get(ref.modelId);
        const model = registration !== undefined && keyOf(refOf(registration)) === keyOf(ref) ? registration : undefined;
        const ttlMs = (model?.spec.keepAliveSeconds || this.deps.keepAliveSeconds) * 1000;
        const reportedIdle = Number(entry.idleMs) + (now - agent.lastHeartbeatMs);
        const used = residency.lastUse(agent.id, ref);
        const idle = used === undefined ? reportedIdle : Math.min(reportedIdle, now - used);
        if (idle <= ttlMs) continue;
        void loads.unload(agent, ref, model === undefined ? "unregistered" : "keep_alive");
      }
    }
  }
}
