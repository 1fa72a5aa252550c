// Probes of agents. A new agent (or one at a new address) is placed on only once it proved itself
// there (agent-identity.ts). A suspect one — it failed a call — is not placed on until it answers a
// status probe (a heartbeat alone may lag a crash), and one whose call hung not for a hold as well.
import { Code, ConnectError } from "@connectrpc/connect";
import type { AgentStatus } from "../../gen/thaw/agent/v1/agent_pb.js";
import { SharedFlights } from "../../shared/shared-flight.js";
import type { AgentRecord, AgentRegistry } from "./agent-registry.js";
import type { AgentConnector } from "./links.js";

export interface AgentProbesDeps {
  agents: AgentRegistry;
  connector: AgentConnector;
  /** Takes a status a probe brought back, as a heartbeat. */
  heartbeat: (status: AgentStatus) => Promise<unknown>;
  /** Timeout of one probe, ms. */
  probeTimeoutMs: number;
  /** How long after a failed proof the next may be tried, ms. */
  verifyRetryMs: number;
  now: () => number;
  log: (message: string) => void;
}

export class AgentProbes {
  /** One probe per agent at a time. */
  private readonly probing = new SharedFlights<never, void>();
  /** One proof per agent at a time. */
  private readonly proving = new SharedFlights<never, void>();

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

  /**
   * Asks the agent to prove itself at the address it reports; resolves once it has, and rejects
   * (PERMISSION_DENIED, with why) when it has not. A failed proof is not retried for a while.
   */
  async verify(agent: AgentRecord): Promise<void> {
    const { agents, connector, now } = this.deps;
    if (agents.isVerified(agent)) return;
    if (now() < agent.nextVerifyMs) throw new ConnectError(`agent ${agent.id} is not verified: ${agent.unverified}`, Code.PermissionDenied);
    const address = agent.status.address;
    if (connector.identify === undefined) return agents.verified(agent.id, address);
    const identify = connector.identify.bind(connector);
    await this.proving.run(agent.id, async () => {
      try {
        const id = await identify(address, this.deps.probeTimeoutMs);
        if (id !== agent.id) throw new Error(`the agent at ${address} is ${JSON.stringify(id)}`);
        agents.verified(agent.id, address);
        this.deps.log(`agent ${agent.id} verified at ${address}`);
      } catch (err) {
        const reason = `could not verify it at ${address}: ${ConnectError.from(err).rawMessage}`;
        if (agent.unverified !== reason) this.deps.log(`agent ${agent.id}: ${reason}; not placed on`);
        agents.verifyFailed(agent.id, reason, now() + this.deps.verifyRetryMs);
      }
    });
    if (!agents.isVerified(agent)) throw new ConnectError(`agent ${agent.id} is not verified: ${agent.unverified}`, Code.PermissionDenied);
  }

  private probe(agent: AgentRecord): void {
    void this.probing.run(agent.id, async () => {
      try {
        const r = await this.deps.connector.client(agent.status.address).getStatus({}, { timeoutMs: this.deps.probeTimeoutMs });
        if (r.status) await this.deps.heartbeat(r.status).catch(() => undefined);
        if (this.deps.agents.clearSuspect(agent.id)) this.deps.log(`agent ${agent.id} answers again`);
      } catch {
        // still suspect; the next sweep probes again
      }
    });
  }
}
