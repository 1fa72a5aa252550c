// What each agent holds, as placement should see it: the last heartbeat (tiers per model, each
// device's budget and resident models), corrected by what the scheduler learnt since — loads it
// finished, unloads it started, models an agent evicted to make room, models an agent said it no
// longer holds — and by the requests this orchestrator is running on each model right now.
//
// A correction (an override) holds until a heartbeat confirms it, or until heartbeats received
// well after it say otherwise (the agent's own view wins then), or for OVERRIDE_MAX_MS at most.
import { Tier } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import type { AgentRecord } from "./agent-registry.js";
import { keyOf } from "./model-refs.js";
import { findEntry, type DeviceView, type ResidentModel } from "./placement.js";

const OVERRIDE_MAX_MS = 30_000;

interface Override {
  tier: Tier;
  setAtMs: number;
  /** For a load: the device it went to and its weight bytes (its KV floor comes from the device). */
  device: string;
  bytes: number;
}

/** Room a load in flight will take on a device, so two loads are not placed into one hole. */
interface Reservation {
  device: string;
  bytes: number;
}

interface Use {
  running: number;
  lastUseMs: number | undefined;
}

export interface ResidencyOptions {
  /** Interval agents heartbeat at, ms: an override two intervals older than a heartbeat yields to it. */
  heartbeatIntervalMs: number;
  now: () => number;
}

export class Residency {
  /** agent id → model key → … */
  private readonly overrides = new Map<string, Map<string, Override>>();
  private readonly reservations = new Map<string, Map<string, Reservation>>();
  private readonly uses = new Map<string, Map<string, Use>>();

  constructor(private readonly options: ResidencyOptions) {}

  /** A heartbeat arrived: corrections it confirms end, and so do those it contradicts well after they were made. */
  heartbeat(agent: AgentRecord): void {
    const overrides = this.overrides.get(agent.id);
    if (overrides === undefined) return;
    const now = this.options.now();
    for (const [key, o] of overrides) {
      const entry = agent.status.models.find((m) => m.ref !== undefined && keyOf(m.ref) === key);
      const reported = entry?.tier ?? Tier.REMOTE;
      const confirmed = (o.tier === Tier.GPU) === (reported === Tier.GPU);
      if (confirmed || now - o.setAtMs > 2 * this.options.heartbeatIntervalMs) overrides.delete(key);
    }
    if (overrides.size === 0) this.overrides.delete(agent.id);
  }

  /** The fastest tier holding `ref` on the agent (REMOTE when none does). */
  tier(agent: AgentRecord, ref: CheckpointRef): Tier {
    const o = this.override(agent.id, keyOf(ref));
    if (o !== undefined) return o.tier;
    const e = findEntry(agent.status, ref);
    return e && e.tier !== Tier.UNSPECIFIED ? e.tier : Tier.REMOTE;
  }

  /** The scheduler knows better than the last heartbeat about some model of the agent. */
  corrects(agentId: string): boolean {
    return this.overrides.has(agentId);
  }

  /** The corrected tier, when the scheduler knows better than the last heartbeat. */
  tierOverride(agentId: string, ref: CheckpointRef): Tier | undefined {
    return this.override(agentId, keyOf(ref))?.tier;
  }

  /** The model is now on the agent's GPU (a load finished), on `device` with `bytes` of weights. */
  loaded(agentId: string, ref: CheckpointRef, device: string, bytes: number): void {
    this.set(agentId, keyOf(ref), { tier: Tier.GPU, setAtMs: this.options.now(), device, bytes });
  }

  /** The model is no longer on the agent's GPU (unloaded, evicted, or the agent said it is not loaded); DRAM keeps it. */
  left(agentId: string, ref: CheckpointRef): void {
    this.set(agentId, keyOf(ref), { tier: Tier.DRAM, setAtMs: this.options.now(), device: "", bytes: 0 });
  }

  /** Forget any correction for the model: the heartbeat's word stands again (an unload that failed). */
  clear(agentId: string, ref: CheckpointRef): void {
    this.overrides.get(agentId)?.delete(keyOf(ref));
  }

  /** A load of `bytes` is heading for `device`: its room counts as taken until the returned function is called. */
  reserve(agentId: string, ref: CheckpointRef, device: string, bytes: number): () => void {
    const key = keyOf(ref);
    const forAgent = mapOf(this.reservations, agentId);
    const reservation = { device, bytes };
    forAgent.set(key, reservation);
    return () => {
      if (forAgent.get(key) === reservation) forAgent.delete(key);
      if (forAgent.size === 0 && this.reservations.get(agentId) === forAgent) this.reservations.delete(agentId);
    };
  }

  /** A request starts running the model on the agent; the returned function ends it (once). */
  begin(agentId: string, ref: CheckpointRef): () => void {
    const key = keyOf(ref);
    const use = mapOf(this.uses, agentId).get(key) ?? { running: 0, lastUseMs: undefined };
    use.running++;
    mapOf(this.uses, agentId).set(key, use);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      use.running--;
      use.lastUseMs = this.options.now();
    };
  }

  /** Requests this orchestrator runs on the model on that agent. */
  running(agentId: string, ref: CheckpointRef): number {
    return this.uses.get(agentId)?.get(keyOf(ref))?.running ?? 0;
  }

  /** When this orchestrator last finished a request of the model on that agent. */
  lastUse(agentId: string, ref: CheckpointRef): number | undefined {
    return this.uses.get(agentId)?.get(keyOf(ref))?.lastUseMs;
  }

  /** The model left the agent for good (unloaded): forget when it was last used. */
  forgetUse(agentId: string, ref: CheckpointRef): void {
    const forAgent = this.uses.get(agentId);
    const key = keyOf(ref);
    if (forAgent?.get(key)?.running === 0) forAgent.delete(key);
  }

  /**
   * The agent's devices as placement should see them: the heartbeat's, without the models that left
   * since, with the models loaded since and the loads in flight, and with this orchestrator's running
   * requests and last uses (fresher than the agent's figures). Empty when the agent reports no devices.
   */
  devices(agent: AgentRecord): DeviceView[] {
    if (agent.status.devices.length === 0) return [];
    const now = this.options.now();
    const sinceHeartbeat = Math.max(0, now - agent.lastHeartbeatMs);
    const overrides = this.overrides.get(agent.id);
    const reservations = this.reservations.get(agent.id);
    const uses = this.uses.get(agent.id);
    const freshUse = (key: string, reportedRunning: number, reportedIdleMs: number): Pick<ResidentModel, "running" | "idleMs"> => {
      const use = uses?.get(key);
      const running = Math.max(reportedRunning, use?.running ?? 0);
      const idleMs = running > 0 ? 0 : Math.min(reportedIdleMs, use?.lastUseMs === undefined ? Infinity : now - use.lastUseMs);
      return { running, idleMs };
    };
    return agent.status.devices.map((d) => {
      const floor = Math.max(0, Number(d.budgetBytes) - Number(d.maxModelBytes));
      let free = Number(d.freeBytes);
      const resident: ResidentModel[] = [];
      for (const r of d.resident) {
        if (r.ref === undefined) continue;
        const key = keyOf(r.ref);
        const o = this.override(agent.id, key, overrides);
        if (o !== undefined && o.tier !== Tier.GPU) {
          free += Number(r.bytes); // left since the heartbeat
          continue;
        }
        resident.push({ key, bytes: Number(r.bytes), ...freshUse(key, r.running, Number(r.idleMs) + sinceHeartbeat) });
      }
      const present = (key: string) => resident.some((r) => r.key === key);
      for (const [key, o] of overrides ?? []) {
        if (o.tier !== Tier.GPU || o.device !== d.device || present(key) || this.override(agent.id, key, overrides) === undefined) continue;
        resident.push({ key, bytes: o.bytes + floor, ...freshUse(key, 0, Infinity) });
        free -= o.bytes + floor;
      }
      for (const [key, r] of reservations ?? []) {
        if (r.device !== d.device || present(key)) continue;
        resident.push({ key, bytes: r.bytes + floor, running: 1, idleMs: 0 });
        free -= r.bytes + floor;
      }
      return { device: d.device, budgetBytes: Number(d.budgetBytes), freeBytes: Math.max(0, free), maxModelBytes: Number(d.maxModelBytes), resident };
    });
  }

  private override(agentId: string, key: string, forAgent = this.overrides.get(agentId)): Override | undefined {
    const o = forAgent?.get(key);
    if (o === undefined) return undefined;
    if (this.options.now() - o.setAtMs > OVERRIDE_MAX_MS) {
      forAgent!.delete(key);
      return undefined;
    }
    return o;
  }

  private set(agentId: string, key: string, o: Override): void {
    mapOf(this.overrides, agentId).set(key, o);
  }
}

function mapOf<V>(outer: Map<string, Map<string, V>>, id: string): Map<string, V> {
  let inner = outer.get(id);
  if (inner === undefined) {
    inner = new Map();
    outer.set(id, inner);
  }
  return inner;
}
