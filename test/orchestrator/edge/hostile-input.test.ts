// The edge against inputs a hostile or careless client sends, with the official OpenAI SDK (npm)
// and plain HTTP: numbers beyond the proto fields they fill are 400s naming the field (never a
// 500 that blames the agent), malformed percent-encoding is a 400, /v1/models shows no local
// path, and a client whose agent died gets a 503 server_error, never a 499 "cancelled".
import test from "ava";
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ThawClient } from "../../../src/client/thaw-client.js";
import { ADMIN } from "../scheduler/system.js";
import { Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import { ChatCompletionRequestSchema } from "../../../src/gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { startOrchestrator, type RunningOrchestrator } from "../../../src/orchestrator/orchestrator.js";
import { TestAgent } from "../test-agent.js";

const here = path.dirname(fileURLToPath(import.meta.url));
let orchestrator: RunningOrchestrator;
let agent: TestAgent;
let openai: OpenAI;

test.before(async () => {
  orchestrator = await startOrchestrator({
    port: 0,
    modelsFile: null,
    heartbeatIntervalMs: 100,
    agentExpiryMs: 5000,
    agentWaitMs: 300,
    maxAttempts: 1,
    models: [{ id: "m" }, { id: "local", source: "/home/someone/secret-models/local" }, { id: "hub", source: "org/hub-model" }],
    adminToken: ADMIN,
    log: () => {},
  });
  agent = await TestAgent.start({ id: "a", models: { m: Tier.GPU }, scheduler: orchestrator.url, heartbeatMs: 50 });
  openai = new OpenAI({ baseURL: `${orchestrator.url}/v1`, apiKey: "none", maxRetries: 0 });
});

test.after.always(async () => {
  await agent?.close();
  await orchestrator?.close();
});

async function post(endpoint: string, body: unknown): Promise<{ status: number; error: { type: string; param: string | null; message: string; code: string | null } }> {
  const res = await fetch(`${orchestrator.url}${endpoint}`, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, error: ((await res.json()) as { error: never }).error };
}

const chat = { model: "m", messages: [{ role: "user", content: "hi" }] };

test.serial("numbers beyond the proto fields they fill are 400s naming the field; no agent sees them or is made suspect", async (t) => {
  const infers = agent.infers.length;
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ["/v1/chat/completions", { max_tokens: 4294967296 }, "max_tokens", /at most 4294967295/],
    ["/v1/chat/completions", { max_completion_tokens: 2 ** 53 }, "max_completion_tokens", /at most 4294967295/],
    ["/v1/chat/completions", { min_tokens: 4294967296 }, "min_tokens", /at most 4294967295/],
    ["/v1/chat/completions", { top_k: 4294967296 }, "top_k", /at most 4294967295/],
    ["/v1/chat/completions", { n: 4294967296 }, "n", /at most 128/],
    ["/v1/chat/completions", { logprobs: true, top_logprobs: 4294967296 }, "top_logprobs", /at most 20/],
    ["/v1/chat/completions", { repetition_penalty: 1e39 }, "repetition_penalty", /32-bit float/],
    ["/v1/chat/completions", { repetition_penalty: 1e-50 }, "repetition_penalty", /greater than 0/],
    ["/v1/chat/completions", { presence_penalty: -1e39 }, "presence_penalty", /32-bit float/],
    ["/v1/chat/completions", { seed: 18446744073709551616 }, "seed", /less than 18446744073709552000/],
    ["/v1/chat/completions", { seed: -1e30 }, "seed", /at least/],
    ["/v1/chat/completions", { best_of: 1e300 }, "best_of", /at most 4294967295/],
    ["/v1/completions", { prompt: "x", logprobs: 4294967296 }, "logprobs", /at most 20/],
    ["/v1/completions", { prompt: [4294967296] }, "prompt", /token ids/],
    ["/v1/completions", { prompt: "x", stop_token_ids: [4294967296] }, "stop_token_ids", /token ids/],
  ];
  for (const [endpoint, fields, param, message] of cases) {
    const base = endpoint === "/v1/chat/completions" ? chat : { model: "m" };
    const { status, error } = await post(endpoint, { ...base, ...fields });
    t.is(status, 400, `${JSON.stringify(fields)}: ${error.message}`);
    t.is(error.type, "invalid_request_error");
    t.is(error.param, param, JSON.stringify(fields));
    t.regex(error.message, message, JSON.stringify(fields));
  }
  // JSON has no NaN or Infinity, but 1e400 parses to Infinity.
  const infinite = await post("/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":1e400}`);
  t.is(infinite.status, 400);
  t.is(infinite.error.param, "temperature");

  const sdk = await t.throwsAsync(openai.chat.completions.create({ ...chat, messages: [{ role: "user", content: "hi" }], max_tokens: 4294967296 }), { instanceOf: OpenAI.BadRequestError });
  t.is((sdk as InstanceType<typeof OpenAI.BadRequestError>).param, "max_tokens");

  t.is(agent.infers.length, infers, "nothing reached the agent");
  const explained = await new ThawClient({ baseUrl: orchestrator.url, token: ADMIN }).explainPlacement("m");
  t.is(explained.scores[0].ineligibleReason, "", "the agent is still placed on");
  // Limits themselves pass: the largest values the fields hold.
  const edge = await openai.chat.completions.create({ ...chat, messages: [{ role: "user", content: "hi" }], max_tokens: 4, seed: 2 ** 63, top_k: 4294967295 } as never);
  t.is((edge as OpenAI.Chat.Completions.ChatCompletion).choices[0].message.content, "Hello, world!");
  t.is(agent.infers.at(-1)!.request.sampling?.seed, 2n ** 63n);
});

test.serial("an agent's answer to bad input (INVALID_ARGUMENT) is a 400 and does not make it suspect", async (t) => {
  agent.options.maxModelLen = 4;
  try {
    const long = await t.throwsAsync(openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "a prompt too long" }] }), { instanceOf: OpenAI.BadRequestError });
    t.is((long as InstanceType<typeof OpenAI.BadRequestError>).code, "context_length_exceeded");
  } finally {
    agent.options.maxModelLen = undefined;
  }
  t.is((await new ThawClient({ baseUrl: orchestrator.url, token: ADMIN }).explainPlacement("m")).scores[0].ineligibleReason, "");
  t.is((await openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }] })).choices[0].message.content, "Hello, world!");
});

test.serial("malformed percent-encoding in /v1/models/{id} is a 400, never a 500", async (t) => {
  for (const id of ["%", "%zz", "%E0%A4%A", "abc%"]) {
    const res = await fetch(`${orchestrator.url}/v1/models/${id}`);
    t.is(res.status, 400, id);
    const { error } = (await res.json()) as { error: { type: string; code: string } };
    t.is(error.type, "invalid_request_error");
    t.is(error.code, "invalid_url");
  }
  t.is((await fetch(`${orchestrator.url}/v1/models/org%2Fnope`)).status, 404);
  t.is((await openai.models.retrieve("hub")).id, "hub");
});

test.serial("/v1/models shows a local model's id, never the path it comes from", async (t) => {
  const list = await openai.models.list();
  const byId = new Map(list.data.map((m) => [m.id, m as unknown as { root: string; owned_by: string }]));
  t.is(byId.get("local")?.root, "local");
  t.is(byId.get("hub")?.root, "org/hub-model", "a Hub repository is public");
  t.is(byId.get("m")?.root, "m");
  const text = JSON.stringify(list.data) + JSON.stringify(await openai.models.retrieve("local"));
  t.false(text.includes("/home/"), text);
});

test.serial("an agent that cancels from its side (its process ending) is a 503 server_error, not a 499", async (t) => {
  agent.failures.push({ code: Code.Canceled, message: "http/2 stream closed with error code CANCEL (0x8)" });
  const err = await t.throwsAsync(openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }] }), { instanceOf: OpenAI.InternalServerError });
  const e = err as InstanceType<typeof OpenAI.InternalServerError>;
  t.is(e.status, 503);
  t.is(e.type, "server_error");
  t.is(e.code, "service_unavailable");
  t.regex(e.message, /agent a went away/);
  // the agent is suspect until a probe answers, which the running TestAgent does
  await until(async () => (await new ThawClient({ baseUrl: orchestrator.url, token: ADMIN }).explainPlacement("m")).scores[0].ineligibleReason === "");
});

/** An orchestrator with one TestAgent in a child process that the test can SIGKILL; lines the child prints come through `lines`. */
async function doomedSystem(t: import("ava").ExecutionContext, agentOptions: Record<string, unknown>) {
  const system = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentExpiryMs: 5000, agentWaitMs: 300, maxAttempts: 1, models: [{ id: "m" }], log: () => {} });
  t.teardown(() => system.close());
  const options = { id: "doomed", models: { m: Tier.GPU }, scheduler: system.url, heartbeatMs: 50, ...agentOptions };
  const child = spawn(process.execPath, ["--import=tsx", path.join(here, "../test-agent-process.ts"), JSON.stringify(options)], { stdio: ["ignore", "pipe", "inherit"] });
  t.teardown(() => child.kill("SIGKILL"));
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  t.is((await lines.next()).value, "ready");
  return { system, child, lines };
}

test.serial("an agent killed mid-stream (SIGKILL): the stream ends with a server_error event and [DONE]", async (t) => {
  const { system, child } = await doomedSystem(t, { tokenDelayMs: 50, reply: ["x"] });
  const res = await fetch(`${system.url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true, max_tokens: 1000 }),
  });
  t.is(res.status, 200);
  const reader = res.body!.getReader();
  let text = "";
  while (!text.includes('"content":"x"')) text += new TextDecoder().decode((await reader.read()).value);
  child.kill("SIGKILL");
  for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
  const events = text.split("\n\n").filter((e) => e !== "");
  t.is(events.at(-1), "data: [DONE]");
  const error = JSON.parse(events.at(-2)!.slice("data: ".length)).error;
  t.is(error.type, "server_error");
  t.regex(error.message, /agent doomed failed while generating/);
});

test.serial("an agent killed (SIGKILL) before its first token: the client gets a 503 service_unavailable, not a 499", async (t) => {
  const { system, child, lines } = await doomedSystem(t, { tokenDelayMs: 60_000 });
  const pending = fetch(`${system.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }) });
  t.is((await lines.next()).value, "infer");
  child.kill("SIGKILL");
  const res = await pending;
  const body = (await res.json()) as { error: { type: string; code: string; message: string } };
  t.is(res.status, 503, body.error.message);
  t.is(body.error.type, "server_error");
  t.is(body.error.code, "service_unavailable");
  t.regex(body.error.message, /agent doomed went away/);
});

async function until(cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500 && !(await cond()); i++) await new Promise((r) => setTimeout(r, 10));
}

test("in-process callers of the scheduler get INVALID_ARGUMENT for numbers the wire cannot carry", (t) => {
  const request = (sampling: Record<string, unknown>) =>
    create(ChatCompletionRequestSchema, { model: "m", messages: [{ role: "user", content: "hi" }], sampling: sampling as never });
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ maxTokens: 2 ** 32 }, /sampling\.max_tokens is 4294967296/],
    [{ topK: -1 }, /sampling\.top_k/],
    [{ repetitionPenalty: 1e39 }, /sampling\.repetition_penalty is 1e\+39: not a finite 32-bit float/],
    [{ temperature: Number.NaN }, /sampling\.temperature is NaN/],
    [{ seed: 1n << 64n }, /sampling\.seed/],
    [{ stopTokenIds: [1, 2 ** 32] }, /sampling\.stop_token_ids/],
  ];
  for (const [sampling, message] of cases) {
    const err = t.throws(() => orchestrator.scheduler.chat(request(sampling), new AbortController().signal), { instanceOf: ConnectError });
    t.is(err?.code, Code.InvalidArgument);
    t.regex(err?.rawMessage ?? "", message);
  }
});
