// Running a request: convert once if needed, place its n choices on one agent, load the model
// there, run each choice's Infer and stream the output; retry a choice elsewhere when it fails
// before its first token.
//
// An Infer answered FAILED_PRECONDITION "not loaded" means the scheduler's view of the agent was
// stale (the agent evicted or lost the model since its last heartbeat): the correction is made, the
// model loaded again and the Infer repeated on the same agent, at most RELOADS_PER_ATTEMPT times
// (counted in not_loaded_reloads_total); after that the choice is retried elsewhere like any
// failure before the first token.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { TokenOutput, Usage } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { InferRequestSchema } from "../../gen/thaw/agent/v1/agent_service_pb.js";
import type { CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { FinishReason } from "../../gen/thaw/engine/v1/engine_pb.js";
import { CompletionFinishReason } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";
import type { OrchestratorMetrics } from "../metrics.js";
import type { Admission } from "./admission.js";
import type { AgentProbes } from "./agent-probes.js";
import type { AgentRegistry } from "./agent-registry.js";
import { Channel } from "./channel.js";
import type { Conversions } from "./conversions.js";
import type { ModelLoads } from "./model-loads.js";
import type { RegisteredModel } from "./model-registry.js";
import { refOf } from "./model-refs.js";
import { cacheLevel } from "./placement.js";
import type { Placement, Placer } from "./placer.js";
import type { Residency } from "./residency.js";

export type InferInit = MessageInitShape<typeof InferRequestSchema>;

/** Output of one choice since its previous message. */
export interface ChoiceOutput {
  index: number;
  text: string;
  tokens: TokenOutput[];
  finishReason: CompletionFinishReason;
  /** On the choice's last message. */
  usage?: Usage;
  agentId: string;
}

export interface RequestRunnerDeps {
  agents: AgentRegistry;
  residency: Residency;
  admission: Admission;
  conversions: Conversions;
  placer: Placer;
  loads: ModelLoads;
  probes: AgentProbes;
  metrics: OrchestratorMetrics;
  /** Attempts per choice when it fails before its first token (each on another agent). */
  maxAttempts: number;
  now: () => number;
  log: (message: string) => void;
}

/** Loads and Infers again on one agent after "not loaded" answers, per attempt. */
export const RELOADS_PER_ATTEMPT = 2;

/** The reason given to a request's own controller when it ends early (made once: errors are costly to make). */
const REQUEST_ENDED = new ConnectError("request ended", Code.Canceled);

/** Failures before the first token that another agent may not have. */
const RETRYABLE = new Set([Code.Unavailable, Code.Unknown, Code.Internal, Code.Aborted, Code.ResourceExhausted, Code.FailedPrecondition, Code.Canceled, Code.DataLoss, Code.DeadlineExceeded]);

/**
 * Failures that say the agent itself is broken: it is not placed on until a probe answers. A
 * caller's bad input (INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION) is never one of them.
 */
const BROKEN = new Set([Code.Unavailable, Code.Unknown, Code.Internal]);

/** An Infer in flight on an agent. */
interface RunningCall {
  controller: AbortController;
  /** When the call last heard from the agent (or began). */
  lastMessageMs: number;
}

/** How long a call to an agent whose heartbeats stopped may hear nothing before it is ended. */
const SILENT_CALL_MS = 10_000;

interface RequestStats {
  firstToken: boolean;
  arrived: number;
  model: string;
}

export class RequestRunner {
  /** Infers running on each agent, so they can be ended when the agent stops heartbeating. */
  private readonly calls = new Map<string, Set<RunningCall>>();

  constructor(private readonly deps: RequestRunnerDeps) {}

  /**
   * Ends the Infers running on agents whose heartbeats stopped (expired). A cut link or a frozen
   * host sends no reset, so their streams would otherwise wait for TCP to give up (many minutes);
   * ended here with UNAVAILABLE, a stream that began ends in-band and one that had not is retried
   * elsewhere.
   */
  endSilentAgents(): void {
    const { agents } = this.deps;
    const now = this.deps.now();
    for (const [agentId, calls] of this.calls) {
      const agent = agents.get(agentId);
      if (agent !== undefined && agents.isLive(agent)) continue;
      const reason = new ConnectError(`agent ${agentId} stopped heartbeating`, Code.Unavailable);
      // Only a call that has itself heard nothing for a while: late heartbeats alone (a busy
      // process) must not end a stream that is flowing, or one waiting its turn on a live agent.
      for (const call of calls) if (now - call.lastMessageMs >= SILENT_CALL_MS) call.controller.abort(reason);
    }
  }

  /**
   * Runs `n` choices of one request and streams their output, interleaved, in order per choice.
   * Nothing happens until the first `next()`; errors before any output have their own code
   * (NOT_FOUND, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNAVAILABLE …) and surface there; an agent
   * that fails after a choice's first token ends the stream with UNAVAILABLE. Leaving early
   * (`return()`) or the signal aborting stops every choice. (A plain iterator over a channel rather
   * than an async generator: the edge pays no generator hops per token.)
   */
  generate(model: RegisteredModel, n: number, infer: (choice: number) => InferInit, signal: AbortSignal): AsyncIterable<ChoiceOutput> {
    const { metrics } = this.deps;
    const label = model.spec.id;
    const series = metrics.forModel(label);
    const arrived = this.deps.now();
    const ctl = new AbortController();
    const onAbort = () => ctl.abort(signal.reason);
    const stats: RequestStats = { firstToken: false, arrived, model: label };
    const channel = new Channel<ChoiceOutput>();
    const channelIterator = channel[Symbol.asyncIterator]();
    let state: "new" | "waiting" | "running" | "done" = "new";
    let started: Promise<void> | undefined;

    const finish = (completed: boolean) => {
      if (state === "done") return;
      if (state === "waiting") series.waiting.dec();
      if (state === "running") series.running.dec();
      state = "done";
      signal.removeEventListener("abort", onAbort);
      if (completed) {
        const seconds = (this.deps.now() - arrived) / 1000;
        series.e2eLatency.observe(seconds);
        series.inferenceLatency.observe(seconds);
      } else {
        ctl.abort(REQUEST_ENDED);
      }
    };
    const failure = (err: unknown): ConnectError => {
      // Ended by its caller: with the caller's own reason when it gave one (the server shutting
      // down: UNAVAILABLE; a deadline: DEADLINE_EXCEEDED), else as the client's cancellation.
      if (signal.aborted) return signal.reason instanceof ConnectError ? signal.reason : new ConnectError("request cancelled by the client", Code.Canceled);
      const e = ConnectError.from(err);
      metrics.requestErrors.inc({ model: label, code: Code[e.code] ?? String(e.code) });
      return e;
    };
    const start = async () => {
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
      state = "waiting";
      series.waiting.inc();
      await this.ensureConverted(model, ctl.signal);
      const placement = await this.deps.placer.place(model, n, new Set(), ctl.signal, true);
      series.waiting.dec();
      series.running.inc();
      state = "running";
      let remaining = n;
      for (let i = 0; i < n; i++) {
        this.runChoice(model, i, placement, infer(i), channel, ctl.signal, stats).then(
          () => {
            if (--remaining === 0) channel.close();
          },
          (err) => {
            ctl.abort(err);
            channel.fail(err);
          },
        );
      }
    };
    const iterator: AsyncIterator<ChoiceOutput> = {
      next: async () => {
        if (state === "done") return { value: undefined, done: true };
        try {
          if (started === undefined) started = start();
          await started;
          const r = await channelIterator.next();
          if (r.done) finish(true);
          return r;
        } catch (err) {
          const e = failure(err);
          finish(false);
          throw e;
        }
      },
      return: async () => {
        finish(false);
        await channelIterator.return?.();
        return { value: undefined, done: true };
      },
    };
    return { [Symbol.asyncIterator]: () => iterator };
  }

  /** Converts the model first unless its checkpoint exists (an agent holding it proves it does). */
  private ensureConverted(model: RegisteredModel, signal: AbortSignal): Promise<void> {
    const ref = refOf(model);
    const held = this.deps.agents.usable().some((a) => cacheLevel(this.deps.residency.tier(a, ref)) < 3);
    return this.deps.conversions.ensure(model, held, signal);
  }

  /** One choice: load if needed, Infer, retry elsewhere on a failure before the first token. */
  private async runChoice(
    model: RegisteredModel,
    index: number,
    initial: Placement,
    request: InferInit,
    out: Channel<ChoiceOutput>,
    signal: AbortSignal,
    stats: RequestStats,
  ): Promise<void> {
    const { metrics, residency, admission } = this.deps;
    const ref = refOf(model);
    const tried = new Set<string>();
    let placement = initial;
    for (let attempt = 1; ; attempt++) {
      const agent = placement.agent;
      const endUse = residency.begin(agent.id, ref);
      const started = this.deps.now();
      let released = false;
      // The model counts as idle again before the slot is given back, so the waiters that the
      // release lets try again see the room it leaves.
      const releaseOnce = () => {
        if (released) return;
        released = true;
        endUse();
        admission.release(agent.id, 1, this.deps.now() - started);
      };
      const progress = { produced: false };
      try {
        for (let reloads = 0; ; reloads++) {
          await this.deps.loads.ensureLoaded(model, agent, placement.score.memory.device, signal);
          try {
            await this.infer(placement, ref, index, request, out, signal, stats, progress);
            return;
          } catch (err) {
            if (progress.produced || signal.aborted || !notLoaded(err)) throw err;
            if (reloads >= RELOADS_PER_ATTEMPT) {
              // Other loads keep taking the room first: the system is short of GPU memory, the
              // request is not at fault (never a 400), and the agent is not broken.
              throw new LostToOtherLoads(`agent ${agent.id} lost ${model.spec.id} to other loads ${reloads + 1} times before the request began`);
            }
            // The view was stale: the agent does not hold the model. Correct it and load again.
            residency.left(agent.id, ref);
            metrics.reloads.inc({ model: stats.model });
            this.deps.log(`agent ${agent.id} does not hold ${model.spec.id} (${ConnectError.from(err).rawMessage}); loading it again`);
          }
        }
      } catch (err) {
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : err;
        const e = agentError(agent.id, err);
        const broken = BROKEN.has(e.code);
        // Not placed on again until a status probe answers (heartbeats alone may lag a crash).
        if (broken) this.deps.probes.suspect(agent, e.rawMessage);
        if (progress.produced) {
          this.deps.log(`agent ${agent.id} failed after the first token (${Code[e.code]}: ${e.rawMessage})`);
          throw new ConnectError(`agent ${agent.id} failed while generating: ${e.rawMessage}`, Code.Unavailable);
        }
        if (!RETRYABLE.has(e.code) || attempt >= this.deps.maxAttempts) throw overloaded(e);
        this.deps.log(`agent ${agent.id} failed before the first token (${Code[e.code]}: ${e.rawMessage}); retrying elsewhere`);
        tried.add(agent.id);
        metrics.retries.inc({ model: stats.model });
        releaseOnce();
        try {
          placement = await this.deps.placer.place(model, 1, tried, signal, false);
        } catch (placeErr) {
          if (signal.aborted) throw placeErr;
          const last = overloaded(e);
          throw new ConnectError(`${last.rawMessage} (no other agent to retry on)`, last.code);
        }
      } finally {
        releaseOnce();
      }
    }
  }

  /** One Infer to its end, forwarding its output; `progress.produced` turns true at its first output. */
  private async infer(
    placement: Placement,
    ref: CheckpointRef,
    index: number,
    request: InferInit,
    out: Channel<ChoiceOutput>,
    signal: AbortSignal,
    stats: RequestStats,
    progress: { produced: boolean },
  ): Promise<void> {
    const { metrics } = this.deps;
    const m = metrics.forModel(stats.model);
    const agent = placement.agent;
    let last = this.deps.now();
    let finished = false;
    const call: RunningCall = { controller: new AbortController(), lastMessageMs: this.deps.now() };
    const calls = this.calls.get(agent.id) ?? new Set<RunningCall>();
    this.calls.set(agent.id, calls.add(call));
    try {
      // Read every stream to its end, even past the finish: leaving early resets the HTTP/2
      // stream, and servers count resets (rapid-reset protection closes sessions that send many).
      for await (const r of placement.client.infer({ ...request, ref }, { signal: AbortSignal.any([signal, call.controller.signal]) })) {
        const t = this.deps.now();
        call.lastMessageMs = t;
        if (finished) continue;
        const count = r.tokens.length;
        if (count > 0) {
          if (!stats.firstToken) {
            stats.firstToken = true;
            m.timeToFirstToken.observe((t - stats.arrived) / 1000);
          } else if (progress.produced) {
            const gap = (t - last) / 1000 / count;
            for (let k = 0; k < count; k++) m.interTokenLatency.observe(gap);
          }
          m.generationTokens.inc(count);
          last = t;
        }
        const finishReason = toCompletionFinish(r.finishReason);
        if (count > 0 || r.text !== "" || finishReason !== CompletionFinishReason.UNSPECIFIED) progress.produced = true;
        out.push({ index, text: r.text, tokens: r.tokens, finishReason, usage: r.usage, agentId: agent.id });
        if (finishReason !== CompletionFinishReason.UNSPECIFIED) {
          if (index === 0 && r.usage) m.promptTokens.inc(r.usage.promptTokens);
          metrics.requestSuccess.inc({ model: stats.model, finished_reason: finishName(finishReason) });
          finished = true;
        }
      }
    } catch (err) {
      // Ended because the agent went silent: its reason, not the bare abort.
      throw call.controller.signal.aborted && !signal.aborted ? call.controller.signal.reason : err;
    } finally {
      calls.delete(call);
      if (calls.size === 0) this.calls.delete(agent.id);
    }
    if (!finished) throw new ConnectError(`agent ${agent.id} ended the stream without a finish reason`, Code.Unavailable);
  }
}

/** Other loads kept taking the model's room before its Infer began: retried elsewhere, the agent is not broken. */
class LostToOtherLoads extends ConnectError {
  constructor(message: string) {
    super(message, Code.FailedPrecondition);
  }
}

/** What a client sees of a choice that kept losing its model to other loads: 503, try again (never a 400). */
function overloaded(e: ConnectError): ConnectError {
  // By prototype, not instanceof: ConnectError's instanceof holds for every ConnectError (it
  // compares names), which would make every error (a prompt too long, a model not found) a 503.
  const lost = Object.getPrototypeOf(e) === LostToOtherLoads.prototype;
  return lost || notLoaded(e) ? new ConnectError(e.rawMessage, Code.Unavailable) : e;
}

/** The agent does not hold the model (it answers so rather than loading on its own). */
function notLoaded(err: unknown): boolean {
  const e = ConnectError.from(err);
  return e.code === Code.FailedPrecondition && /not loaded/i.test(e.rawMessage);
}

function toCompletionFinish(reason: FinishReason): CompletionFinishReason {
  switch (reason) {
    case FinishReason.STOP:
      return CompletionFinishReason.STOP;
    case FinishReason.LENGTH:
      return CompletionFinishReason.LENGTH;
    case FinishReason.ABORT:
      return CompletionFinishReason.ABORT;
    default:
      return CompletionFinishReason.UNSPECIFIED;
  }
}

function finishName(reason: CompletionFinishReason): string {
  return reason === CompletionFinishReason.STOP ? "stop" : reason === CompletionFinishReason.LENGTH ? "length" : "abort";
}

/**
 * An agent's error as the scheduler reports it (only called while the request itself is not
 * cancelled): auth problems between services are internal, and a call cut from the agent's side —
 * its process died: the stream closed with CANCEL (Canceled) or the connection was reset (Aborted)
 * — is the agent being unavailable, never the client's cancellation nor a conflict.
 */
function agentError(agentId: string, err: unknown): ConnectError {
  const e = ConnectError.from(err);
  if (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied) {
    return new ConnectError(`agent ${agentId} refused the scheduler (${e.rawMessage}); check THAW_INTERNAL_TOKEN`, Code.Internal);
  }
  if (e.code === Code.Canceled || e.code === Code.Aborted) return new ConnectError(`agent ${agentId} went away (${e.rawMessage})`, Code.Unavailable, e.metadata, undefined, err);
  return e;
}
