// Who may call what on the orchestrator's one port, over real sockets: user API keys grant the
// OpenAI API and the generation RPCs only; the model registry (and with it launch commands),
// ListAgents and ExplainPlacement need the admin token; Heartbeat needs the internal token; and an
// agent is placed on only once it proved itself at the address it reports — a heartbeat naming
// someone else's address, or nothing at all, never attracts a prompt.
import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { ThawClient } from "../../src/client/thaw-client.js";
import { startOrchestrator, type RunningOrchestrator } from "../../src/orchestrator/orchestrator.js";
import { TestAgent } from "./test-agent.js";

const TOKEN = "internal-secret";
const ADMIN = "admin-secret";
const KEY = "user-key";

let orchestrator: RunningOrchestrator;
let agent: TestAgent;
const as = (token?: string) => new ThawClient({ baseUrl: orchestrator.url, token });

test.before(async () => {
  orchestrator = await startOrchestrator({
    port: 0,
    modelsFile: null,
    heartbeatIntervalMs: 100,
    agentExpiryMs: 5000,
    agentWaitMs: 300,
    token: TOKEN,
    adminToken: ADMIN,
    apiKeys: [KEY],
    models: [{ id: "m" }],
    log: () => {},
  });
  agent = await TestAgent.start({ id: "good", models: { m: Tier.GPU }, scheduler: orchestrator.url, heartbeatMs: 50, token: TOKEN });
});

test.after.always(async () => {
  await agent?.close();
  await orchestrator?.close();
});

async function code(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream);
}

test.serial("the model registry needs the admin token: none is UNAUTHENTICATED, a user key or the internal token PERMISSION_DENIED", async (t) => {
  for (const [who, expected] of [[undefined, Code.Unauthenticated], ["wrong", Code.Unauthenticated], [KEY, Code.PermissionDenied], [TOKEN, Code.PermissionDenied]] as const) {
    const c = as(who);
    t.is(await code(c.registerModel({ id: "x", source: "org/x" })), expected, `RegisterModel as ${who}`);
    t.is(await code(c.unregisterModel("m")), expected, `UnregisterModel as ${who}`);
    t.is(await code(c.explainPlacement("m")), expected, `ExplainPlacement as ${who}`);
    t.is(await code(c.listAgents()), expected, `ListAgents as ${who}`);
  }
  t.deepEqual((await as(ADMIN).listModels()).map((m) => m.spec?.id), ["m"], "nothing was registered or removed");
  const err = ConnectError.from(await t.throwsAsync(as(KEY).registerModel({ id: "x" })));
  t.regex(err.rawMessage, /needs the admin token \(THAW_ADMIN_TOKEN or --admin-token/);
});

test.serial("a launch command is registered by an operator only: a user key cannot make an agent run a command", async (t) => {
  const launch = { model: { id: "ext", launchCommand: ["sh", "-c", "touch /tmp/pwned"] } };
  t.is(await code(as(KEY).scheduler.registerModel(launch)), Code.PermissionDenied);
  t.is(await code(as().scheduler.registerModel(launch)), Code.Unauthenticated);
  t.false((await as(ADMIN).listModels()).some((m) => m.spec?.id === "ext"));
  t.true(agent.loads.every((l) => l.launchCommand.length === 0));
});

test.serial("Completion and ChatCompletion over the edge port take what /v1 takes: no key is refused, a user key works", async (t) => {
  t.is(await code(drain(as().scheduler.completion({ model: "m", prompt: { case: "text", value: "x" } }))), Code.Unauthenticated);
  t.is(await code(drain(as().scheduler.chatCompletion({ model: "m", messages: [{ role: "user", content: "x" }] }))), Code.Unauthenticated);
  t.is(await code(as().listModels()), Code.Unauthenticated);
  t.is(await code(as(TOKEN).listModels()), Code.PermissionDenied, "the internal token is for heartbeats");
  const done = await as(KEY).completeText("m", "x", { maxTokens: 2 });
  t.is(done.text, "Hello,");
  t.deepEqual(done.agentIds, ["good"]);
  const rest = await fetch(`${orchestrator.url}/v1/models`);
  t.is(rest.status, 401);
});

test.serial("Heartbeat needs the internal token; a user key or the admin token do not register an agent", async (t) => {
  const fake = { agentId: "rogue", address: agent.address, models: [{ ref: { modelId: "m" }, tier: Tier.GPU }] };
  t.is(await code(as().scheduler.heartbeat({ status: fake })), Code.Unauthenticated);
  t.is(await code(as(KEY).scheduler.heartbeat({ status: fake })), Code.PermissionDenied);
  t.is(await code(as(ADMIN).scheduler.heartbeat({ status: fake })), Code.PermissionDenied);
  t.deepEqual((await as(ADMIN).listAgents()).map((a) => a.status?.agentId), ["good"]);
});

test.serial("an agent that cannot prove the internal token is listed but never placed on, even with a heartbeat that carried it", async (t) => {
  // A stranger's AgentService (no token), announced by a heartbeat that did carry the token.
  const stranger = await TestAgent.start({ id: "stranger", models: { m: Tier.GPU }, kvHitRate: 1 });
  t.teardown(() => stranger.close());
  const err = ConnectError.from(await t.throwsAsync(as(TOKEN).scheduler.heartbeat({ status: stranger.status() })));
  t.is(err.code, Code.PermissionDenied);
  t.regex(err.rawMessage, /did not prove that it is an agent holding this deployment's internal token/);
  const scores = (await as(ADMIN).explainPlacement("m")).scores;
  t.regex(scores.find((s) => s.agentId === "stranger")!.ineligibleReason, /^unverified: could not verify it at/);
  for (let i = 0; i < 3; i++) t.deepEqual((await as(KEY).completeText("m", "x", { maxTokens: 1 })).agentIds, ["good"]);
  t.is(stranger.infers.length, 0, "no prompt reached the stranger");
});

test.serial("without an internal token (loopback), a heartbeat naming another agent's address, or one where nothing listens, is not placed on", async (t) => {
  const open = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentExpiryMs: 5000, agentWaitMs: 300, adminToken: ADMIN, models: [{ id: "m" }], log: () => {} });
  t.teardown(() => open.close());
  const real = await TestAgent.start({ id: "real", models: { m: Tier.DISK }, scheduler: open.url, heartbeatMs: 50 });
  t.teardown(() => real.close());
  const client = new ThawClient({ baseUrl: open.url, token: ADMIN });
  // Claims the model on its GPU (placement would prefer it) at the real agent's address.
  const impostor = client.scheduler.heartbeat({ status: { agentId: "impostor", address: real.address, models: [{ ref: { modelId: "m" }, tier: Tier.GPU }] } });
  t.regex(ConnectError.from(await t.throwsAsync(impostor)).rawMessage, /could not verify it at 127\.0\.0\.1:\d+: the agent at .* is "real"/);
  const nowhere = client.scheduler.heartbeat({ status: { agentId: "ghost", address: "127.0.0.1:1", models: [{ ref: { modelId: "m" }, tier: Tier.GPU }] } });
  t.is(ConnectError.from(await t.throwsAsync(nowhere)).code, Code.PermissionDenied);
  const scores = (await client.explainPlacement("m")).scores;
  t.deepEqual(scores.filter((s) => s.ineligibleReason.startsWith("unverified")).map((s) => s.agentId).sort(), ["ghost", "impostor"]);
  const done = await client.completeText("m", "x", { maxTokens: 1 });
  t.deepEqual(done.agentIds, ["real"]);
});
