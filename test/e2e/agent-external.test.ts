// An external OpenAI-compatible runtime behind the agent: the agent starts the server (a small SSE
// server here, a real HTTP process), waits for its health, forwards Infer and maps the SSE chunks
// back to InferResponse messages.
import test from "ava";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { EngineState, Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { AgentService, type InferRequestSchema, type InferResponse } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { FinishReason } from "../../src/gen/thaw/engine/v1/engine_pb.js";
import { type RunningAgent, startAgent } from "../../src/agent/start-agent.js";
import { type OwnedClient, tcpClient } from "../../src/agent/rpc-clients.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const SERVER = path.join(path.dirname(fileURLToPath(import.meta.url)), "../agent/fixtures/openai-sse-server.mjs");
const dirs = tempDirs("thaw-agent-ext-");
let agent: RunningAgent;
let owned: OwnedClient<typeof AgentService>;
const ref = { modelId: "ext-model" };

test.before(async () => {
  agent = await startAgent({
    dir: path.join(await dirs.make(), "agent"),
    port: 0,
    engines: "none",
    dramBytes: 0,
    externalModels: [{ modelId: "ext-model", command: [process.execPath, SERVER, "{port}"], servedModelName: "served-name", startTimeoutMs: 20_000 }],
    allowLaunch: true,
    log: () => {},
  });
  owned = tcpClient(AgentService, agent.url);
});

test.after.always(async () => {
  owned?.close();
  await agent?.close();
  await dirs.cleanup();
});

async function infer(request: Omit<MessageInitShape<typeof InferRequestSchema>, "ref">): Promise<InferResponse[]> {
  const out: InferResponse[] = [];
  for await (const r of owned.client.infer({ ...request, ref } as MessageInitShape<typeof InferRequestSchema>)) out.push(r);
  return out;
}

/** Base URL of the runtime the agent started (found from its listening socket). */
let externalUrl = "";

/** What the runtime last received, and how many clients left it mid-stream. */
async function debug(): Promise<{ lastBody: Record<string, unknown>; disconnects: number }> {
  return (await fetch(`${externalUrl}/debug`)).json() as Promise<{ lastBody: Record<string, unknown>; disconnects: number }>;
}

test.serial("LoadModel starts the server and waits for its health", async (t) => {
  let last;
  for await (const p of owned.client.loadModel({ ref })) last = p;
  t.true(last!.ready);
  t.is(last!.engineId, "external-ext-model");
  const engine = agent.status().engines.find((e) => e.engineId === "external-ext-model")!;
  t.is(engine.state, EngineState.SERVING);
  t.true(engine.pid > 0);
  t.is(agent.status().models.find((m) => m.ref?.modelId === "ext-model")?.tier, Tier.GPU);
  // engine.pid is the runtime's guardian (runtime-guardian.js); the server is its child.
  externalUrl = await portOf(await childOf(engine.pid));
});

/** The one child of a process (from /proc). */
async function childOf(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, "utf8")).trim().split(/\s+/).filter((c) => c !== "");
  if (children.length !== 1) throw new Error(`${pid} has children ${JSON.stringify(children)}`);
  return Number(children[0]);
}

/** The loopback URL a process listens on, from /proc (the agent picks the runtime's port). */
async function portOf(pid: number): Promise<string> {
  const { readFile, readdir, readlink } = await import("node:fs/promises");
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(m[1]);
  }
  for (const line of (await readFile("/proc/net/tcp", "utf8")).split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols[3] === "0A" && inodes.has(cols[9])) return `http://127.0.0.1:${parseInt(cols[1].split(":")[1], 16)}`;
  }
  throw new Error(`no listening socket of ${pid}`);
}

test.serial("a text completion streams back as InferResponse messages with usage", async (t) => {
  const out = await infer({
    prompt: { case: "text", value: "Say something" },
    sampling: { maxTokens: 3, temperature: 0.5, topP: 0.9, seed: 7n, topK: 5 },
    stop: ["never"],
    requestId: "req-1",
  });
  t.is(out.map((r) => r.text).join(""), "one two three");
  t.true(out.length >= 4, "one message per chunk, then the finish");
  const final = out.at(-1)!;
  t.is(final.finishReason, FinishReason.LENGTH);
  t.is(final.usage?.promptTokens, "Say something".length);
  t.is(final.usage?.completionTokens, 3);
  t.is(final.usage?.cachedTokens, 2);
  const { lastBody } = await debug();
  t.like(lastBody, { model: "served-name", prompt: "Say something", stream: true, max_tokens: 3, top_p: 0.9, seed: 7, top_k: 5, stop: ["never"] });
  t.is(lastBody.temperature, 0.5);
});

test.serial("a chat completion goes to /v1/chat/completions; stop reasons come back", async (t) => {
  const out = await infer({
    prompt: { case: "chat", value: { messages: [{ role: "user", content: "hi" }], addGenerationPrompt: true } },
    stop: ["four"],
  });
  t.is(out.map((r) => r.text).join(""), "one two three");
  t.is(out.at(-1)!.finishReason, FinishReason.STOP);
  t.is(out.at(-1)!.stopReason, "four");
  const { lastBody } = await debug();
  t.deepEqual(lastBody.messages, [{ role: "user", content: "hi" }]);
});

test.serial("an error event mid-stream becomes a gRPC error", async (t) => {
  const err = await t.throwsAsync(infer({ prompt: { case: "text", value: "error-midway" } }));
  t.regex(ConnectError.from(err).message, /the engine fell over/);
});

test.serial("cancelling the Infer call closes the HTTP stream to the runtime", async (t) => {
  const before = (await debug()).disconnects;
  const abort = new AbortController();
  await t.throwsAsync(async () => {
    let n = 0;
    for await (const _ of owned.client.infer({ ref, prompt: { case: "text", value: "slow" } }, { signal: abort.signal })) if (++n === 3) abort.abort();
  });
  const deadline = Date.now() + 5000;
  while ((await debug()).disconnects === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.is((await debug()).disconnects, before + 1);
});

test.serial("UnloadModel stops the server; Infer is refused until LoadModel starts it again", async (t) => {
  const pid = agent.status().engines.find((e) => e.device === "external")!.pid;
  t.true((await owned.client.unloadModel({ ref })).unloaded);
  t.not(agent.status().engines.find((e) => e.device === "external")!.state, EngineState.SERVING);
  const refused = ConnectError.from(await t.throwsAsync(infer({ prompt: { case: "text", value: "x" } })));
  t.is(refused.code, Code.FailedPrecondition);
  t.is(refused.rawMessage, "ext-model@main is not loaded on this agent (LoadModel first)");
  for await (const _ of owned.client.loadModel({ ref }));
  const out = await infer({ prompt: { case: "tokens", value: { tokenIds: [1, 2, 3] } }, sampling: { maxTokens: 2 } });
  t.is(out.map((r) => r.text).join(""), "one two");
  const engine = agent.status().engines.find((e) => e.device === "external")!;
  t.is(engine.state, EngineState.SERVING);
  t.not(engine.pid, pid);
  const err = await t.throwsAsync(async () => {
    for await (const _ of owned.client.infer({ ref: { modelId: "not-configured" }, prompt: { case: "text", value: "x" } }));
  });
  t.is(ConnectError.from(err).code, Code.FailedPrecondition);
});

test.serial("LoadModel can name the command (launch_command) when the agent allows it", async (t) => {
  const dynamic = { modelId: "served-name" }; // the fixture serves only this name; here it is also the model id
  const launchCommand = [process.execPath, SERVER, "{port}"];
  let last;
  for await (const p of owned.client.loadModel({ ref: dynamic, launchCommand })) last = p;
  t.true(last!.ready);
  t.is(last!.engineId, "external-served-name");
  const out: InferResponse[] = [];
  for await (const r of owned.client.infer({ ref: dynamic, prompt: { case: "text", value: "x" }, sampling: { maxTokens: 2 } })) out.push(r);
  t.is(out.map((r) => r.text).join(""), "one two");
  const other = await t.throwsAsync(async () => {
    for await (const _ of owned.client.loadModel({ ref: dynamic, launchCommand: ["sleep", "1"] }));
  });
  t.is(ConnectError.from(other).code, Code.FailedPrecondition);

  const strict = await startAgent({ dir: path.join(await dirs.make(), "strict"), port: 0, engines: "none", dramBytes: 0, log: () => {} });
  const client = tcpClient(AgentService, strict.url);
  const refused = await t.throwsAsync(async () => {
    for await (const _ of client.client.loadModel({ ref: dynamic, launchCommand }));
  });
  t.is(ConnectError.from(refused).code, Code.FailedPrecondition);
  t.regex(ConnectError.from(refused).rawMessage, /starts launch commands only when it runs with --allow-launch/);
  client.close();
  await strict.close();
});
