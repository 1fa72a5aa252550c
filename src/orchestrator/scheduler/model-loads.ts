// Cold start and its reverse: the one place that moves models onto and off agents' GPUs. Agents do
// not load on their own (an Infer for a model they do not hold answers "not loaded"), so every load
// is decided here, where placement and metrics see it.
//
// - A load fetches missing chunks first (spread over idle agents when the model is only in the
//   store; the chosen agent then takes their chunks from them as peers), then calls LoadModel.
// - Concurrent requests for one model on one agent share one load; a request for a model being
//   unloaded waits for the unload, then loads it again.
// - LoadModel and DownloadChunks must keep reporting: silence for `progressTimeoutMs` aborts the
//   call and makes the agent suspect for at least `suspectHoldMs` (the request is retried elsewhere).
// - A load nobody waits for any more (its requests were cancelled) finishes: it leaves the model
//   resident for the next request, the agent would finish it anyway, and its result (device,
//   evictions) keeps the scheduler's view right. The progress timeout still bounds it.
import { Code, ConnectError } from "@connectrpc/connect";
import { Tier, type TierTiming } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { SharedFlights } from "../../shared/shared-flight.js";
import type { OrchestratorMetrics } from "../metrics.js";
import type { Admission } from "./admission.js";
import type { AgentProbes } from "./agent-probes.js";
import type { AgentRecord, AgentRegistry } from "./agent-registry.js";
import type { Conversions } from "./conversions.js";
import type { AgentConnector } from "./links.js";
import type { RegisteredModel } from "./model-registry.js";
import { agentModelKey, keyOf, refOf, tierName } from "./model-refs.js";
import { cacheLevel } from "./placement.js";
import { isNoProgress, withProgressTimeout } from "./progress-timeout.js";
import type { Residency } from "./residency.js";
import type { Timers } from "./timers.js";

export interface ModelLoadsDeps {
  agents: AgentRegistry;
  residency: Residency;
  conversions: Conversions;
  /** To find idle agents that can help download. */
  admission: Admission;
  connector: AgentConnector;
  probes: AgentProbes;
  metrics: OrchestratorMetrics;
  now: () => number;
  log: (message: string) => void;
  /** LoadModel and DownloadChunks silent this long are aborted, ms. */
  progressTimeoutMs: number;
  /** An agent whose call hung stays suspect at least this long, ms. */
  suspectHoldMs: number;
  /** Node's timers unless given (a simulation's virtual clock). */
  timers?: Timers;
}

/** Timeout of an UnloadModel call, ms (it frees memory and returns). */
const UNLOAD_TIMEOUT_MS = 30_000;

export class ModelLoads {
  private readonly loads = new SharedFlights<never, void>("finish");
  private readonly unloads = new SharedFlights<never, void>("finish");

  constructor(private readonly deps: ModelLoadsDeps) {}

  /** A load or an unload of the model is running on the agent. */
  busy(agentId: string, ref: CheckpointRef): boolean {
    const key = agentModelKey(agentId, ref);
    return this.loads.has(key) || this.unloads.has(key);
  }

  /**
   * Brings the model onto the agent's GPU unless it is there. `device`: where placement expects it
   * to go ("" when unknown); its room counts as taken while the load runs.
   */
  async ensureLoaded(model: RegisteredModel, agent: AgentRecord, device: string, signal: AbortSignal): Promise<void> {
    const ref = refOf(model);
    const key = agentModelKey(agent.id, ref);
    if (this.unloads.has(key)) await this.unloads.run(key, async () => {}, undefined, signal); // joins the running unload
    if (this.deps.residency.tier(agent, ref) === Tier.GPU) return;
    await this.loads.run(key, () => this.load(model, ref, agent, device), undefined, signal);
  }

  /** Unloads a model from an agent's GPU (DRAM and disk copies stay). */
  unload(agent: AgentRecord, ref: CheckpointRef, reason: string): Promise<void> {
    const { residency, metrics, log } = this.deps;
    return this.unloads.run(agentModelKey(agent.id, ref), async () => {
      residency.left(agent.id, ref); // placement must not count on it from now
      try {
        await this.deps.connector.client(agent.status.address).unloadModel({ ref, downTo: Tier.GPU }, { timeoutMs: UNLOAD_TIMEOUT_MS });
        residency.left(agent.id, ref);
        residency.forgetUse(agent.id, ref);
        metrics.unloads.inc({ reason });
        log(`unloaded ${keyOf(ref)} from ${agent.id} (${reason})`);
      } catch (err) {
        residency.clear(agent.id, ref);
        log(`unload of ${keyOf(ref)} on ${agent.id} failed: ${ConnectError.from(err).message}`);
      }
    });
  }

  private async load(model: RegisteredModel, ref: CheckpointRef, agent: AgentRecord, device: string): Promise<void> {
    const { agents, residency, metrics } = this.deps;
    const holders = agents
      .usable()
      .filter((a) => a.id !== agent.id && cacheLevel(residency.tier(a, ref)) <= 2)
      .map((a) => a.status.address);
    if (residency.tier(agent, ref) === Tier.REMOTE && holders.length === 0 && model.spec.launchCommand.length === 0) {
      holders.push(...(await this.spreadDownloads(ref, agent)));
    }
    const bytes = this.deps.conversions.sizeOf(model);
    const unreserve = device !== "" ? residency.reserve(agent.id, ref, device, bytes) : () => {};
    const started = this.deps.now();
    const client = this.deps.connector.client(agent.status.address);
    // The request's Infer follows at once: the agent holds the model for it against other loads.
    const request = { ref, peers: holders, maxModelLen: model.spec.maxModelLen, launchCommand: model.spec.launchCommand, inferFollows: true };
    let last: { ready: boolean; startTier: Tier; seconds: number; timings: TierTiming[]; device: string; bytesTotal: bigint } | undefined;
    try {
      const progress = withProgressTimeout((signal) => client.loadModel(request, { signal }), {
        ms: this.deps.progressTimeoutMs,
        what: `LoadModel of ${model.spec.id} on agent ${agent.id}`,
        timers: this.deps.timers,
      });
      for await (const p of progress) {
        // Models the agent moved down to DRAM to make room: placement sees the room they left at once.
        for (const gone of p.evicted) residency.left(agent.id, gone);
        last = p;
      }
    } catch (err) {
      throw this.failed(agent, "LoadModel", err);
    } finally {
      unreserve();
    }
    if (!last?.ready) throw new ConnectError(`agent ${agent.id} ended the load of ${model.spec.id} before it was ready`, Code.Unavailable);
    residency.loaded(agent.id, ref, last.device || device, last.bytesTotal > 0n ? Number(last.bytesTotal) : bytes);
    const startTier = last.startTier !== Tier.UNSPECIFIED ? last.startTier : residency.tier(agent, ref);
    const seconds = last.seconds > 0 ? last.seconds : (this.deps.now() - started) / 1000;
    const tier = tierName(startTier);
    metrics.coldStarts.inc({ tier });
    metrics.modelLoadSeconds.observe({ tier }, seconds);
    for (const t of last.timings) metrics.loadBytes.inc({ tier: tierName(t.tier) }, Number(t.bytes));
    this.deps.log(`loaded ${model.spec.id} on ${agent.id}${last.device ? ` (${last.device})` : ""} from ${tier} in ${seconds.toFixed(3)}s`);
  }

  /**
   * The model is only in the store: splits its chunks over the chosen agent and other idle agents
   * that lack it, fetches in parallel, and returns the helpers' addresses. Best effort: a helper
   * that fails is left out (the chosen agent fetches those chunks itself); a chosen agent that
   * hangs fails the load.
   */
  private async spreadDownloads(ref: CheckpointRef, target: AgentRecord): Promise<string[]> {
    const { agents, admission, residency } = this.deps;
    const index = this.deps.conversions.index(ref);
    if (index === undefined || index.chunks.length < 2) return [];
    const idle = agents
      .usable()
      .filter((a) => a.id !== target.id && admission.inflight(a.id) === 0 && a.status.queueLength === 0 && residency.tier(a, ref) === Tier.REMOTE);
    if (idle.length === 0) return [];
    const workers = [target, ...idle.slice(0, index.chunks.length - 1)];
    const shares = workers.map(() => [] as string[]);
    index.chunks.forEach((c, i) => shares[i % workers.length].push(c.fileName));
    const results = await Promise.allSettled(
      workers.map(async (w, i) => {
        const client = this.deps.connector.client(w.status.address);
        const progress = withProgressTimeout((signal) => client.downloadChunks({ ref, fileNames: shares[i] }, { signal }), {
          ms: this.deps.progressTimeoutMs,
          what: `DownloadChunks of ${keyOf(ref)} on agent ${w.id}`,
          timers: this.deps.timers,
        });
        try {
          for await (const _ of progress);
        } catch (err) {
          throw this.failed(w, "DownloadChunks", err);
        }
        return w;
      }),
    );
    const helpers: string[] = [];
    results.forEach((r, i) => {
      if (r.status === "fulfilled") {
        if (i > 0) helpers.push(r.value.status.address);
        return;
      }
      if (i === 0 && isNoProgress(r.reason)) throw r.reason;
      this.deps.log(`download of ${keyOf(ref)} chunks on ${workers[i].id} failed: ${ConnectError.from(r.reason).message}`);
    });
    return helpers;
  }

  /** A call to an agent failed: one that hung is counted and makes the agent suspect for the hold. */
  private failed(agent: AgentRecord, rpc: string, err: unknown): unknown {
    if (isNoProgress(err)) {
      this.deps.metrics.progressTimeouts.inc({ rpc });
      this.deps.log(`agent ${agent.id}: ${err.rawMessage}`);
      this.deps.probes.suspect(agent, err.rawMessage, this.deps.suspectHoldMs);
    }
    return err;
  }
}
