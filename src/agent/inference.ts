// Infer on thaw's own engine: the prompt becomes token ids (chat template, tokenizer) in a text
// worker thread, after a length check no prompt too long for the context passes; the engine
// worker's Generate streams token ids back, and they become text here again — incrementally,
// never splitting a UTF-8 character, holding back what could be the start of a stop string.
// Cancelling the Infer call cancels the Generate call, which frees the sequence in the engine.
import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { InferRequest, InferResponseSchema } from "../gen/thaw/agent/v1/agent_service_pb.js";
import { FinishReason, type PositionLogprobs } from "../gen/thaw/engine/v1/engine_pb.js";
import type { TokenOutputSchema } from "../gen/thaw/agent/v1/agent_pb.js";
import { IncrementalDetokenizer } from "./detokenizer.js";
import type { ExternalRuntime } from "./external-runtime.js";
import type { GpuTier } from "./gpu-tier.js";
import { MAX_TEMPLATE_BYTES, type ModelText, promptTooLong } from "./model-text.js";
import { StopStringMatcher } from "./stop-strings.js";
import type { TextWorkers } from "./text-workers.js";

export type InferResponseInit = MessageInitShape<typeof InferResponseSchema>;
type TokenOutputInit = MessageInitShape<typeof TokenOutputSchema>;

/**
 * The prompt of a request as token ids (and as text, for echo). Text too long for the model's
 * context is refused before anything is rendered or tokenised; the rest happens in `workers`.
 */
export async function promptIds(request: InferRequest, text: ModelText | undefined, workers: TextWorkers, signal?: AbortSignal): Promise<{ ids: number[]; text: string }> {
  switch (request.prompt.case) {
    case "chat": {
      if (text === undefined) throw new ConnectError("the model has no tokenizer files", Code.FailedPrecondition);
      const chat = request.prompt.value;
      const bytes = chat.messages.reduce((n, m) => n + Buffer.byteLength(m.content) + Buffer.byteLength(m.role) + Buffer.byteLength(m.name), 0);
      if (bytes > text.maxPromptBytes) throw promptTooLong(bytes, text);
      if (Buffer.byteLength(chat.chatTemplate) > MAX_TEMPLATE_BYTES) throw new ConnectError(`the chat template is longer than ${MAX_TEMPLATE_BYTES} bytes`, Code.InvalidArgument);
      const messages = chat.messages.map((m) => (m.name ? { role: m.role, content: m.content, name: m.name } : { role: m.role, content: m.content }));
      const job = { kind: "chat" as const, messages, addGenerationPrompt: chat.addGenerationPrompt, template: chat.chatTemplate || undefined };
      const tokens = await workers.tokenize(text, job, signal);
      return { ids: tokens.ids, text: tokens.text ?? "" };
    }
    case "text": {
      if (text === undefined) throw new ConnectError("the model has no tokenizer files", Code.FailedPrecondition);
      const bytes = Buffer.byteLength(request.prompt.value);
      if (bytes > text.maxPromptBytes) throw promptTooLong(bytes, text);
      const tokens = await workers.tokenize(text, { kind: "text", text: request.prompt.value, addSpecialTokens: true }, signal);
      return { ids: tokens.ids, text: request.prompt.value };
    }
    case "tokens": {
      const ids = request.prompt.value.tokenIds;
      if (text !== undefined && ids.length > text.contextTokens) {
        throw new ConnectError(`the prompt has ${ids.length} tokens, more than this model's maximum context length of ${text.contextTokens} tokens`, Code.InvalidArgument);
      }
      return { ids: [...ids], text: request.echo && text?.hasTokenizer ? text.decode(ids, request.skipSpecialTokens) : "" };
    }
    default:
      throw new ConnectError("the request has no prompt (chat, text or tokens)", Code.InvalidArgument);
  }
}

/** The answer to Infer for a model that is not resident: loads are the scheduler's (LoadModel). */
export function notLoaded(key: string): ConnectError {
  return new ConnectError(`${key} is not loaded on this agent (LoadModel first)`, Code.FailedPrecondition);
}

/** Streams one completion from the engine worker the model is resident in. */
export async function* inferOnEngine(
  gpu: GpuTier,
  key: string,
  text: ModelText | undefined,
  workers: TextWorkers,
  request: InferRequest,
  signal: AbortSignal,
): AsyncGenerator<InferResponseInit> {
  const prompt = await promptIds(request, text, workers, signal);
  if (prompt.ids.length === 0) throw new ConnectError("the prompt is empty", Code.InvalidArgument);
  const sampling = { ...(request.sampling ?? {}) } as NonNullable<InferRequest["sampling"]>;
  const eos = sampling.eosTokenIds !== undefined && sampling.eosTokenIds.length > 0 ? sampling.eosTokenIds : (text?.eosTokenIds ?? []);

  // Found and registered in one step, so that no eviction decision sees the model idle meanwhile.
  const resident = gpu.find(key);
  const controller = new AbortController();
  if (resident === undefined || !resident.model.openStream(controller)) throw notLoaded(key);
  const { worker, model } = resident;
  const onAbort = (): void => controller.abort(signal.reason);
  if (signal.aborted) onAbort();
  signal.addEventListener("abort", onAbort, { once: true });
  const detok = text?.hasTokenizer ? new IncrementalDetokenizer(text, prompt.ids, request.skipSpecialTokens) : undefined;
  const stops = new StopStringMatcher(request.stop, request.includeStopStrInOutput);
  let echo = request.echo ? prompt.text : "";
  let promptTokens = prompt.ids.length;
  let cachedTokens = 0;
  let completionTokens = 0;
  // Set once the engine sent its finish message: its stream then ends on its own, and reading it to
  // its end (rather than cancelling it) spares the engine a stream reset per request.
  let engineFinished = false;
  try {
    const call = worker.client.generate(
      { model: key, requestId: request.requestId, promptTokenIds: prompt.ids, sampling: { ...sampling, eosTokenIds: eos } },
      { signal: controller.signal },
    );
    for await (const step of call) {
      if (step.promptTokens > 0) {
        promptTokens = step.promptTokens;
        cachedTokens = step.cachedPromptTokens;
      }
      const tokens: TokenOutputInit[] = [];
      let out = echo;
      echo = "";
      let stopReason: string | undefined;
      for (const [i, id] of step.tokenIds.entries()) {
        completionTokens++;
        const piece = detok?.push(id) ?? "";
        tokens.push({ tokenId: id, text: piece, logprobs: withTokenText(step.logprobs[i], text) });
        const r = stops.push(piece);
        out += r.text;
        if (r.stopped !== undefined) {
          stopReason = r.stopped;
          break;
        }
      }
      if (step.finishReason !== FinishReason.UNSPECIFIED) engineFinished = true;
      let finishReason = stopReason !== undefined ? FinishReason.STOP : step.finishReason;
      if (finishReason === FinishReason.UNSPECIFIED) {
        if (tokens.length > 0 || out !== "") yield { tokens, text: out };
        continue;
      }
      if (stopReason === undefined) {
        // The end: what the detokenizer held back, then what the stop matcher held back.
        const r = stops.push(detok?.flush() ?? "");
        out += r.text;
        if (r.stopped !== undefined) {
          stopReason = r.stopped;
          finishReason = FinishReason.STOP;
        } else {
          out += stops.flush();
        }
      }
      yield {
        tokens,
        text: out,
        finishReason,
        stopReason: stopReason ?? "",
        usage: { promptTokens, completionTokens, cachedTokens },
      };
      if (engineFinished) continue; // only the stream's end is left to read
      return;
    }
    if (engineFinished) return;
    throw new ConnectError(`engine ${worker.id} ended the stream without finishing the sequence`, Code.Unavailable);
  } catch (err) {
    if (signal.aborted) throw new ConnectError("the request was cancelled", Code.Canceled);
    const reason: unknown = controller.signal.reason;
    if (controller.signal.aborted && reason instanceof ConnectError) throw reason;
    // A broken connection usually means the worker died: its exit is reported a moment later.
    const e = ConnectError.from(err);
    const answered = [Code.InvalidArgument, Code.FailedPrecondition, Code.ResourceExhausted, Code.OutOfRange, Code.NotFound];
    if (!answered.includes(e.code)) await Promise.race([worker.exited, new Promise((r) => setTimeout(r, 1000))]);
    if (!worker.alive) throw worker.deathError();
    if (e.code === Code.Canceled || e.code === Code.Aborted) throw new ConnectError(`the stream from engine ${worker.id} broke: ${e.rawMessage}`, Code.Unavailable);
    throw e;
  } finally {
    signal.removeEventListener("abort", onAbort);
    model.closeStream(controller);
    // Ends a Generate call still running (a stop string matched, or the consumer went away).
    if (!engineFinished) controller.abort();
    gpu.notify(); // a load waiting for room may evict this model now
  }
}

/** Fills TokenLogprob.text (engines send ids only) for OpenAI's logprobs output. */
function withTokenText(logprobs: PositionLogprobs | undefined, text: ModelText | undefined): PositionLogprobs | undefined {
  if (logprobs === undefined || text === undefined || !text.hasTokenizer) return logprobs;
  if (logprobs.sampled !== undefined) logprobs.sampled.text = text.tokenText(logprobs.sampled.tokenId);
  for (const top of logprobs.top) top.text = text.tokenText(top.tokenId);
  return logprobs;
}

/** Streams one completion from an external OpenAI-compatible runtime. */
export async function* inferOnExternal(runtime: ExternalRuntime, request: InferRequest, signal: AbortSignal): AsyncGenerator<InferResponseInit> {
  // Echo, stop strings and detokenisation happen in the runtime.
  for await (const out of runtime.infer(request, signal)) {
    const text = out.text;
    if (out.finishReason === undefined) {
      yield { text };
      continue;
    }
    yield {
      text,
      finishReason: out.finishReason,
      stopReason: out.stopReason ?? "",
      usage: out.usage ?? { promptTokens: 0, completionTokens: 0, cachedTokens: 0 },
    };
  }
}
