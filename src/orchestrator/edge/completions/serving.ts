// Text completions: the scheduler's per-choice output as OpenAI's text_completion object or its
// event stream (a chunk per delta, the finish reason on the choice's last chunk, the usage chunk
// when asked for, [DONE] last; a failure after the stream began goes in-band).
import type { ChoiceOutput, EdgeBackend } from "../backend.js";
import { completionId, finishReasonName, mergeChoices, unixSeconds, UsageTally } from "../choices.js";
import { toOpenAIError } from "../errors.js";
import { ended, sendJson, SseWriter, type EdgeResponse } from "../http.js";
import { appendCompletionLogprobs, completionLogprobs, type CompletionLogprobs } from "../logprobs.js";
import type { CompletionsRequest } from "./protocol.js";

export async function serveCompletion(
  backend: EdgeBackend,
  completion: CompletionsRequest,
  res: EdgeResponse,
  headers: Record<string, string>,
  signal: AbortSignal,
): Promise<void> {
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const parts = completion.requests.map((request, i) => ({ stream: backend.complete(request, controller.signal), offset: i * completion.n }));
    const stream = mergeChoices(parts, controller);
    if (completion.stream) await streamCompletion(stream, completion, res, headers, signal);
    else await completeAll(stream, completion, res, headers);
  } catch (err) {
    throw ended(signal, err);
  } finally {
    signal.removeEventListener("abort", onAbort);
    // A response cut short (an error, the client gone) stops its generation; a finished one has nothing to stop.
    if (!res.writableFinished) controller.abort();
  }
}

async function completeAll(stream: AsyncIterable<ChoiceOutput>, completion: CompletionsRequest, res: EdgeResponse, headers: Record<string, string>): Promise<void> {
  const total = completion.requests.length * completion.n;
  const top = completion.topLogprobs;
  const choices = Array.from({ length: total }, () => ({
    text: "",
    finish: null as string | null,
    logprobs: { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] } as CompletionLogprobs,
  }));
  const usage = new UsageTally();
  for await (const out of stream) {
    const c = choices[out.index];
    if (top !== undefined && out.tokens.length > 0) {
      appendCompletionLogprobs(c.logprobs, completionLogprobs(out.tokens, top, c.text.length + echoedLength(out)));
    }
    c.text += out.text;
    if (out.usage) usage.add(Math.floor(out.index / completion.n), out.usage);
    const finish = finishReasonName(out.finishReason);
    if (finish !== null) c.finish = finish;
  }
  sendJson(
    res,
    200,
    {
      id: completionId("cmpl"),
      object: "text_completion",
      created: unixSeconds(),
      model: completion.model,
      choices: choices.map((c, index) => ({
        index,
        text: c.text,
        logprobs: top === undefined ? null : c.logprobs,
        finish_reason: c.finish,
      })),
      usage: usage.toJSON(),
    },
    headers,
  );
}

async function streamCompletion(
  stream: AsyncIterable<ChoiceOutput>,
  completion: CompletionsRequest,
  res: EdgeResponse,
  headers: Record<string, string>,
  signal: AbortSignal,
): Promise<void> {
  const iterator = stream[Symbol.asyncIterator]();
  let next = await iterator.next();
  const sse = new SseWriter(res);
  sse.start(headers);
  const id = completionId("cmpl");
  const created = unixSeconds();
  const model = completion.model;
  const withUsage = completion.includeUsage;
  const top = completion.topLogprobs;
  const offsets = new Map<number, number>();
  const usage = new UsageTally();
  // Chunks are written from string pieces: the same JSON as the objects, made faster per token.
  const head = `{"id":${JSON.stringify(id)},"object":"text_completion","created":${created},"model":${JSON.stringify(model)},"choices":[{"index":`;
  const tail = withUsage ? `}],"usage":null}` : `}]}`;
  try {
    while (!next.done) {
      const out = next.value;
      const finish = finishReasonName(out.finishReason);
      if (out.text !== "" || finish !== null || (top !== undefined && out.tokens.length > 0)) {
        const offset = offsets.get(out.index) ?? 0;
        const logprobs = top === undefined ? "null" : JSON.stringify(completionLogprobs(out.tokens, top, offset + echoedLength(out)));
        offsets.set(out.index, offset + out.text.length);
        sse.sendRaw(`${head}${out.index},"text":${JSON.stringify(out.text)},"logprobs":${logprobs},"finish_reason":${finish === null ? "null" : `"${finish}"`}${tail}`);
      }
      if (finish !== null) usage.add(Math.floor(out.index / completion.n), out.usage);
      next = await iterator.next();
    }
    if (withUsage) sse.send({ id, object: "text_completion", created, model, choices: [], usage: usage.toJSON() });
  } catch (err) {
    if (res.destroyed) return;
    sse.send(toOpenAIError(ended(signal, err), "prompt").body());
  }
  if (!res.destroyed) sse.done();
}

/** Text in front of an output's tokens (the echoed prompt arrives with the first tokens, without tokens of its own). */
function echoedLength(out: ChoiceOutput): number {
  let tokensText = 0;
  for (const t of out.tokens) tokensText += t.text.length;
  return Math.max(0, out.text.length - tokensText);
}
