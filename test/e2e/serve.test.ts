// `thaw serve` as a user meets it (the command, in its own process): converter, orchestrator, one
// real agent and its Python engine worker (CPU) in a fresh state folder, with no model configured —
// the tiny model is made and registered, and the first chat completion answers. Then the OpenAI SDKs (npm and Python), the
// Python client package, the operator CLI and keep-alive against the same running system (one
// system for the whole file: the worker takes seconds to import torch).
import test from "ava";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import OpenAI from "openai";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { ThawClient } from "../../src/client/thaw-client.js";
import { tempDirs } from "../fixtures/temp-dir.js";
import { PYTHON, PYTHON_ENV } from "../client/python.js";

const run = promisify(execFile);
const dirs = tempDirs("thaw-serve-e2e-");
let logs = "";
let serve: ChildProcess;
let stateDir: string;
let url: string;
let port: number;
let agentId = "";
let thaw: ThawClient;
/** The operators' secret thaw serve made and kept in the state folder. */
let admin = "";

test.before(async () => {
  stateDir = await dirs.make();
  serve = spawn(
    process.execPath,
    [
      path.resolve("src/cli/thaw.js"),
      "serve",
      "--port", "0",
      "--state-dir", stateDir,
      "--engines", "cpu",
      "--python", process.env.THAW_PYTHON ?? "/usr/bin/python3",
      "--dram-bytes", "64M",
      "--disk-bytes", "1G",
      "--heartbeat-interval", "200",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  serve.stdout!.on("data", (d) => (logs += d));
  url = await new Promise<string>((resolve, reject) => {
    serve.stderr!.on("data", (d) => {
      logs += d;
      const m = /OpenAI API on (http:\/\/[\d.]+:\d+)\/v1/.exec(logs);
      if (m) resolve(m[1]);
    });
    serve.once("exit", (code) => reject(new Error(`thaw serve exited with ${code}:\n${logs}`)));
  });
  port = Number(new URL(url).port);
  admin = (await readFile(path.join(stateDir, "admin-token"), "utf8")).trim();
  thaw = new ThawClient({ baseUrl: url, token: admin });
  for (let i = 0; i < 100 && !agentId; i++) {
    agentId = (await thaw.listAgents())[0]?.status?.agentId ?? "";
    if (!agentId) await new Promise((r) => setTimeout(r, 100));
  }
});

test.after.always(async () => {
  if (serve && serve.exitCode === null) {
    const exited = new Promise((resolve) => serve.once("exit", resolve));
    serve.kill("SIGTERM");
    await exited;
  }
  await dirs.cleanup();
});

test.afterEach.always((t) => {
  if (!t.passed) t.log(logs);
});

test.serial("the first chat completion answers with the tiny model, no configuration", async (t) => {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    body: '{"model":"tiny","messages":[{"role":"user","content":"hi"}]}',
  });
  t.is(res.status, 200);
  const body = (await res.json()) as { object: string; choices: { message: { role: string; content: string }; finish_reason: string }[]; usage: { completion_tokens: number } };
  t.is(body.object, "chat.completion");
  t.is(body.choices[0].message.role, "assistant");
  t.is(typeof body.choices[0].message.content, "string");
  t.true(["stop", "length"].includes(body.choices[0].finish_reason));
  t.true(body.usage.completion_tokens > 0);
  t.truthy(res.headers.get("x-request-id"));
  t.deepEqual((await thaw.listModels()).map((m) => m.spec?.id), ["tiny"]);
  t.truthy(agentId);
  t.regex(await (await fetch(`${url}/metrics`)).text(), /cold_starts_total\{tier="remote"\} 1/);
});

test.serial("a hostile chat template and a 30 MB prompt are 400s, and a normal request beside them is answered", async (t) => {
  const post = (body: unknown) => fetch(`${url}/v1/chat/completions`, { method: "POST", body: JSON.stringify(body) });
  const messages = [{ role: "user", content: "hi" }];
  const hostile = post({ model: "tiny", messages, max_tokens: 2, chat_template: "{% for i in range(100000000) %}x{% endfor %}" });
  const looping = post({ model: "tiny", messages, max_tokens: 2, chat_template: "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}" });
  const huge = post({ model: "tiny", messages: [{ role: "user", content: "x".repeat(30 << 20) }], max_tokens: 2 });
  const normal = post({ model: "tiny", messages, max_tokens: 2 });
  const [h, l, g, n] = await Promise.all([hostile, looping, huge, normal]);
  t.is(n.status, 200);
  t.is(((await n.json()) as { object: string }).object, "chat.completion");
  for (const [res, pattern] of [[h, /range of 100000000 numbers/], [l, /ran more than \d+ steps/], [g, /maximum context length/]] as const) {
    t.is(res.status, 400);
    const body = (await res.json()) as { error: { message: string; type: string } };
    t.is(body.error.type, "invalid_request_error");
    t.regex(body.error.message, pattern);
  }
  t.regex(logs, /OpenAI API on/);
  t.is(serve.exitCode, null, "thaw serve is still running");
});

test.serial("openai (npm): streaming chat with usage, completions from token ids, greedy n=2 agree, logprobs", async (t) => {
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
  const chunks = [];
  for await (const c of await openai.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hello" }], max_tokens: 12, stream: true, stream_options: { include_usage: true } })) chunks.push(c);
  t.is(chunks[0].choices[0].delta.role, "assistant");
  t.true(chunks.at(-1)!.usage!.completion_tokens > 0);
  t.deepEqual(chunks.at(-1)!.choices, []);
  t.true(["stop", "length"].includes(chunks.at(-2)!.choices[0]?.finish_reason ?? ""));

  const greedy = await openai.completions.create({ model: "tiny", prompt: [72, 101, 108, 108, 111], max_tokens: 8, temperature: 0, n: 2, logprobs: 2 });
  t.is(greedy.choices.length, 2);
  t.is(greedy.choices[0].text, greedy.choices[1].text, "greedy choices agree");
  const lp = greedy.choices[0].logprobs!;
  t.is(lp.token_logprobs!.length, greedy.usage!.completion_tokens / 2);
  t.true(lp.token_logprobs!.every((x) => typeof x === "number" && x <= 0));

  const chat = await openai.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 4, logprobs: true, top_logprobs: 3, ignore_eos: true } as never);
  const content = (chat as OpenAI.Chat.Completions.ChatCompletion).choices[0].logprobs!.content!;
  t.is(content.length, 4);
  t.is(content[0].top_logprobs.length, 3);
});

test.serial("openai (Python): chat, stream, completions, typed errors", async (t) => {
  const { stdout } = await run(PYTHON, ["test/e2e/openai_python_check.py", `${url}/v1`, "tiny", "unused", "chat,stream,completions,errors"], { env: PYTHON_ENV });
  const out = JSON.parse(stdout);
  t.is(out.chat.object, "chat.completion");
  t.is(out.chat.content_type, "str");
  t.is(out.stream.first_role, "assistant");
  t.is(out.stream.usage_choices, 0);
  t.deepEqual(out.completions.indexes, [0, 1, 2, 3]);
  t.deepEqual(out.errors, { not_found: "model_not_found", bad_request: "temperature", context_length: "context_length_exceeded" });
});

test.serial("the Python client package calls the running system", async (t) => {
  // thaw_client sends its token (THAW_INTERNAL_TOKEN by default) as the Bearer credential: the admin token here.
  const { stdout } = await run(PYTHON, ["test/client/python_client_check.py", `127.0.0.1:${port}`, "tiny"], { env: { ...PYTHON_ENV, THAW_INTERNAL_TOKEN: admin } });
  const out = JSON.parse(stdout);
  t.deepEqual(out.models, ["tiny"]);
  t.deepEqual(out.agents, [agentId]);
  t.deepEqual(out.chosen, [agentId]);
  t.is(out.chat.completion_tokens <= 4, true);
  t.deepEqual(out.chat.agents, [agentId]);
  t.is(out.not_found, "NOT_FOUND");
});

test.serial("operator CLI: thaw models, thaw agents, thaw explain (with the admin token serve keeps in its state folder)", async (t) => {
  t.is((await stat(path.join(stateDir, "admin-token"))).mode & 0o777, 0o600);
  // THAW_HOME names the state folder, where the operator commands find the admin token.
  const env = { ...process.env, THAW_HOME: stateDir, THAW_ADMIN_TOKEN: "" };
  const thaw = (...args: string[]) => run(process.execPath, [path.resolve("src/cli/thaw.js"), ...args, "--orchestrator", url], { env });
  const anonymous = await run(process.execPath, [path.resolve("src/cli/thaw.js"), "agents", "--orchestrator", url], { env: { ...env, THAW_HOME: path.join(stateDir, "elsewhere") } }).catch((err: { stderr: string }) => err);
  t.regex(anonymous.stderr, /ListAgents needs the admin token/);
  t.regex((await thaw("models", "list")).stdout, /^tiny\s+\/.*tiny@main/m);
  t.regex((await thaw("agents")).stdout, new RegExp(`${agentId}\\s+127\\.0\\.0\\.1:\\d+\\s+live`));
  const explained = (await thaw("explain", "tiny")).stdout;
  t.regex(explained, new RegExp(`\\* ${agentId}`));
  t.regex(explained, /level 0/);
  t.regex((await thaw("models", "add", "other", "--source", "org/other", "--keep-alive", "30")).stdout, /registered other/);
  t.regex((await thaw("models", "rm", "other")).stdout, /removed other/);
});

test.serial("keep-alive: the real agent's model leaves the GPU after its TTL and comes back on the next request", async (t) => {
  const client = thaw;
  await client.registerModel({ id: "tiny", source: path.join(stateDir, "models", "tiny"), keepAliveSeconds: 1 });
  const tier = async () => (await client.listAgents())[0].status?.models.find((m) => m.ref?.modelId === "tiny")?.tier;
  t.is(await tier(), Tier.GPU);
  const deadline = Date.now() + 8000;
  while ((await tier()) === Tier.GPU && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  t.not(await tier(), Tier.GPU);
  const metrics = async () => (await fetch(`${url}/metrics`)).text();
  while (!/unloads_total\{reason="keep_alive"\} 1/.test(await metrics()) && Date.now() < deadline + 2000) await new Promise((r) => setTimeout(r, 50));
  t.regex(await metrics(), /unloads_total\{reason="keep_alive"\} 1/);
  t.regex(logs, /unloaded tiny@main from .* \(keep_alive\)/);
  const again = await client.chatText("tiny", [{ role: "user", content: "hi" }], { maxTokens: 2 });
  t.true(again.usage.completionTokens > 0);
  t.deepEqual(again.agentIds, [agentId]);
});

test.serial("SIGTERM shuts the whole system down cleanly, engine worker included", async (t) => {
  const exited = new Promise<number | null>((resolve) => serve.once("exit", (code) => resolve(code)));
  serve.kill("SIGTERM");
  t.is(await exited, 0);
  t.regex(logs, /shutting down/);
});
