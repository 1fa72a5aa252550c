// Chat completions: the scheduler's per-choice output as OpenAI's chat.completion object, or as
// its chat.completion.chunk event stream (role first, content deltas, a finish chunk per choice,
// the usage chunk when asked for, [DONE] last; a failure after the stream began goes in-band).
import type { EdgeBackend, ChoiceOutput } from "../backend.js";
import { completionId, finishReasonName, unixSeconds, UsageTally } from "../choices.js";
import { toOpenAIError } from "../errors.js";
import { ended, sendJson, SseWriter, type EdgeResponse } from "../http.js";
import { chatLogprobs, type ChatTokenLogprob } from "../logprobs.js";
import type { ChatRequest } from "./protocol.js";

export async function serveChat(backend: EdgeBackend, chat: ChatRequest, res: EdgeResponse, headers: Record<string, string>, signal: AbortSignal): Promise<void> {
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const stream = backend.chat(chat.request, controller.signal);
    if (chat.stream) await streamChat(stream, chat, res, headers, signal);
    else await completeChat(stream, chat, res, headers);
  } catch (err) {
    throw ended(signal, err);
  } finally {
    signal.removeEventListener("abort", onAbort);
    // A response cut short (an error, the client gone) stops its generation; a finished one has nothing to stop.
    if (!res.writableFinished) controller.abort();
  }
}

async function completeChat(stream: AsyncIterable<ChoiceOutput>, chat: ChatRequest, res: EdgeResponse, headers: Record<string, string>): Promise<void> {
  const choices = Array.from({ length: chat.n }, () => ({ text: "", finish: null as string | null, logprobs: [] as ChatTokenLogprob[] }));
  const usage = new UsageTally();
  const top = chat.topLogprobs;
  for await (const out of stream) {
    const c = choices[out.index];
    c.text += out.text;
    if (top !== undefined && out.tokens.length > 0) c.logprobs.push(...chatLogprobs(out.tokens, top));
    if (out.usage) usage.add(0, out.usage);
    const finish = finishReasonName(out.finishReason);
    if (finish !== null) c.finish = finish;
  }
  sendJson(
    res,
    200,
    {
      id: completionId("chatcmpl"),
      object: "chat.completion",
      created: unixSeconds(),
      model: chat.model,
      choices: choices.map((c, index) => ({
        index,
        message: { role: "assistant", content: c.text, refusal: null },
        logprobs: top === undefined ? null : { content: c.logprobs },
        finish_reason: c.finish,
      })),
      usage: usage.toJSON(),
    },
    headers,
  );
}

async function streamChat(stream: AsyncIterable<ChoiceOutput>, chat: ChatRequest, res: EdgeResponse, headers: Record<string, string>, signal: AbortSignal): Promise<void> {
  const iterator = stream[Symbol.asyncIterator]();
  // The first output decides the status: errors before it (404, 429, 503, …) are plain HTTP errors.
  let next = await iterator.next();
  const sse = new SseWriter(res);
  sse.start(headers);
  const id = completionId("chatcmpl");
  const created = unixSeconds();
  const model = chat.model;
  const withUsage = chat.includeUsage;
  const top = chat.topLogprobs;
  // Chunks are written from string pieces: the same JSON as objects would give, made faster per token.
  const head = `data: {"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(model)},"choices":[{"index":`;
  const tail = withUsage ? `}],"usage":null}\n\n` : `}]}\n\n`;
  const usage = new UsageTally();
  const started = new Set<number>();
  try {
    while (!next.done) {
      const out = next.value;
      let events = "";
      if (!started.has(out.index)) {
        started.add(out.index);
        events += `${head}${out.index},"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null${tail}`;
      }
      if (out.text !== "" || (top !== undefined && out.tokens.length > 0)) {
        const logprobs = top === undefined ? "null" : JSON.stringify({ content: chatLogprobs(out.tokens, top) });
        events += `${head}${out.index},"delta":{"content":${JSON.stringify(out.text)}},"logprobs":${logprobs},"finish_reason":null${tail}`;
      }
      const finish = finishReasonName(out.finishReason);
      if (finish !== null) {
        usage.add(0, out.usage);
        events += `${head}${out.index},"delta":{},"logprobs":null,"finish_reason":"${finish}"${tail}`;
      }
      if (events !== "") sse.write(events);
      next = await iterator.next();
    }
    if (withUsage) sse.send({ id, object: "chat.completion.chunk", created, model, choices: [], usage: usage.toJSON() });
  } catch (err) {
    if (res.destroyed) return;
    sse.send(toOpenAIError(ended(signal, err)).body());
  }
  if (!res.destroyed) sse.done();
}
