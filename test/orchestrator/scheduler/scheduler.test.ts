// The scheduler over real servers: an orchestrator on a loopback port and TestAgents (real
// AgentService servers with scripted behaviour) heartbeating to it. Placement, the cold-start
// flow, keep-alive, admission, retries and mid-stream failures.
import test from "ava";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import { ThawClient } from "../../../src/client/thaw-client.js";
import { startOrchestrator, type RunningOrchestrator } from "../../../src/orchestrator/orchestrator.js";
import type { ConverterLink } from "../../../src/orchestrator/scheduler/links.js";
import { sleep, TestAgent } from "../test-agent.js";
import { tempDirs } from "../../fixtures/temp-dir.js";
import { ADMIN, heartbeatRound, index, system, until } from "./system.js";

const dirs = tempDirs("thaw-scheduler-");
test.after.always(() => dirs.cleanup());

test("places by score; ExplainPlacement shows each term and the choice", async (t) => {
  const { agents, client } = await system(t, [
    { id: "a-gpu", models: { m: Tier.GPU }, kvHitRate: 0.4 },
    { id: "b-dram", models: { m: Tier.DRAM }, bandwidth: { [Tier.DRAM]: 10e9 } },
    { id: "c-remote", bandwidth: { [Tier.REMOTE]: 1e9 } },
  ]);
  const explained = await client.explainPlacement("m");
  t.deepEqual(explained.scores.map((s) => s.agentId), ["a-gpu", "b-dram", "c-remote"]);
  const [a, b, c] = explained.scores;
  t.true(a.chosen);
  t.is(a.cacheLevel, 0);
  t.is(a.kvTerm, -explained.beta * 0.4);
  t.is(b.cacheLevel, 1);
  t.is(b.transferSeconds, 1e9 / 10e9); // the agent's reported model size over its measured DRAM bandwidth
  t.is(c.cacheLevel, 3);
  t.is(c.total, c.cacheTerm + c.kvTerm + c.queueTerm + c.transferTerm);

  const done = await client.chatText("m", [{ role: "user", content: "hi" }]);
  t.is(done.text, "Hello, world!");
  t.deepEqual(done.agentIds, ["a-gpu"]);

  // A long queue on the warm agent moves the choice to the DRAM one.
  agents[0].options.extraQueue = 40;
  await heartbeatRound(agents);
  const again = await client.explainPlacement("m");
  t.is(again.scores.find((s) => s.chosen)?.agentId, "b-dram");
  t.deepEqual((await client.chatText("m", [{ role: "user", content: "hi" }])).agentIds, ["b-dram"]);
  t.is(agents[1].loads.length, 1, "the DRAM agent loaded the model first");
});

test("cold start: concurrent first requests share one conversion and one load", async (t) => {
  let conversions = 0;
  let lookups = 0;
  const converter: ConverterLink = {
    async getCheckpoint() {
      lookups++;
      return conversions > 0 ? index(1) : undefined;
    },
    async convert() {
      conversions++;
      await sleep(100);
      return index(1);
    },
  };
  const { agents, client, orchestrator } = await system(t, [{ id: "a", loadMs: 100 }], { converter });
  const results = await Promise.all(Array.from({ length: 6 }, () => client.chatText("m", [{ role: "user", content: "x" }])));
  t.true(results.every((r) => r.text === "Hello, world!"));
  t.is(conversions, 1);
  t.is(lookups, 1);
  t.is(agents[0].loads.length, 1);
  t.is(agents[0].infers.length, 6);
  const model = (await client.listModels())[0];
  t.is(model.bytes, 4096n, "the checkpoint size is recorded");
  const metrics = await orchestrator.registry.metrics();
  t.regex(metrics, /cold_starts_total\{tier="remote"\} 1/);
  t.regex(metrics, /conversions_total\{result="ok"\} 1/);
});

test("a model only in the store: chunk downloads are spread over idle agents, then peers feed the load", async (t) => {
  const converter: ConverterLink = { getCheckpoint: async () => index(5), convert: async () => index(5) };
  const { agents, client } = await system(t, [{ id: "a", bandwidth: { [Tier.REMOTE]: 2e9 } }, { id: "b" }, { id: "c" }], { converter });
  const done = await client.chatText("m", [{ role: "user", content: "x" }]);
  t.deepEqual(done.agentIds, ["a"]);
  const shares = agents.map((a) => a.downloads.flatMap((d) => d.fileNames).sort());
  t.deepEqual(shares, [["chunk-00000.bin", "chunk-00003.bin"], ["chunk-00001.bin", "chunk-00004.bin"], ["chunk-00002.bin"]]);
  t.deepEqual([...agents[0].loads[0].peers].sort(), [agents[1].address, agents[2].address].sort());
});

test("keep-alive: a model idle on a GPU longer than its TTL is unloaded, and loaded again when asked for", async (t) => {
  const { agents, client, orchestrator } = await system(t, [{ id: "a", models: { m: Tier.GPU } }]);
  await client.registerModel({ id: "m", keepAliveSeconds: 1 });
  await client.chatText("m", [{ role: "user", content: "x" }]);
  await sleep(500);
  t.is(agents[0].unloads.length, 0, "not before the TTL");
  await until(() => agents[0].unloads.length === 1, 3000);
  t.is(agents[0].unloads[0].downTo, Tier.GPU, "DRAM and disk copies stay");
  await heartbeatRound(agents);
  t.is((await client.explainPlacement("m")).scores[0].cacheLevel, 1);
  await client.chatText("m", [{ role: "user", content: "x" }]);
  t.is(agents[0].loads.length, 1, "the next request loads it again");
  t.regex(await orchestrator.registry.metrics(), /unloads_total\{reason="keep_alive"\} 1/);
});

test("a failure before the first token is retried on another agent; the failed one is suspect until it answers", async (t) => {
  const { agents, client, orchestrator } = await system(t, [{ id: "a", models: { m: Tier.GPU } }, { id: "b", models: { m: Tier.DRAM } }]);
  agents[0].failures.push({ code: Code.Unavailable, message: "engine crashed" });
  const done = await client.chatText("m", [{ role: "user", content: "x" }]);
  t.is(done.text, "Hello, world!");
  t.deepEqual(done.agentIds, ["b"]);
  t.is(agents[0].infers.length, 1);
  // "a" answers GetStatus, so the probe clears it and it wins again.
  await until(() => orchestrator.scheduler.explain("m").every((s) => s.ineligibleReason === ""));
  t.regex(await orchestrator.registry.metrics(), /request_retries_total\{model="m"\} 1/);
  // Client errors are not retried.
  agents[1].options.maxModelLen = 4;
  agents[0].options.maxModelLen = 4;
  const err = await t.throwsAsync(client.chatText("m", [{ role: "user", content: "a long prompt" }]));
  t.is((err as ConnectError).code, Code.InvalidArgument);
  t.regex((err as ConnectError).rawMessage, /max_model_len/);
});

test("an agent that dies mid-stream ends the stream with an error, and the next request goes to the other agent", async (t) => {
  const { agents, client } = await system(t, [
    { id: "a", models: { m: Tier.GPU }, tokenDelayMs: 30, reply: ["t"] },
    { id: "b", models: { m: Tier.DRAM } },
  ]);
  const seen: string[] = [];
  const err = await t.throwsAsync(async () => {
    for await (const d of client.chat("m", [{ role: "user", content: "x" }], { maxTokens: 50 })) {
      seen.push(d.text);
      if (seen.length === 3) void agents[0].kill();
    }
  });
  t.true(seen.length >= 3 && seen.length < 50);
  t.is((err as ConnectError).code, Code.Unavailable);
  t.regex((err as ConnectError).rawMessage, /agent a failed while generating/);
  const next = await client.chatText("m", [{ role: "user", content: "x" }]);
  t.deepEqual(next.agentIds, ["b"]);
});

test("admission: a full queue is refused with RESOURCE_EXHAUSTED and a retry-after hint", async (t) => {
  const { agents, client, orchestrator } = await system(t, [{ id: "a", models: { m: Tier.GPU }, tokenDelayMs: 100 }], { maxInflightPerAgent: 1, maxQueue: 1 });
  const first = client.chatText("m", [{ role: "user", content: "x" }]);
  await until(() => agents[0].inflight === 1);
  const second = client.chatText("m", [{ role: "user", content: "x" }]);
  for (let i = 0; i < 100 && !/num_requests_waiting\{model="m"\} 1/.test(await orchestrator.registry.metrics()); i++) await sleep(10);
  const err = await t.throwsAsync(client.chatText("m", [{ role: "user", content: "x" }]));
  t.is((err as ConnectError).code, Code.ResourceExhausted);
  t.regex((err as ConnectError).metadata.get("retry-after") ?? "", /^\d+$/);
  t.is((await first).text, "Hello, world!");
  t.is((await second).text, "Hello, world!", "the queued request runs once a slot frees");
});

test("with no agent a request waits for one to appear, and fails with UNAVAILABLE if none does", async (t) => {
  const impatient = await system(t, [], { agentWaitMs: 300 });
  const err = await t.throwsAsync(impatient.client.chatText("m", [{ role: "user", content: "x" }]));
  t.is((err as ConnectError).code, Code.Unavailable);
  t.regex((err as ConnectError).rawMessage, /no agent/);
  const { orchestrator, client } = await system(t, [], { agentWaitMs: 20_000 });
  const late = client.chatText("m", [{ role: "user", content: "x" }]);
  await sleep(100);
  const agent = await TestAgent.start({ id: "late", scheduler: orchestrator.url, heartbeatMs: 50 });
  t.teardown(() => agent.close());
  t.is((await late).text, "Hello, world!");
});

test("a cancelled call cancels the Infer on the agent", async (t) => {
  const { agents, client } = await system(t, [{ id: "a", models: { m: Tier.GPU }, tokenDelayMs: 20 }]);
  const ctl = new AbortController();
  const err = await t.throwsAsync(async () => {
    let n = 0;
    for await (const _ of client.chat("m", [{ role: "user", content: "x" }], { maxTokens: 1000, signal: ctl.signal })) if (++n === 2) ctl.abort();
  });
  t.truthy(err);
  await until(() => agents[0].infers[0].signal.aborted);
  t.false(agents[0].infers[0].done);
  await until(() => agents[0].inflight === 0);
});

test("agents expire without heartbeats; a restarted orchestrator rebuilds its view from heartbeats and its registry file", async (t) => {
  // Expiry is judged on a fake clock moved by the test: a slow machine cannot expire the agent early.
  let clock = 0;
  const now = () => clock;
  const modelsFile = path.join(await dirs.make(), "models.json");
  const first = await startOrchestrator({ port: 0, modelsFile, heartbeatIntervalMs: 100, agentExpiryMs: 300, now, adminToken: ADMIN, log: () => {} });
  const port = first.port;
  const agent = await TestAgent.start({ id: "a", models: { m: Tier.DISK }, scheduler: first.url, heartbeatMs: 50 });
  t.teardown(() => agent.close());
  const client = new ThawClient({ baseUrl: first.url, token: ADMIN });
  await client.registerModel({ id: "m", source: "org/m", keepAliveSeconds: 30 });
  await first.close();
  agent.stopHeartbeats();

  let second: RunningOrchestrator | undefined;
  second = await startOrchestrator({ port, modelsFile, heartbeatIntervalMs: 100, agentExpiryMs: 300, now, adminToken: ADMIN, log: () => {} });
  t.teardown(() => second!.close());
  t.deepEqual((await client.listModels()).map((m) => [m.spec?.id, m.spec?.source, m.spec?.keepAliveSeconds]), [["m", "org/m", 30]]);
  t.deepEqual(await client.listAgents(), [], "no heartbeat yet");
  await client.scheduler.heartbeat({ status: agent.status() }); // one heartbeat, no loop that could land after the clock moves
  const agents = await client.listAgents();
  t.deepEqual(agents.map((a) => [a.status?.agentId, a.expired]), [["a", false]]);
  t.deepEqual((await client.listModels())[0].placements.map((p) => [p.agentId, p.tier]), [["a", Tier.DISK]]);
  clock += 300;
  t.deepEqual((await client.listAgents()).map((a) => [a.status?.agentId, a.expired]), [["a", false]], "a heartbeat exactly expiryMs old still counts");
  clock += 1;
  t.deepEqual((await client.listAgents()).map((a) => [a.status?.agentId, a.expired]), [["a", true]]);
  t.regex((await client.explainPlacement("m")).scores[0].ineligibleReason, /^expired/);
});

test("a model served by an external runtime is never converted; LoadModel carries its launch command", async (t) => {
  let asked = 0;
  const converter: ConverterLink = {
    getCheckpoint: async () => (asked++, undefined),
    convert: async () => (asked++, index(1)),
  };
  const { agents, client } = await system(t, [{ id: "a" }], { converter });
  await client.registerModel({ id: "ext", source: "org/ext" });
  await client.scheduler.registerModel({ model: { id: "ext", launchCommand: ["vllm", "serve", "org/ext", "--port", "{port}"] } });
  const done = await client.chatText("ext", [{ role: "user", content: "x" }]);
  t.is(done.text, "Hello, world!");
  t.is(asked, 0);
  t.deepEqual(agents[0].loads.map((l) => [...l.launchCommand]), [["vllm", "serve", "org/ext", "--port", "{port}"]]);
});

test("unknown models are NOT_FOUND; unregistering works once", async (t) => {
  const { client } = await system(t, []);
  t.is(((await t.throwsAsync(client.chatText("nope", [{ role: "user", content: "x" }]))) as ConnectError).code, Code.NotFound);
  t.is(((await t.throwsAsync(client.explainPlacement("nope"))) as ConnectError).code, Code.NotFound);
  await client.unregisterModel("m");
  t.is(((await t.throwsAsync(client.unregisterModel("m"))) as ConnectError).code, Code.NotFound);
});
