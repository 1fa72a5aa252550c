// Memory-aware placement over real servers: agents with per-device byte budgets (TestAgents that
// evict like the real agent), evictions seen by placement before any heartbeat, models with
// running requests never evicted, and a model that fits no agent answered 400 through the edge.
import test from "ava";
import OpenAI from "openai";
import { Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import type { ConverterLink } from "../../../src/orchestrator/scheduler/links.js";
import { index, system, until } from "./system.js";

const GB = 1e9;

/** A converter whose checkpoints are already published, of the given sizes. */
function published(sizes: Record<string, number>): ConverterLink {
  return {
    getCheckpoint: async (ref) => index(1, ref.modelId, sizes[ref.modelId]),
    convert: async (job) => index(1, job.modelId, sizes[job.modelId]),
  };
}

test("evictions reported by LoadModel reach placement at once; a model with running requests is never evicted", async (t) => {
  const sizes = { a: 4 * GB, b: 4 * GB, c: 4 * GB };
  // One device with room for two of them (4 GB weights + 1 GB KV floor each); c on the agent's disk.
  // Heartbeats only at start: everything placement knows afterwards it learns from its own calls.
  const { agents, client } = await system(
    t,
    [{ id: "x", devices: [{ device: "cuda:0", budgetBytes: 10 * GB }], kvFloorBytes: 1 * GB, sizes, models: { c: Tier.DISK }, heartbeatMs: 600_000 }],
    { models: [{ id: "a" }, { id: "b" }, { id: "c" }], converter: published(sizes), agentExpiryMs: 600_000 },
  );
  const [x] = agents;
  await client.chatText("a", [{ role: "user", content: "hi" }]);
  await client.chatText("b", [{ role: "user", content: "hi" }]);
  const before = (await client.explainPlacement("c")).scores[0];
  t.deepEqual([before.fitsWithoutEviction, before.evictionBytes, before.device], [false, BigInt(5 * GB), "cuda:0"], "one of a and b must leave");

  // a is generating (held before its first token), b is idle: c evicts b, never a.
  const resume = x.pause();
  const running = client.chatText("a", [{ role: "user", content: "hi" }]);
  await until(() => x.runningBy.get("a") === 1);
  const whileBusy = (await client.explainPlacement("c")).scores[0];
  t.is(whileBusy.evictionBytes, BigInt(5 * GB));
  t.is(whileBusy.evictionTerm, (5 * GB) / 10e9, "ε·bytes / DRAM bandwidth (the fallback 10 GB/s, unmeasured)");
  const third = client.chatText("c", [{ role: "user", content: "hi" }]);
  await until(() => x.loads.length === 3);
  resume();
  t.deepEqual((await third).agentIds, ["x"]);
  t.is((await running).text, "Hello, world!");
  t.deepEqual([...x.deviceOf.keys()].sort(), ["a", "c"], "the agent evicted b, the idle one");

  // No heartbeat since: the scheduler learnt the eviction from LoadModel's answer.
  const b = (await client.explainPlacement("b")).scores[0];
  t.is(b.cacheLevel, 1, "b is back in DRAM");
  t.is(b.evictionBytes, BigInt(5 * GB), "and would need one of a and c to leave");
  t.is((await client.explainPlacement("c")).scores[0].cacheLevel, 0);
  t.is((await client.explainPlacement("a")).scores[0].cacheLevel, 0);
});

test("a model larger than every agent's largest device or pinned pool is a 400 naming both sizes, never a 429", async (t) => {
  const sizes = { huge: 10 * GB, m: 1 * GB };
  const { orchestrator, agents } = await system(
    t,
    [
      { id: "small", devices: [{ device: "cuda:0", budgetBytes: 4 * GB }], sizes },
      { id: "pooled", devices: [{ device: "cuda:0", budgetBytes: 80 * GB }], dramPoolBytes: 6 * GB, sizes },
    ],
    { models: [{ id: "huge" }, { id: "m" }], converter: published(sizes) },
  );
  const openai = new OpenAI({ baseURL: `${orchestrator.url}/v1`, apiKey: "unused", maxRetries: 0 });
  const err = await t.throwsAsync(openai.chat.completions.create({ model: "huge", messages: [{ role: "user", content: "hi" }] }));
  t.true(err instanceof OpenAI.BadRequestError, String(err));
  const e = err as InstanceType<typeof OpenAI.BadRequestError>;
  t.is(e.status, 400);
  t.is(e.code, "model_too_large");
  t.is(e.param, "model");
  t.is(e.headers?.get("retry-after") ?? null, null);
  // The roomiest agent is "pooled", limited by its pinned pool: both sizes are named.
  t.regex(e.message, /model huge fits no agent: on agent pooled, the roomiest of 2, it needs 9\.31 GiB, more than its pinned DRAM pool \(5\.59 GiB\)/);
  t.deepEqual(agents.map((a) => a.loads.length), [0, 0], "nothing was loaded (or evicted) for it");

  // Streaming too: the error comes before the stream starts, as a plain 400.
  const res = await fetch(`${orchestrator.url}/v1/completions`, { method: "POST", body: JSON.stringify({ model: "huge", prompt: "x", stream: true }) });
  t.is(res.status, 400);
  t.is(((await res.json()) as { error: { code: string } }).error.code, "model_too_large");

  // A model that fits is served as usual.
  t.is((await openai.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }] })).choices[0].message.content, "Hello, world!");
});
