// The edge through the official OpenAI SDK (npm), against an orchestrator on a loopback port
// with TestAgents behind it: chat and completions, streaming and not, usage chunks, logprobs,
// sampling fields, typed errors, API keys, x-request-id, cancellation and in-band errors.
import test from "ava";
import http2 from "node:http2";
import OpenAI from "openai";
import { Code } from "@connectrpc/connect";
import { Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import { startOrchestrator, type RunningOrchestrator } from "../../../src/orchestrator/orchestrator.js";
import { sleep, TestAgent } from "../test-agent.js";

const KEY = "sk-test-key";
let orchestrator: RunningOrchestrator;
let agent: TestAgent;
let openai: OpenAI;

test.before(async () => {
  orchestrator = await startOrchestrator({
    port: 0,
    modelsFile: null,
    heartbeatIntervalMs: 100, agentExpiryMs: 5000,
    agentWaitMs: 500,
    apiKeys: [KEY, "sk-other"],
    models: [{ id: "m" }, { id: "org/slow" }],
    log: () => {},
  });
  agent = await TestAgent.start({ id: "a", models: { m: Tier.GPU }, scheduler: orchestrator.url, heartbeatMs: 50 });
  openai = new OpenAI({ baseURL: `${orchestrator.url}/v1`, apiKey: KEY, maxRetries: 0 });
});

test.after.always(async () => {
  await agent?.close();
  await orchestrator?.close();
});

const last = () => agent.infers.at(-1)!.request;

test.serial("chat completion: message, finish reason, usage, ids and x-request-id", async (t) => {
  const { data, response } = await openai.chat.completions
    .create({ model: "m", messages: [{ role: "system", content: "be brief" }, { role: "user", content: "hi" }] })
    .withResponse();
  t.regex(data.id, /^chatcmpl-/);
  t.is(data.object, "chat.completion");
  t.is(data.model, "m");
  t.is(data.choices.length, 1);
  t.deepEqual(data.choices[0].message.role, "assistant");
  t.is(data.choices[0].message.content, "Hello, world!");
  t.is(data.choices[0].finish_reason, "stop");
  t.is(data.choices[0].logprobs, null);
  t.deepEqual(data.usage, { prompt_tokens: Buffer.byteLength("be brief\nhi"), completion_tokens: 4, total_tokens: Buffer.byteLength("be brief\nhi") + 4, prompt_tokens_details: { cached_tokens: 0 } });
  t.truthy(response.headers.get("x-request-id"));
  t.is(last().prompt.case, "chat");
});

test.serial("chat streaming: role first, deltas, finish chunk, usage chunk, [DONE]", async (t) => {
  const stream = await openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } });
  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  for await (const c of stream) chunks.push(c);
  t.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
  t.is(chunks.slice(1, -2).map((c) => c.choices[0].delta.content).join(""), "Hello, world!");
  const finish = chunks.at(-2)!;
  t.deepEqual(finish.choices[0].delta, {});
  t.is(finish.choices[0].finish_reason, "stop");
  const usage = chunks.at(-1)!;
  t.deepEqual(usage.choices, []);
  t.is(usage.usage?.completion_tokens, 4);
  t.true(chunks.slice(0, -1).every((c) => c.usage === null));
  t.true(new Set(chunks.map((c) => c.id)).size === 1);

  // Without include_usage there is no usage field at all, and no usage chunk.
  const plain: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  for await (const c of await openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true })) plain.push(c);
  t.true(plain.every((c) => c.usage === undefined && c.choices.length === 1));
});

test.serial("chat: n, stop, seed, max_completion_tokens and vLLM's sampling fields reach the agent", async (t) => {
  const before = agent.infers.length;
  const done = await openai.chat.completions.create({
    model: "m",
    messages: [{ role: "user", content: "hi" }],
    n: 2,
    stop: [" world"],
    seed: 7,
    max_completion_tokens: 3,
    temperature: 0.5,
    top_p: 0.9,
    presence_penalty: 0.1,
    frequency_penalty: 0.2,
    // @ts-expect-error vLLM's extra sampling fields
    top_k: 5,
    min_p: 0.05,
    repetition_penalty: 1.1,
    min_tokens: 1,
    ignore_eos: true,
    stop_token_ids: [3, 4],
    some_unknown_field: { ignored: true },
  });
  t.deepEqual(done.choices.map((c) => [c.index, c.message.content, c.finish_reason]), [
    [0, "Hello,", "stop"],
    [1, "Hello,", "stop"],
  ]);
  const requests = agent.infers.slice(before).map((i) => i.request);
  t.is(requests.length, 2);
  const s = requests[0].sampling!;
  t.is(s.maxTokens, 3);
  t.is(s.temperature, 0.5);
  t.true(Math.abs(s.topP! - 0.9) < 1e-6);
  t.is(s.topK, 5);
  t.true(Math.abs(s.minP - 0.05) < 1e-6);
  t.true(Math.abs(s.repetitionPenalty! - 1.1) < 1e-6);
  t.is(s.minTokens, 1);
  t.true(s.ignoreEos);
  t.deepEqual(s.stopTokenIds, [3, 4]);
  t.deepEqual(requests.map((r) => r.sampling!.seed).sort(), [7n, 8n], "choices get seed, seed+1");
  t.deepEqual(requests[0].stop, [" world"]);
  t.true(requests[0].skipSpecialTokens);
  t.is(done.usage?.completion_tokens, 6);
});

test.serial("chat logprobs with top_logprobs", async (t) => {
  const done = await openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }], logprobs: true, top_logprobs: 2, max_tokens: 2 });
  const content = done.choices[0].logprobs!.content!;
  t.deepEqual(content.map((c) => c.token), ["Hello", ","]);
  t.is(content[0].logprob, -0.25);
  t.deepEqual(content[0].bytes, [...Buffer.from("Hello")]);
  t.deepEqual(content[0].top_logprobs.map((x) => [x.token, x.logprob]), [["Hello", -0.25], ["alt1", -1.25]]);
});

test.serial("completions: text, list of texts, token ids; n; echo; logprobs; streaming usage", async (t) => {
  const one = await openai.completions.create({ model: "m", prompt: "Say", max_tokens: 2 });
  t.regex(one.id, /^cmpl-/);
  t.is(one.object, "text_completion");
  t.deepEqual(one.choices.map((c) => [c.index, c.text, c.finish_reason]), [[0, "Hello,", "length"]]);
  t.is(last().prompt.case, "text");

  const many = await openai.completions.create({ model: "m", prompt: ["a", "bb"], n: 2, max_tokens: 1 });
  t.deepEqual(many.choices.map((c) => c.index), [0, 1, 2, 3]);
  t.is(many.usage?.prompt_tokens, 1 + 2, "prompt tokens count once per prompt");
  t.is(many.usage?.completion_tokens, 4);

  const ids = await openai.completions.create({ model: "m", prompt: [1, 2, 3], max_tokens: 1 });
  t.is(ids.choices.length, 1);
  t.deepEqual([...(last().prompt.value as { tokenIds: number[] }).tokenIds], [1, 2, 3]);
  const idLists = await openai.completions.create({ model: "m", prompt: [[1, 2], [3]], max_tokens: 1 });
  t.is(idLists.choices.length, 2);

  const echoed = await openai.completions.create({ model: "m", prompt: "Q: ", echo: true, max_tokens: 2, logprobs: 1 });
  t.is(echoed.choices[0].text, "Q: Hello,");
  t.deepEqual(echoed.choices[0].logprobs?.tokens, ["Hello", ","]);
  t.deepEqual(echoed.choices[0].logprobs?.text_offset, [3, 8]);
  t.deepEqual(echoed.choices[0].logprobs?.top_logprobs?.[0], { Hello: -0.25 });

  const chunks: OpenAI.Completions.Completion[] = [];
  for await (const c of await openai.completions.create({ model: "m", prompt: "x", stream: true, max_tokens: 4, stream_options: { include_usage: true } })) chunks.push(c);
  t.is(chunks.slice(0, -1).map((c) => c.choices[0].text).join(""), "Hello, world!");
  t.is(chunks.at(-2)!.choices[0].finish_reason, "length");
  t.deepEqual(chunks.at(-1)!.choices, []);
  t.is(chunks.at(-1)!.usage?.total_tokens, 1 + 4);
});

test.serial("models: list and retrieve, with org/name ids", async (t) => {
  const list = await openai.models.list();
  t.deepEqual(list.data.map((m) => [m.id, m.object, m.owned_by]), [["m", "model", "thaw"], ["org/slow", "model", "thaw"]]);
  t.is((await openai.models.retrieve("org/slow")).id, "org/slow");
  await t.throwsAsync(openai.models.retrieve("nope"), { instanceOf: OpenAI.NotFoundError });
});

test.serial("errors surface as the SDK's typed errors with OpenAI's bodies", async (t) => {
  const notFound = await t.throwsAsync(openai.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] }), { instanceOf: OpenAI.NotFoundError });
  t.is((notFound as InstanceType<typeof OpenAI.NotFoundError>).code, "model_not_found");
  t.truthy((notFound as InstanceType<typeof OpenAI.APIError>).requestID);

  const bad = await t.throwsAsync(openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], temperature: 9 }), { instanceOf: OpenAI.BadRequestError });
  t.is((bad as InstanceType<typeof OpenAI.BadRequestError>).param, "temperature");
  await t.throwsAsync(openai.chat.completions.create({ model: "m", messages: [] }), { instanceOf: OpenAI.BadRequestError });
  await t.throwsAsync(openai.completions.create({ model: "m", prompt: "x", stream: false, stream_options: { include_usage: true } } as never), { instanceOf: OpenAI.BadRequestError });

  agent.options.maxModelLen = 8;
  try {
    const long = await t.throwsAsync(openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "far too long a prompt" }] }), { instanceOf: OpenAI.BadRequestError });
    t.is((long as InstanceType<typeof OpenAI.BadRequestError>).code, "context_length_exceeded");
    t.is((long as InstanceType<typeof OpenAI.BadRequestError>).param, "messages");
  } finally {
    agent.options.maxModelLen = undefined;
  }

  const wrongKey = new OpenAI({ baseURL: `${orchestrator.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
  const auth = await t.throwsAsync(wrongKey.models.list(), { instanceOf: OpenAI.AuthenticationError });
  t.is((auth as InstanceType<typeof OpenAI.AuthenticationError>).code, "invalid_api_key");
  t.is((await new OpenAI({ baseURL: `${orchestrator.url}/v1`, apiKey: "sk-other", maxRetries: 0 }).models.list()).data.length, 2);
});

test.serial("a full queue is 429 (RateLimitError) with Retry-After", async (t) => {
  const busy = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentExpiryMs: 5000, maxInflightPerAgent: 1, maxQueue: 0, models: [{ id: "m" }], log: () => {} });
  const slow = await TestAgent.start({ id: "slow", models: { m: Tier.GPU }, tokenDelayMs: 100, scheduler: busy.url, heartbeatMs: 50 });
  t.teardown(async () => {
    await slow.close();
    await busy.close();
  });
  const client = new OpenAI({ baseURL: `${busy.url}/v1`, apiKey: "none", maxRetries: 0 });
  const first = client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }] });
  while (slow.inflight === 0) await sleep(5);
  const err = await t.throwsAsync(client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }] }), { instanceOf: OpenAI.RateLimitError });
  const e = err as InstanceType<typeof OpenAI.RateLimitError>;
  t.is(e.code, "rate_limit_exceeded");
  t.regex(e.headers?.get("retry-after") ?? "", /^\d+$/);
  t.is((await first).choices[0].message.content, "Hello, world!");
});

test.serial("a stream that breaks after it began ends with an in-band error event and [DONE]", async (t) => {
  agent.failures.push({ code: Code.Internal, message: "engine exploded", afterTokens: 2 });
  const res = await fetch(`${orchestrator.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "x" }], stream: true }),
  });
  t.is(res.status, 200);
  const events = (await res.text()).split("\n\n").filter((e) => e !== "");
  t.is(events.at(-1), "data: [DONE]");
  const error = JSON.parse(events.at(-2)!.slice("data: ".length));
  t.is(error.error.type, "server_error");
  t.regex(error.error.message, /agent a failed while generating: engine exploded/);
  t.is(events.filter((e) => e.includes('"content":"Hello"')).length, 1, "the tokens before the break arrived");

  agent.failures.push({ code: Code.Internal, message: "engine exploded", afterTokens: 2 });
  await t.throwsAsync(async () => {
    for await (const _ of await openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], stream: true }));
  }, { instanceOf: OpenAI.APIError, message: /engine exploded/ });
});

test.serial("a client that disconnects cancels its generation", async (t) => {
  agent.options.tokenDelayMs = 20;
  try {
    const ctl = new AbortController();
    const res = await fetch(`${orchestrator.url}/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: "m", prompt: "x", stream: true, max_tokens: 500 }),
      signal: ctl.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    const call = agent.infers.at(-1)!;
    ctl.abort();
    for (let i = 0; i < 200 && !call.signal.aborted; i++) await sleep(10);
    t.true(call.signal.aborted);
    t.true(call.tokensSent < 500);

    // Non-streaming too: the socket closing mid-way cancels.
    const ctl2 = new AbortController();
    const pending = fetch(`${orchestrator.url}/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: "m", prompt: "x", max_tokens: 500 }),
      signal: ctl2.signal,
    }).catch(() => undefined);
    while (agent.infers.at(-1) === call) await sleep(5);
    const call2 = agent.infers.at(-1)!;
    await sleep(50);
    ctl2.abort();
    await pending;
    for (let i = 0; i < 200 && !call2.signal.aborted; i++) await sleep(10);
    t.true(call2.signal.aborted);
  } finally {
    agent.options.tokenDelayMs = 0;
  }
});

test.serial("x-request-id on every response; unknown fields are ignored; health, ready, metrics; REST over h2c", async (t) => {
  const given = await fetch(`${orchestrator.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}`, "x-request-id": "abc-123" } });
  t.is(given.headers.get("x-request-id"), "abc-123");
  for (const [path, status] of [["/health", 200], ["/ready", 200], ["/nope", 404], ["/v1/nope", 401]] as const) {
    const res = await fetch(`${orchestrator.url}${path}`);
    t.is(res.status, status, path);
    t.truthy(res.headers.get("x-request-id"), path);
  }
  const unknownPath = await fetch(`${orchestrator.url}/v1/nope`, { headers: { authorization: `Bearer ${KEY}` } });
  t.is(unknownPath.status, 404);
  t.is(((await unknownPath.json()) as { error: { type: string } }).error.type, "invalid_request_error");
  const wrongMethod = await fetch(`${orchestrator.url}/v1/chat/completions`, { headers: { authorization: `Bearer ${KEY}` } });
  t.is(wrongMethod.status, 405);
  const badJson = await fetch(`${orchestrator.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${KEY}` }, body: "{" });
  t.is(badJson.status, 400);
  t.deepEqual(Object.keys(((await badJson.json()) as { error: object }).error).sort(), ["code", "message", "param", "type"]);
  const extra = await fetch(`${orchestrator.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: "m", messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }], frobnicate: 3, metadata: { a: 1 }, store: false }),
  });
  t.is(extra.status, 200);

  const metrics = await (await fetch(`${orchestrator.url}/metrics`)).text();
  for (const name of ["inference_latency_seconds", "cache_hit_ratio", "agent_loads", "queue_lengths", "time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds", "num_requests_running", "num_requests_waiting", "prompt_tokens_total", "generation_tokens_total", "model_load_seconds", "cold_starts_total", "load_bytes_total", "http_requests_total"]) {
    t.regex(metrics, new RegExp(`^# TYPE ${name} `, "m"), name);
  }
  t.regex(metrics, /cache_hit_ratio\{model="m"\} 1/);
  t.regex(metrics, /agent_loads\{agent="a"\} 0/);

  const session = http2.connect(orchestrator.url);
  t.teardown(() => session.close());
  const body = await new Promise<string>((resolve, reject) => {
    const req = session.request({ ":path": "/v1/models", authorization: `Bearer ${KEY}` });
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (text += c));
    req.on("end", () => resolve(text));
    req.on("error", reject);
  });
  t.is(JSON.parse(body).data.length, 2);
});

test.serial("/ready is 503 until an agent is live", async (t) => {
  const empty = await startOrchestrator({ port: 0, modelsFile: null, log: () => {} });
  t.teardown(() => empty.close());
  const res = await fetch(`${empty.url}/ready`);
  t.is(res.status, 503);
});
