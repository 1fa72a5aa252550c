// Suspect agents: one that failed a call is not placed on until it answers a status probe (a
// heartbeat alone may lag a crash), and one whose call hung is not placed on for a hold as well.
import type { AgentStatus } from "../../gen/thaw/agent/v1/agent_pb.js";
import { SharedFlights } from "../../shared/shared-flight.js";
import type { AgentRecord, AgentRegistry } from "./agent-registry.js";
import type { AgentConnector } from "./links.js";

export interface AgentProbesDeps {
  agents: AgentRegistry;
  connector: AgentConnector;
  /** Takes a status a probe brought back, as a heartbeat. */
  heartbeat: (status: AgentStatus) => void;
  /** Timeout of one probe, ms. */
  probeTimeoutMs: number;
  log: (message: string) => void;
}

export class AgentProbes {
  /** One probe per agent at a time. */
  private readonly probing = new SharedFlights<never, void>();

  constructor(private readonly deps: AgentProbesDeps) {}

  /** Marks the agent suspect (not placed on), for at least `holdMs`, and probes it. */
  suspect(agent: AgentRecord, reason: string, holdMs = 0): void {
    this.deps.agents.markSuspect(agent.id, reason, holdMs);
    this.probe(agent);
  }

  /** Probes every live suspect agent (the periodic sweep calls this). */
  probeSuspects(): void {
    for (const agent of this.deps.agents.suspects()) if (this.deps.agents.isLive(agent)) this.probe(agent);
  }

  private probe(agent: AgentRecord): void {
    void this.probing.run(agent.id, async () => {
      try {
        const r = await this.deps.connector.client(agent.status.address).getStatus({}, { timeoutMs: this.deps.probeTimeoutMs });
        if (r.status) this.deps.heartbeat(r.status);
        if (this.deps.agents.clearSuspect(agent.id)) this.deps.log(`agent ${agent.id} answers again`);
      } catch {
        // still suspect; the next sweep probes again
      }
    });
  }
}
