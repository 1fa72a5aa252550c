// The scheduler when its view or its agents fail it, over real servers: a hung LoadModel times out
// and the request is served elsewhere; an agent that no longer holds a model answers "not loaded"
// and the scheduler loads it again; a load nobody waits for finishes; and a request that can be
// placed never waits behind one that cannot.
import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import type { ConverterLink } from "../../../src/orchestrator/scheduler/links.js";
import { index, system, until } from "./system.js";

const GB = 1e9;

test("a hung LoadModel times out, its agent stays suspect, and the request and the next are served elsewhere", async (t) => {
  // "hung" scores best (the model in DRAM there), but its LoadModel never reports past its first message.
  const { agents, client, orchestrator } = await system(
    t,
    [
      { id: "hung", models: { m: Tier.DRAM }, hangLoads: true },
      { id: "ok", models: { m: Tier.DISK } },
    ],
    { progressTimeoutMs: 200, suspectHoldMs: 600_000 },
  );
  const [hung, ok] = agents;
  t.is((await client.explainPlacement("m")).scores[0].agentId, "hung");
  const first = await client.chatText("m", [{ role: "user", content: "hi" }]);
  t.deepEqual(first.agentIds, ["ok"]);
  t.is(hung.cancelledLoads.length, 1, "the hung call was cancelled on the agent");
  const metrics = await orchestrator.registry.metrics();
  t.regex(metrics, /agent_progress_timeouts_total\{rpc="LoadModel"\} 1/);
  t.regex(metrics, /request_retries_total\{model="m"\} 1/);
  // It answers GetStatus (probes), but a hung load proves nothing about loads: it stays out for the hold.
  const explained = (await client.explainPlacement("m")).scores.find((s) => s.agentId === "hung")!;
  t.regex(explained.ineligibleReason, /^suspect: LoadModel of m on agent hung: no progress for 0\.200 s/);
  t.deepEqual((await client.chatText("m", [{ role: "user", content: "hi" }])).agentIds, ["ok"]);
  t.is(hung.loads.length, 1);
  t.is(ok.loads.length, 1);
});

test("a helper whose DownloadChunks hangs is left out after the timeout and made suspect; the load goes on without it", async (t) => {
  const converter: ConverterLink = { getCheckpoint: async () => index(4), convert: async () => index(4) };
  const { agents, client, orchestrator } = await system(
    t,
    [{ id: "a", bandwidth: { [Tier.REMOTE]: 2e9 } }, { id: "b", hangDownloads: true }, { id: "c" }],
    { converter, progressTimeoutMs: 200, suspectHoldMs: 600_000 },
  );
  const [a, b, c] = agents;
  const done = await client.chatText("m", [{ role: "user", content: "x" }]);
  t.deepEqual(done.agentIds, ["a"]);
  t.is(b.downloads.length, 1, "b was asked for its share");
  t.deepEqual([...a.loads[0].peers], [c.address], "only the helper that finished is a peer");
  t.regex(await orchestrator.registry.metrics(), /agent_progress_timeouts_total\{rpc="DownloadChunks"\} 1/);
  t.regex((await client.explainPlacement("m")).scores.find((s) => s.agentId === "b")!.ineligibleReason, /^suspect: DownloadChunks of m@main on agent b: no progress/);
});

test("a model the agent no longer holds: Infer answers \"not loaded\", the scheduler loads it again and serves there", async (t) => {
  const { agents, client, orchestrator } = await system(t, [{ id: "a", models: { m: Tier.GPU } }], { agentExpiryMs: 600_000 });
  const [a] = agents;
  // The scheduler's view goes stale: the agent drops the model and says nothing.
  a.stopHeartbeats();
  a.drop("m");
  t.is((await client.explainPlacement("m")).scores[0].cacheLevel, 0, "the scheduler still believes it resident");
  const done = await client.chatText("m", [{ role: "user", content: "hi" }]);
  t.is(done.text, "Hello, world!");
  t.deepEqual(done.agentIds, ["a"]);
  t.is(a.infers.length, 2, "one refused, one served");
  t.is(a.loads.length, 1, "loaded by the scheduler, the one owner of loads");
  const metrics = await orchestrator.registry.metrics();
  t.regex(metrics, /not_loaded_reloads_total\{model="m"\} 1/);
  t.notRegex(metrics, /request_retries_total\{model="m"\} [1-9]/, "not a retry elsewhere");
});

test("a model that other loads keep taking away is a 503 to try again, never a 400, and the agent stays usable", async (t) => {
  const { agents, client } = await system(t, [{ id: "a", models: { m: Tier.DRAM }, loseModelsAfterLoad: true }]);
  const [a] = agents;
  const err = ConnectError.from(await t.throwsAsync(client.chatText("m", [{ role: "user", content: "hi" }])));
  t.is(err.code, Code.Unavailable);
  t.regex(err.rawMessage, /lost m to other loads/);
  t.true(a.loads.length > 1, "loaded again after each \"not loaded\"");
  t.is((await client.explainPlacement("m")).scores[0].ineligibleReason, "", "not made suspect: the agent is not broken");
});

test("a load nobody waits for any more runs to its end and leaves the model resident", async (t) => {
  const { agents, client } = await system(t, [{ id: "a", models: { m: Tier.DRAM }, loadMs: 300 }]);
  const [a] = agents;
  const ctl = new AbortController();
  const abandoned = client.chatText("m", [{ role: "user", content: "hi" }], { signal: ctl.signal });
  await until(() => a.loads.length === 1);
  ctl.abort();
  await t.throwsAsync(abandoned);
  await until(() => a.tiers.get("m") === Tier.GPU);
  t.is(a.cancelledLoads.length, 0, "the LoadModel call was not cancelled");
  await until(async () => (await client.explainPlacement("m")).scores[0].cacheLevel === 0);
  await client.chatText("m", [{ role: "user", content: "hi" }]);
  t.is(a.loads.length, 1, "the next request found it loaded");
});

test("admission: a request whose agent is idle does not wait behind another model's queue", async (t) => {
  const sizes = { big: 6 * GB, n: 2 * GB };
  const converter: ConverterLink = {
    getCheckpoint: async (ref) => index(1, ref.modelId, sizes[ref.modelId as keyof typeof sizes]),
    convert: async (job) => index(1, job.modelId, sizes[job.modelId as keyof typeof sizes]),
  };
  // "big" fits only agent A (B's device is too small for it); n is resident on B. One sequence per agent.
  const { agents, client, orchestrator } = await system(
    t,
    [
      { id: "A", devices: [{ device: "cuda:0", budgetBytes: 10 * GB }], sizes },
      { id: "B", devices: [{ device: "cuda:0", budgetBytes: 4 * GB }], sizes, models: { n: Tier.GPU } },
    ],
    { models: [{ id: "big" }, { id: "n" }], converter, maxInflightPerAgent: 1 },
  );
  const [A, B] = agents;
  const resumeA = A.pause();
  const first = client.chatText("big", [{ role: "user", content: "1" }]);
  await until(() => A.runningBy.get("big") === 1);
  const second = client.chatText("big", [{ role: "user", content: "2" }]); // A is full: it waits
  await until(async () => /num_requests_waiting\{model="big"\} 1/.test(await orchestrator.registry.metrics()));
  // B is idle and holds n: served now, while "big" still waits for A.
  const other = await client.chatText("n", [{ role: "user", content: "3" }]);
  t.deepEqual(other.agentIds, ["B"]);
  t.is(B.infers.length, 1);
  t.is(A.infers.length, 1, "the first big request still holds A");
  resumeA();
  t.deepEqual((await first).agentIds, ["A"]);
  t.deepEqual((await second).agentIds, ["A"]);
});

test("a stall of the orchestrator (its sweeps late) is not its agents' silence: no stream is ended for it", async (t) => {
  // A fake clock the test moves; sweeps called by hand (the periodic ones in between see no time pass).
  let clock = 0;
  const { orchestrator, agents, client } = await system(t, [{ id: "a", models: { m: Tier.GPU }, tokenDelayMs: 50, reply: ["x"] }], {
    now: () => clock,
    agentExpiryMs: 300,
    sweepIntervalMs: 100,
  });
  const [a] = agents;
  await until(async () => (await client.explainPlacement("m")).scores[0]?.ineligibleReason === "");
  a.stopHeartbeats(); // its last heartbeat is at clock 0
  const stream = client.chat("m", [{ role: "user", content: "x" }], { maxTokens: 1000 });
  const first = await stream.next();
  t.false(first.done);
  const { scheduler } = orchestrator;
  scheduler.sweep(); // clock 0: on time
  clock += 10_000; // the orchestrator stalled far beyond the expiry: its own sweep is late too
  scheduler.sweep();
  clock += 200;
  scheduler.sweep(); // on time, but not yet for a whole expiry since the stall
  const next = await stream.next(); // still flowing: a stall of the orchestrator is not the agent's silence
  t.false(next.done);
});
