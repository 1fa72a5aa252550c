// SchedulerService in memory (createRouterTransport): request validation and the RPC shapes,
// with no network and no agent.
import test from "ava";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { Registry } from "prom-client";
import { AgentStatusSchema, Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import { SchedulerService } from "../../../src/gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { OrchestratorMetrics } from "../../../src/orchestrator/metrics.js";
import { Admission } from "../../../src/orchestrator/scheduler/admission.js";
import { AgentRegistry } from "../../../src/orchestrator/scheduler/agent-registry.js";
import { ModelRegistry } from "../../../src/orchestrator/scheduler/model-registry.js";
import { Scheduler } from "../../../src/orchestrator/scheduler/scheduler.js";
import { SchedulerServiceImpl } from "../../../src/orchestrator/scheduler/scheduler-service.js";

async function client(now = () => 1_000_000) {
  const scheduler = new Scheduler(
    {
      agents: new AgentRegistry({ expiryMs: 3000, forgetMs: 60_000, now }),
      models: await ModelRegistry.open(undefined, now),
      admission: new Admission({ maxInflightPerAgent: 4, maxQueue: 4 }),
      metrics: new OrchestratorMetrics(new Registry()),
      connector: {
        client: () => {
          throw new Error("no agent calls in these tests");
        },
        // Every agent here proves itself: "a:1" is agent "a".
        identify: async (address) => address.split(":")[0],
      },
      now,
    },
    { weights: { alpha: 2, beta: 1, gamma: 0.5, delta: 0.25, epsilon: 3, zeta: 0.125 }, heartbeatIntervalMs: 750, agentWaitMs: 0 },
  );
  const transport = createRouterTransport((router) => router.service(SchedulerService, new SchedulerServiceImpl(scheduler)));
  return createClient(SchedulerService, transport);
}

test("heartbeats name the interval and need an agent id and address", async (t) => {
  const c = await client();
  t.is((await c.heartbeat({ status: { agentId: "a", address: "a:1" } })).intervalMs, 750);
  for (const status of [undefined, { agentId: "", address: "x:1" }, { agentId: "a", address: "" }]) {
    const err = await t.throwsAsync(c.heartbeat({ status }));
    t.is((err as ConnectError).code, Code.InvalidArgument);
  }
});

test("register fills defaults; list; explain reports the weights; unknown models are NOT_FOUND", async (t) => {
  const c = await client();
  const { model } = await c.registerModel({ model: { id: "org/m" } });
  t.deepEqual([model?.spec?.source, model?.spec?.revision, model?.spec?.keepAliveSeconds, model?.spec?.ownedBy], ["org/m", "main", 300, "thaw"]);
  t.is(((await t.throwsAsync(c.registerModel({}))) as ConnectError).code, Code.InvalidArgument);
  const external = await c.registerModel({ model: { id: "ext", launchCommand: ["vllm", "serve", "org/ext", "--port", "{port}"] } });
  t.deepEqual(external.model?.spec?.launchCommand, ["vllm", "serve", "org/ext", "--port", "{port}"]);
  t.is(((await t.throwsAsync(c.registerModel({ model: { id: "x", launchCommand: ["vllm", " "] } }))) as ConnectError).code, Code.InvalidArgument);
  await c.unregisterModel({ id: "ext" });
  await c.heartbeat({ status: create(AgentStatusSchema, { agentId: "a", address: "a:1", models: [{ ref: { modelId: "org/m" }, tier: Tier.DISK, bytes: 10n }] }) });
  const explained = await c.explainPlacement({ model: "org/m" });
  t.deepEqual([explained.alpha, explained.beta, explained.gamma, explained.delta, explained.epsilon, explained.zeta], [2, 1, 0.5, 0.25, 3, 0.125]);
  t.is(explained.modelBytes, 0n, "unknown until converted");
  t.deepEqual(explained.scores.map((s) => [s.agentId, s.cacheLevel, s.cacheTerm, s.chosen]), [["a", 2, 4, true]]);
  t.deepEqual((await c.listModels({})).models[0].placements.map((p) => [p.agentId, p.tier]), [["a", Tier.DISK]]);
  // An agent that reports devices: where the model would go, and what it would evict.
  const GB = 1_000_000_000n;
  await c.heartbeat({
    status: create(AgentStatusSchema, {
      agentId: "b",
      address: "b:1",
      models: [{ ref: { modelId: "org/m" }, tier: Tier.DISK, bytes: 4n * GB }],
      tiers: [{ tier: Tier.DRAM, bandwidthBytesPerSecond: 8e9 }],
      devices: [{ device: "cuda:0", budgetBytes: 8n * GB, freeBytes: 2n * GB, maxModelBytes: 7n * GB, resident: [{ ref: { modelId: "x" }, bytes: 6n * GB, idleMs: 5n }] }],
    }),
  });
  const b = (await c.explainPlacement({ model: "org/m" })).scores.find((s) => s.agentId === "b")!;
  t.deepEqual([b.device, b.fitsWithoutEviction, b.evictionBytes, b.evictionTerm], ["cuda:0", false, 6n * GB, (3 * 6e9) / 8e9]);
  t.is(((await t.throwsAsync(c.explainPlacement({ model: "nope" }))) as ConnectError).code, Code.NotFound);
});

test("completion requests are validated before anything is placed", async (t) => {
  const c = await client();
  await c.registerModel({ model: { id: "m" } });
  const drain = async (it: AsyncIterable<unknown>) => {
    for await (const _ of it);
  };
  t.is(((await t.throwsAsync(drain(c.chatCompletion({ model: "m", messages: [] })))) as ConnectError).code, Code.InvalidArgument);
  t.is(((await t.throwsAsync(drain(c.completion({ model: "m" })))) as ConnectError).code, Code.InvalidArgument);
  t.is(((await t.throwsAsync(drain(c.completion({ model: "m", prompt: { case: "text", value: "x" }, options: { n: 1000 } })))) as ConnectError).code, Code.InvalidArgument);
  t.is(((await t.throwsAsync(drain(c.completion({ model: "nope", prompt: { case: "text", value: "x" } })))) as ConnectError).code, Code.NotFound);
  // No agent and no wait: UNAVAILABLE, with the reason.
  const err = (await t.throwsAsync(drain(c.completion({ model: "m", prompt: { case: "text", value: "x" } })))) as ConnectError;
  t.is(err.code, Code.Unavailable);
  t.regex(err.rawMessage, /no agent has sent a heartbeat/);
});
