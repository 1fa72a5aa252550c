// The TypeScript client (src/client) against an orchestrator with TestAgents behind it, over
// gRPC (h2c) and over Connect (HTTP/1.1).
import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { ThawClient, tierName } from "../../src/client/index.js";
import { startOrchestrator, type RunningOrchestrator } from "../../src/orchestrator/orchestrator.js";
import { TestAgent } from "../orchestrator/test-agent.js";

let orchestrator: RunningOrchestrator;
let agent: TestAgent;
const ADMIN = "admin-secret";
/** Sends the internal token, as an agent does. */
const internal = () => new ThawClient({ baseUrl: orchestrator.url, token: "s3cret" });

test.before(async () => {
  orchestrator = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentExpiryMs: 5000, token: "s3cret", adminToken: ADMIN, log: () => {} });
  // Heartbeats are sent by the test (the agent holds the internal token and proves it when asked).
  agent = await TestAgent.start({ id: "a", models: { m: Tier.DISK }, token: "s3cret" });
  await internal().scheduler.heartbeat({ status: agent.status() });
});

test.after.always(async () => {
  await agent?.close();
  await orchestrator?.close();
});

for (const protocol of ["grpc", "connect"] as const) {
  test.serial(`models, agents, explain and completions over ${protocol}`, async (t) => {
    const thaw = new ThawClient({ baseUrl: orchestrator.url, token: ADMIN, protocol });
    // What the previous loop loaded is remembered until a heartbeat two intervals later says otherwise.
    agent.tiers.set("m", Tier.DISK);
    await new Promise((r) => setTimeout(r, 250));
    await internal().scheduler.heartbeat({ status: agent.status() });
    const info = await thaw.registerModel({ id: "m", source: "org/m", keepAliveSeconds: 60 });
    t.is(info.spec?.source, "org/m");
    t.deepEqual((await thaw.listModels()).map((m) => [m.spec?.id, m.placements.map((p) => [p.agentId, tierName(p.tier)])]), [["m", [["a", "disk"]]]]);
    t.deepEqual((await thaw.listAgents()).map((a) => a.status?.agentId), ["a"]);
    const explained = await thaw.explainPlacement("m");
    t.is(explained.scores[0].cacheLevel, 2);
    t.true(explained.scores[0].chosen);

    const chat = await thaw.chatText("m", [{ role: "user", content: "hi" }], { maxTokens: 2, seed: 1 });
    t.is(chat.text, "Hello,");
    t.deepEqual(chat.finishReasons, ["length"]);
    t.deepEqual(chat.usage, { promptTokens: 2, completionTokens: 2 });
    const deltas = [];
    for await (const d of thaw.complete("m", [1, 2, 3], { n: 2, logprobs: 1 })) deltas.push(d);
    t.deepEqual([...new Set(deltas.map((d) => d.index))].sort(), [0, 1]);
    t.is(deltas.filter((d) => d.finishReason === "stop").length, 2);
    t.is(deltas[0].tokens[0].logprobs?.top.length, 1);
    t.is(deltas[0].agentId, "a");

    const missing = await t.throwsAsync(thaw.chatText("nope", [{ role: "user", content: "x" }]));
    t.is((missing as ConnectError).code, Code.NotFound);
    await thaw.unregisterModel("m");
    t.deepEqual(await thaw.listModels(), []);
  });
}

test.serial("without a credential the orchestrator refuses; the internal token only heartbeats", async (t) => {
  const err = await t.throwsAsync(new ThawClient(orchestrator.url.replace("http://", "")).listAgents());
  t.is((err as ConnectError).code, Code.Unauthenticated);
  const denied = await t.throwsAsync(internal().listAgents());
  t.is((denied as ConnectError).code, Code.PermissionDenied);
  t.regex((denied as ConnectError).rawMessage, /needs the admin token/);
});

test.serial("RPC responses carry x-request-id; calls are counted by method and code", async (t) => {
  const thaw = new ThawClient({ baseUrl: orchestrator.url, token: ADMIN });
  let header = null as string | null; // assigned in a callback, which narrowing does not see
  await thaw.scheduler.listAgents({}, { headers: { "x-request-id": "rpc-1" }, onHeader: (h) => (header = h.get("x-request-id")) });
  t.is(header, "rpc-1");
  const metrics = await orchestrator.registry.metrics();
  t.regex(metrics, /rpc_requests_total\{method="ListAgents",code="OK"\} \d+/);
  t.regex(metrics, /rpc_requests_total\{method="ListAgents",code="Unauthenticated"\} 1/);
  t.regex(metrics, /rpc_requests_total\{method="ListAgents",code="PermissionDenied"\} 1/);
  t.regex(metrics, /rpc_requests_total\{method="ChatCompletion",code="NotFound"\} 2/);
  t.regex(metrics, /rpc_duration_seconds_count\{method="Completion"\} 2/);
});
