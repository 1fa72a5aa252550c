// Placing a request: gathers placement's inputs (every agent's heartbeat, corrected by residency,
// and this orchestrator's in-flight counts), ranks the agents with the pure scoring of placement.ts,
// and takes admission slots on the best agent that has them. What a request does when none does:
// - every agent that could take it is full (slots) or busy (devices full of running models): it
//   waits in the admission queue;
// - no agent is usable (none yet, all expired or suspect): it waits up to agentWaitMs for one,
//   then fails with UNAVAILABLE;
// - the model is larger than every agent's largest device or pinned pool: it fails at once with
//   FAILED_PRECONDITION naming both sizes (an HTTP 400: retrying cannot help).
import { Code, ConnectError } from "@connectrpc/connect";
import type { OrchestratorMetrics } from "../metrics.js";
import type { Admission } from "./admission.js";
import type { AgentRecord, AgentRegistry } from "./agent-registry.js";
import type { Conversions } from "./conversions.js";
import type { AgentClient, AgentConnector } from "./links.js";
import type { RegisteredModel } from "./model-registry.js";
import { keyOf, refOf } from "./model-refs.js";
import { scoreAgents, type PlacementCandidate, type PlacementPolicy, type PlacementWeights, type Score } from "./placement.js";
import type { Residency } from "./residency.js";
import { realTimers, type Timers } from "./timers.js";

export interface PlacerDeps {
  agents: AgentRegistry;
  residency: Residency;
  admission: Admission;
  conversions: Conversions;
  connector: AgentConnector;
  metrics: OrchestratorMetrics;
  weights: PlacementWeights;
  /** How long a request waits for an agent to appear when none is usable, ms. */
  agentWaitMs: number;
  now: () => number;
  /** Node's timers unless given (a simulation's virtual clock). */
  timers?: Timers;
  /** How agents are ranked: thaw's cost (scoreAgents) unless given (a simulation comparing policies). */
  policy?: PlacementPolicy;
}

/** A request placed on an agent, holding admission slots there. */
export interface Placement {
  agent: AgentRecord;
  client: AgentClient;
  score: Score;
}

export class Placer {
  constructor(private readonly deps: PlacerDeps) {}

  /** Every known agent's score for the model, lowest total first; agents in `exclude` are ineligible. */
  score(model: RegisteredModel, exclude: ReadonlySet<string> = new Set()): Score[] {
    const { agents, residency, admission } = this.deps;
    const ref = refOf(model);
    const now = this.deps.now();
    const candidates: PlacementCandidate[] = agents.all().map((a) => {
      let ineligible: string | undefined;
      if (!agents.isLive(a)) ineligible = `expired: no heartbeat for ${((now - a.lastHeartbeatMs) / 1000).toFixed(1)}s`;
      else if (!agents.isVerified(a)) ineligible = `unverified: ${a.unverified ?? "its proof is pending"}`;
      else if (a.suspect !== undefined) ineligible = `suspect: ${a.suspect}`;
      else if (exclude.has(a.id)) ineligible = "failed this request already";
      return { status: a.status, inflight: admission.inflight(a.id), ineligible, tierOverride: residency.tierOverride(a.id, ref), devices: residency.devices(a) };
    });
    const policy = this.deps.policy ?? scoreAgents;
    return policy({ ref, key: keyOf(ref), bytes: this.deps.conversions.sizeOf(model) }, candidates, this.deps.weights);
  }

  /**
   * Places a request of `slots` choices on the best agent with free slots and takes them (see the
   * top of this file for what happens when none has). `waitForAgents` false: no wait for agents to
   * appear (a retry elsewhere fails at once when there is no elsewhere).
   */
  async place(model: RegisteredModel, slots: number, exclude: ReadonlySet<string>, signal: AbortSignal, waitForAgents: boolean): Promise<Placement> {
    const waitMs = waitForAgents ? this.deps.agentWaitMs : 0;
    const deadline = this.deps.now() + waitMs;
    // At the deadline the request must look once more (and fail) even if nothing else changes.
    const timers = this.deps.timers ?? realTimers;
    const timer = waitMs > 0 ? timers.setTimeout(() => this.deps.admission.retryWaiting(), waitMs) : undefined;
    // Requests alike in everything placement looks at succeed or wait alike (later ones have later deadlines).
    const kind = `${keyOf(refOf(model))}|${slots}|${waitMs > 0}|${[...exclude].sort().join(",")}`;
    try {
      return await this.deps.admission.admit(() => this.tryPlace(model, slots, exclude, deadline), signal, kind);
    } finally {
      timers.clearTimeout(timer);
    }
  }

  private tryPlace(model: RegisteredModel, slots: number, exclude: ReadonlySet<string>, deadline: number): Placement | undefined {
    const { agents, admission } = this.deps;
    const scores = this.score(model, exclude);
    if (scores.length > 0 && scores.every((s) => s.memory.fit === "too-large")) throw this.fitsNowhere(model, scores);
    const eligible = scores.filter((s) => s.ineligibleReason === "");
    for (const s of eligible) {
      if (!admission.tryAcquire(s.agentId, slots)) continue;
      const agent = agents.get(s.agentId)!;
      this.deps.metrics.placed(model.spec.id, s.cacheLevel);
      return { agent, client: this.deps.connector.client(agent.status.address), score: s };
    }
    if (eligible.length > 0 || scores.some((s) => s.busy)) return undefined; // slots or room free up as requests finish
    if (this.deps.now() < deadline) return undefined; // an agent may appear
    const why = scores.length === 0 ? "no agent has sent a heartbeat" : scores.map((s) => `${s.agentId}: ${s.ineligibleReason}`).join("; ");
    throw new ConnectError(`no agent available for model ${model.spec.id} (${why})`, Code.Unavailable);
  }

  /** The model is larger than what any agent can ever load: a client error naming both sizes. */
  private fitsNowhere(model: RegisteredModel, scores: Score[]): ConnectError {
    const roomiest = scores.reduce((a, b) => (b.memory.limitBytes > a.memory.limitBytes ? b : a));
    return new ConnectError(
      `model ${model.spec.id} fits no agent: on agent ${roomiest.agentId}, the roomiest of ${scores.length}, it ${roomiest.memory.reason}`,
      Code.FailedPrecondition,
    );
  }
}
