// Agents as the scheduler knows them: soft state rebuilt from heartbeats. An agent is placed on
// only once it proved itself at the address it reports (agent-identity.ts): a heartbeat alone,
// which anyone might send, never attracts requests. An agent whose
// heartbeats stop for longer than the expiry is not placed on; one that failed a call is "suspect"
// (not placed on) until a status probe answers again — and, after a call that hung, not before a
// hold has passed, since a hung load says nothing about whether GetStatus answers; one silent for
// much longer is forgotten.
import { Code, ConnectError } from "@connectrpc/connect";
import type { AgentStatus } from "../../gen/thaw/agent/v1/agent_pb.js";

export interface AgentRecord {
  readonly id: string;
  status: AgentStatus;
  lastHeartbeatMs: number;
  firstSeenMs: number;
  /** Why the agent is not placed on after a failed call (cleared by a successful probe), or undefined. */
  suspect?: string;
  /** A probe clears the suspicion only from this time on (ms; 0: at once). */
  suspectUntilMs: number;
  /** The address the agent proved itself at; it is placed on only while it reports that address. */
  verifiedAddress?: string;
  /** Why the last proof failed (for ExplainPlacement), and when the next may be tried (ms). */
  unverified?: string;
  nextVerifyMs: number;
}

export interface AgentRegistryOptions {
  /** Heartbeats older than this make an agent expired. */
  expiryMs: number;
  /** Expired agents are dropped from listings after this long without a heartbeat. */
  forgetMs: number;
  now?: () => number;
}

export class AgentRegistry {
  private readonly agents = new Map<string, AgentRecord>();
  private readonly listeners = new Set<() => void>();
  private readonly now: () => number;

  constructor(private readonly options: AgentRegistryOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Heartbeats older than this make an agent expired. */
  get expiryMs(): number {
    return this.options.expiryMs;
  }

  /** Records a heartbeat; returns the record. */
  heartbeat(status: AgentStatus): AgentRecord {
    const id = status.agentId.trim();
    if (id === "") throw new ConnectError("heartbeat without agent_id", Code.InvalidArgument);
    if (status.address.trim() === "") throw new ConnectError(`agent ${id}: heartbeat without address`, Code.InvalidArgument);
    const now = this.now();
    let record = this.agents.get(id);
    const wasLive = record !== undefined && this.isLive(record);
    if (record === undefined) {
      record = { id, status, lastHeartbeatMs: now, firstSeenMs: now, suspectUntilMs: 0, nextVerifyMs: 0 };
      this.agents.set(id, record);
    } else {
      record.status = status;
      record.lastHeartbeatMs = now;
    }
    if (!wasLive) this.changed();
    return record;
  }

  get(id: string): AgentRecord | undefined {
    return this.agents.get(id);
  }

  /** Heartbeat current (suspect or not). */
  isLive(record: AgentRecord): boolean {
    return this.now() - record.lastHeartbeatMs <= this.options.expiryMs;
  }

  /** Proved itself at the address it reports now. */
  isVerified(record: AgentRecord): boolean {
    return record.verifiedAddress !== undefined && record.verifiedAddress === record.status.address;
  }

  /** Verified, live and not suspect: may be placed on. */
  isUsable(record: AgentRecord): boolean {
    return record.suspect === undefined && this.isLive(record) && this.isVerified(record);
  }

  /** The agent proved itself at `address`. */
  verified(id: string, address: string): void {
    const r = this.agents.get(id);
    if (r === undefined) return;
    r.verifiedAddress = address;
    r.unverified = undefined;
    r.nextVerifyMs = 0;
    if (this.isUsable(r)) this.changed();
  }

  /** The proof failed: not placed on, and not tried again before `retryAtMs`. */
  verifyFailed(id: string, reason: string, retryAtMs: number): void {
    const r = this.agents.get(id);
    if (r === undefined) return;
    r.unverified = reason;
    r.nextVerifyMs = retryAtMs;
  }

  /** Every known agent ordered by id, after dropping those silent for longer than forgetMs. */
  all(): AgentRecord[] {
    const now = this.now();
    for (const [id, r] of this.agents) if (now - r.lastHeartbeatMs > this.options.forgetMs) this.agents.delete(id);
    return [...this.agents.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  usable(): AgentRecord[] {
    return this.all().filter((r) => this.isUsable(r));
  }

  /** Not placed on until a probe clears it, and not before `holdMs` from now. */
  markSuspect(id: string, reason: string, holdMs = 0): void {
    const r = this.agents.get(id);
    if (r === undefined) return;
    r.suspect = reason;
    r.suspectUntilMs = Math.max(r.suspectUntilMs, this.now() + holdMs);
  }

  /** A probe answered: the agent is usable again unless its hold has not passed. Returns whether it was cleared. */
  clearSuspect(id: string): boolean {
    const r = this.agents.get(id);
    if (r === undefined || r.suspect === undefined || this.now() < r.suspectUntilMs) return false;
    r.suspect = undefined;
    r.suspectUntilMs = 0;
    this.changed();
    return true;
  }

  suspects(): AgentRecord[] {
    return [...this.agents.values()].filter((r) => r.suspect !== undefined);
  }

  /** Calls `listener` when an agent becomes usable (a new one, one back from expiry, a cleared suspect). */
  onUsable(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const l of [...this.listeners]) l();
  }
}
