// Keep-alive: a model idle on an agent's GPU for longer than its keep-alive (the registration's,
// else the default; a model no longer registered has the default) is unloaded; its DRAM and disk
// copies stay. Never a model with requests running or queued, or being loaded or unloaded.
import { Tier } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { AgentRegistry } from "./agent-registry.js";
import type { ModelLoads } from "./model-loads.js";
import type { ModelRegistry, RegisteredModel } from "./model-registry.js";
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

  /** Starts the unloads that are due (they run on their own). */
  sweep(): void {
    const { agents, residency, loads } = this.deps;
    const now = this.deps.now();
    const registered = new Map<string, RegisteredModel>(this.deps.models.list().map((m) => [keyOf(refOf(m)), m]));
    for (const agent of agents.usable()) {
      for (const entry of agent.status.models) {
        const ref = entry.ref;
        if (ref === undefined || residency.tier(agent, ref) !== Tier.GPU) continue;
        if (residency.running(agent.id, ref) > 0 || entry.queueLength > 0 || loads.busy(agent.id, ref)) continue;
        const model = registered.get(keyOf(ref));
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
