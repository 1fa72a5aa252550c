// The placement cost, term by term (pure function).
import test from "ava";
import { create } from "@bufbuild/protobuf";
import { AgentStatusSchema, Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import { CheckpointRefSchema } from "../../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { FALLBACK_BANDWIDTH, scoreAgents, type PlacementCandidate } from "../../../src/orchestrator/scheduler/placement.js";

const ref = create(CheckpointRefSchema, { modelId: "m", revision: "main" });
const W = { alpha: 1, beta: 0.5, gamma: 0.25, delta: 1 };

function agent(id: string, o: { tier?: Tier; kv?: number; queue?: number; bandwidth?: Partial<Record<Tier, number>> } = {}): PlacementCandidate {
  return {
    inflight: 0,
    status: create(AgentStatusSchema, {
      agentId: id,
      address: `${id}:1`,
      queueLength: o.queue ?? 0,
      models: o.tier === undefined ? [] : [{ ref: { modelId: "m", revision: "main" }, tier: o.tier, kvHitRate: o.kv ?? 0, bytes: 2_000_000_000n }],
      tiers: Object.entries(o.bandwidth ?? {}).map(([tier, bw]) => ({ tier: Number(tier), bandwidthBytesPerSecond: bw })),
    }),
  };
}

test("each term follows the formula and the lowest total is chosen", (t) => {
  const scores = scoreAgents(ref, 4e9, [
    agent("gpu", { tier: Tier.GPU, kv: 0.5, queue: 4 }),
    agent("dram", { tier: Tier.DRAM, bandwidth: { [Tier.DRAM]: 20e9 } }),
    agent("remote", { bandwidth: { [Tier.REMOTE]: 1e9 } }),
  ], W);
  const by = Object.fromEntries(scores.map((s) => [s.agentId, s]));
  t.is(by.gpu.cacheLevel, 0);
  t.is(by.gpu.kvTerm, -0.25);
  t.is(by.gpu.queueTerm, 1);
  t.is(by.gpu.transferSeconds, 0);
  t.is(by.gpu.total, 0.75);
  t.is(by.dram.cacheLevel, 1);
  t.is(by.dram.transferSeconds, 0.2);
  t.is(by.dram.total, 1.2);
  t.is(by.remote.cacheLevel, 3);
  t.is(by.remote.transferSeconds, 4);
  t.is(by.remote.total, 7);
  t.deepEqual(scores.map((s) => s.agentId), ["gpu", "dram", "remote"]);
  t.deepEqual(scores.map((s) => s.chosen), [true, false, false]);
});

test("weights change the choice: a long queue outweighs a warm GPU when γ is large", (t) => {
  const agents = [agent("busy", { tier: Tier.GPU, queue: 20 }), agent("idle", { tier: Tier.DRAM, bandwidth: { [Tier.DRAM]: 10e9 } })];
  t.is(scoreAgents(ref, 1e9, agents, { ...W, gamma: 0.01 })[0].agentId, "busy");
  t.is(scoreAgents(ref, 1e9, agents, { ...W, gamma: 1 })[0].agentId, "idle");
});

test("unmeasured bandwidth falls back per tier; the scheduler's in-flight count beats a stale queue", (t) => {
  const c = agent("a", { tier: Tier.DISK });
  c.inflight = 7;
  const [s] = scoreAgents(ref, 1e9, [c], W);
  t.is(s.bandwidth, FALLBACK_BANDWIDTH[Tier.DISK]);
  t.is(s.transferSeconds, 1e9 / FALLBACK_BANDWIDTH[Tier.DISK]);
  t.is(s.queueLength, 7);
});

test("ineligible agents sort last, are never chosen, and keep their reason", (t) => {
  const dead = agent("dead", { tier: Tier.GPU });
  dead.ineligible = "expired";
  const scores = scoreAgents(ref, 0, [dead, agent("cold")], W);
  t.deepEqual(scores.map((s) => [s.agentId, s.chosen, s.ineligibleReason]), [["cold", true, ""], ["dead", false, "expired"]]);
  const none = scoreAgents(ref, 0, [dead], W);
  t.false(none[0].chosen);
});

test("ties go to the lower agent id; an override tier replaces the reported one", (t) => {
  const b = agent("b", { tier: Tier.DRAM });
  const a = agent("a", { tier: Tier.DRAM });
  t.is(scoreAgents(ref, 0, [b, a], W)[0].agentId, "a");
  b.tierOverride = Tier.GPU;
  t.is(scoreAgents(ref, 0, [b, a], W)[0].agentId, "b");
});
