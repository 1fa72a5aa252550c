// The placement cost, term by term, and memory-aware packing (pure functions).
import test from "ava";
import { create } from "@bufbuild/protobuf";
import { AgentStatusSchema, Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import { CheckpointRefSchema } from "../../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import {
  FALLBACK_BANDWIDTH,
  memoryFit,
  scoreAgents,
  type DeviceView,
  type PlacementCandidate,
  type ResidentModel,
} from "../../../src/orchestrator/scheduler/placement.js";

const ref = create(CheckpointRefSchema, { modelId: "m", revision: "main" });
const W = { alpha: 1, beta: 0.5, gamma: 0.25, delta: 1, epsilon: 1, zeta: 0 };
const GB = 1e9;

function model(bytes: number) {
  return { ref, key: "m@main", bytes };
}

function agent(
  id: string,
  o: { tier?: Tier; kv?: number; queue?: number; bandwidth?: Partial<Record<Tier, number>>; devices?: readonly DeviceView[]; dramPool?: number } = {},
): PlacementCandidate {
  return {
    inflight: 0,
    devices: o.devices ?? [],
    status: create(AgentStatusSchema, {
      agentId: id,
      address: `${id}:1`,
      queueLength: o.queue ?? 0,
      models: o.tier === undefined ? [] : [{ ref: { modelId: "m", revision: "main" }, tier: o.tier, kvHitRate: o.kv ?? 0, bytes: 2_000_000_000n }],
      tiers: Object.entries(o.bandwidth ?? {}).map(([tier, bw]) => ({ tier: Number(tier), bandwidthBytesPerSecond: bw })),
      dramPoolBytes: BigInt(o.dramPool ?? 0),
    }),
  };
}

/** A device of `budget` bytes with a KV floor of `floor` per model, holding `resident` (free is what they leave). */
function device(name: string, budget: number, resident: ResidentModel[] = [], floor = 1 * GB): DeviceView {
  const used = resident.reduce((s, r) => s + r.bytes, 0);
  return { device: name, budgetBytes: budget, freeBytes: budget - used, maxModelBytes: budget - floor, resident };
}

function idle(key: string, bytes: number, idleMs: number): ResidentModel {
  return { key, bytes, running: 0, idleMs };
}

function busy(key: string, bytes: number): ResidentModel {
  return { key, bytes, running: 2, idleMs: 0 };
}

test("each term follows the formula and the lowest total is chosen", (t) => {
  const scores = scoreAgents(model(4e9), [
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
  // Agents that report no devices keep today's behaviour: no memory term, nothing judged.
  t.true(scores.every((s) => s.evictionTerm === 0 && s.ineligibleReason === ""));
  t.deepEqual(scores.map((s) => s.memory.fit), ["resident", "unknown", "unknown"]);
});

test("weights change the choice: a long queue outweighs a warm GPU when γ is large", (t) => {
  const agents = [agent("busy", { tier: Tier.GPU, queue: 20 }), agent("idle", { tier: Tier.DRAM, bandwidth: { [Tier.DRAM]: 10e9 } })];
  t.is(scoreAgents(model(1e9), agents, { ...W, gamma: 0.01 })[0].agentId, "busy");
  t.is(scoreAgents(model(1e9), agents, { ...W, gamma: 1 })[0].agentId, "idle");
});

test("unmeasured bandwidth falls back per tier; the scheduler's in-flight count beats a stale queue", (t) => {
  const c = agent("a", { tier: Tier.DISK });
  c.inflight = 7;
  const [s] = scoreAgents(model(1e9), [c], W);
  t.is(s.bandwidth, FALLBACK_BANDWIDTH[Tier.DISK]);
  t.is(s.transferSeconds, 1e9 / FALLBACK_BANDWIDTH[Tier.DISK]);
  t.is(s.queueLength, 7);
});

test("ineligible agents sort last, are never chosen, and keep their reason", (t) => {
  const dead = agent("dead", { tier: Tier.GPU });
  dead.ineligible = "expired";
  const scores = scoreAgents(model(0), [dead, agent("cold")], W);
  t.deepEqual(scores.map((s) => [s.agentId, s.chosen, s.ineligibleReason]), [["cold", true, ""], ["dead", false, "expired"]]);
  const none = scoreAgents(model(0), [dead], W);
  t.false(none[0].chosen);
});

test("ties go to the lower agent id; an override tier replaces the reported one", (t) => {
  const b = agent("b", { tier: Tier.DRAM });
  const a = agent("a", { tier: Tier.DRAM });
  t.is(scoreAgents(model(0), [b, a], W)[0].agentId, "a");
  b.tierOverride = Tier.GPU;
  t.is(scoreAgents(model(0), [b, a], W)[0].agentId, "b");
});

test("packing: resident first, then room without eviction, then the cheapest eviction", (t) => {
  const dram = { [Tier.DRAM]: 10e9 };
  // Every agent has m in DRAM except "resident"; 8 GB devices with a 1 GB KV floor; m is 4 GB.
  const resident = agent("resident", { tier: Tier.GPU, devices: [device("cuda:0", 8 * GB, [busy("m@main", 5 * GB)])] });
  const roomy = agent("roomy", { tier: Tier.DRAM, bandwidth: dram, devices: [device("cuda:0", 8 * GB, [idle("x@main", 2 * GB, 10)])] });
  const cheap = agent("cheap", { tier: Tier.DRAM, bandwidth: dram, devices: [device("cuda:0", 8 * GB, [idle("x@main", 2 * GB, 50), idle("y@main", 3 * GB, 10)])] });
  const dear = agent("dear", { tier: Tier.DRAM, bandwidth: dram, devices: [device("cuda:0", 8 * GB, [idle("big@main", 7 * GB, 99)])] });
  const scores = scoreAgents(model(4 * GB), [dear, cheap, roomy, resident], W);
  t.deepEqual(scores.map((s) => s.agentId), ["resident", "roomy", "cheap", "dear"]);
  const by = Object.fromEntries(scores.map((s) => [s.agentId, s]));

  t.is(by.resident.memory.fit, "resident");
  t.is(by.resident.memory.device, "cuda:0");
  t.is(by.resident.evictionTerm, 0);

  t.is(by.roomy.memory.fit, "fits"); // 6 GB free ≥ 4 GB + 1 GB floor
  t.is(by.roomy.memory.device, "cuda:0");
  t.is(by.roomy.evictionTerm, 0);

  // 3 GB free; 5 GB needed: the least recently used idle model (x, idle 50 ms) leaves first.
  t.is(by.cheap.memory.fit, "evicts");
  t.deepEqual(by.cheap.memory.evicted, ["x@main"]);
  t.is(by.cheap.memory.evictionBytes, 2 * GB);
  t.is(by.cheap.evictionSeconds, (2 * GB) / 10e9);
  t.is(by.cheap.evictionTerm, W.epsilon * by.cheap.evictionSeconds);
  t.is(by.cheap.total, by.cheap.cacheTerm + by.cheap.kvTerm + by.cheap.queueTerm + by.cheap.transferTerm + by.cheap.evictionTerm);

  t.is(by.dear.memory.evictionBytes, 7 * GB);
  t.true(by.dear.evictionTerm > by.cheap.evictionTerm);
  // ε weighs the eviction: at 0 an eviction costs nothing and the two evicting agents tie.
  const flat = scoreAgents(model(4 * GB), [dear, cheap], { ...W, epsilon: 0 });
  t.is(flat[0].total, flat[1].total);
});

test("packing prefers the fullest device with room, and the device that evicts least", (t) => {
  const fits = memoryFit([device("cuda:0", 20 * GB), device("cuda:1", 20 * GB, [idle("x@main", 10 * GB, 5)])], 4 * GB);
  t.deepEqual([fits.fit, fits.device], ["fits", "cuda:1"]); // 10 GB free beats 20 GB free: large holes stay for large models
  const evicts = memoryFit(
    [device("cuda:0", 10 * GB, [idle("a@main", 8 * GB, 100)]), device("cuda:1", 10 * GB, [idle("b@main", 3 * GB, 1), idle("c@main", 5 * GB, 2)])],
    4 * GB,
  );
  t.deepEqual([evicts.fit, evicts.device, evicts.evicted, evicts.evictionBytes], ["evicts", "cuda:1", ["c@main"], 5 * GB]);
});

test("models with running requests are never counted evictable: a device full of them makes the agent busy (wait), not ineligible for good", (t) => {
  const full = agent("full", { tier: Tier.DRAM, devices: [device("cuda:0", 8 * GB, [busy("x@main", 4 * GB), idle("y@main", 1 * GB, 10), busy("z@main", 2 * GB)])] });
  const [s] = scoreAgents(model(4 * GB), [full], W);
  t.is(s.memory.fit, "busy");
  t.true(s.busy);
  t.false(s.chosen);
  t.regex(s.ineligibleReason, /^busy: /);
  t.is(s.memory.evictionBytes, 0);
  // Once x finishes it may leave: the agent can take the model by evicting x (y alone is not enough).
  const freed = agent("full", { tier: Tier.DRAM, devices: [device("cuda:0", 8 * GB, [idle("x@main", 4 * GB, 1), idle("y@main", 1 * GB, 10), busy("z@main", 2 * GB)])] });
  const [after] = scoreAgents(model(4 * GB), [freed], W);
  t.deepEqual([after.memory.fit, after.memory.evicted, after.chosen], ["evicts", ["y@main", "x@main"], true]);
});

test("a model larger than every device, or than the pinned pool, is too large on that agent (with both sizes)", (t) => {
  const small = agent("small", { tier: Tier.DISK, devices: [device("cuda:0", 8 * GB), device("cuda:1", 6 * GB)] });
  const [s] = scoreAgents(model(10 * GB), [small], W);
  t.is(s.memory.fit, "too-large");
  t.false(s.busy);
  t.is(s.memory.limitBytes, 7 * GB);
  t.regex(s.ineligibleReason, /^too large: needs 9\.31 GiB, more than its largest device can hold \(6\.52 GiB\)$/);
  const pool = agent("pool", { tier: Tier.DISK, dramPool: 2 * GB });
  const [p] = scoreAgents(model(3 * GB), [pool], W);
  t.is(p.memory.fit, "too-large");
  t.is(p.memory.limitBytes, 2 * GB);
  t.regex(p.ineligibleReason, /pinned DRAM pool \(1\.86 GiB\)/);
  // A device without a budget yet (its worker has not reported): the agent's memory is not judged.
  t.is(scoreAgents(model(10 * GB), [agent("starting", { devices: [device("cuda:0", 8 * GB), { ...device("cuda:1", 0, [], 0), maxModelBytes: 0 }] })], W)[0].memory.fit, "unknown");
  // Size unknown (not converted yet, and the agent does not hold it): nothing is judged.
  t.is(scoreAgents(model(0), [agent("new", { devices: small.devices })], W)[0].memory.fit, "unknown");
});

test("the wake term: among equally fast starts, a device already in use beats an idle one, even at the price of a small eviction", (t) => {
  const ZW = { ...W, zeta: 0.3 };
  const dram = { [Tier.DRAM]: 50e9 };
  // Both agents would load the 8 GB model from the store; "empty" has a whole idle GPU, "used" must evict a 13 GB idle one (0.26 s back from DRAM).
  const empty = agent("empty", { devices: [device("cuda:0", 20 * GB)], bandwidth: dram });
  const used = agent("used", { devices: [device("cuda:0", 20 * GB, [idle("small", 13 * GB, 60_000)])], bandwidth: dram });
  const scores = scoreAgents(model(8 * GB), [empty, used], ZW);
  const by = Object.fromEntries(scores.map((s) => [s.agentId, s]));
  t.true(by.empty.wakesDevice);
  t.is(by.empty.wakeTerm, 0.3);
  t.false(by.used.wakesDevice);
  t.is(by.used.wakeTerm, 0);
  t.is(by.used.memory.fit, "evicts");
  t.is(by.used.total, by.used.cacheTerm + by.used.transferTerm + by.used.evictionTerm);
  t.true(by.used.evictionTerm < 0.3);
  t.is(scores[0].agentId, "used");
  // Without it the idle GPU wins (nothing to evict).
  t.is(scoreAgents(model(8 * GB), [empty, used], W)[0].agentId, "empty");
  // Never traded for a faster start: a DRAM copy on the idle GPU's agent still wins.
  const warm = agent("warm", { tier: Tier.DRAM, devices: [device("cuda:0", 20 * GB)], bandwidth: dram });
  t.is(scoreAgents(model(8 * GB), [warm, used], ZW)[0].agentId, "warm");
  // A resident model wakes nothing.
  t.false(scoreAgents(model(8 * GB), [agent("gpu", { tier: Tier.GPU, devices: [device("cuda:0", 20 * GB)] })], ZW)[0].wakesDevice);
});
