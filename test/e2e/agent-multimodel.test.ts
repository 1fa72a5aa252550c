// Many models in one engine worker, through a real agent (real sockets, the real Python worker on
// CPU): three tiny models (Llama, Mistral, Qwen2) resident at once, interleaved streams that equal
// one-at-a-time runs, Infer refusing a model that is not resident, unloading one model while another
// streams, eviction of the least recently used idle model (never a busy one) under a small device
// budget, waiting for room bounded by the caller, the fits-nowhere and larger-than-the-pool errors,
// per-device heartbeats, and a worker killed with two models resident.
// One agent serves every test (importing torch takes seconds), so tests run in order.
import test from "ava";
import path from "node:path";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { type AgentStatus, EngineState, Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { AgentService, type InferResponse, type LoadModelResponse } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { SchedulerService } from "../../src/gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { FinishReason } from "../../src/gen/thaw/engine/v1/engine_pb.js";
import { convertModel } from "../../src/converter/convert.js";
import { type RunningAgent, startAgent } from "../../src/agent/start-agent.js";
import { type OwnedClient, tcpClient } from "../../src/agent/rpc-clients.js";
import { type RunningServer, startServer } from "../../src/shared/server.js";
import { tempDirs } from "../fixtures/temp-dir.js";
import { CHUNK_SIZE, paddedTinyModel, tinyStore } from "../agent/fixtures/checkpoints.js";

const PYTHON = process.env.THAW_PYTHON ?? "/usr/bin/python3";
const MiB = 1 << 20;
const FLOOR = MiB;
const POOL = 32 * MiB;
const KV_POOL = 16 * MiB;
const dirs = tempDirs("thaw-agent-multi-");
const logs: string[] = [];
let onLog: ((line: string) => void) | undefined;
const heartbeats: AgentStatus[] = [];
let sizes = new Map<string, number>();
let gpuBytes = 0;
let agent: RunningAgent;
let scheduler: RunningServer;
let owned: OwnedClient<typeof AgentService>;

const ref = (model: string) => ({ modelId: `tiny-${model}` });
const MODELS = ["llama", "mistral", "qwen2"] as const;

test.before(async () => {
  const dir = await dirs.make();
  const made = await tinyStore(dir, [...MODELS]);
  // A fourth model (the Llama's weights under another name), and two too large for this agent.
  made.indexes.set("tiny-llama-2", await convertModel({ source: path.join(dir, "hf", "llama"), modelId: "tiny-llama-2", store: made.store, chunkSize: CHUNK_SIZE }));
  sizes = new Map([...made.indexes].map(([id, index]) => [id, Number(index.totalBytes)]));
  const largest = Math.max(...sizes.values());
  // Room for three models with their floors, not four.
  gpuBytes = 3 * (largest + FLOOR) + 64 * 1024;
  made.indexes.set("tiny-big", await paddedTinyModel(dir, made.store, "tiny-big", gpuBytes));
  made.indexes.set("tiny-huge", await paddedTinyModel(dir, made.store, "tiny-huge", POOL + MiB));
  for (const id of ["tiny-big", "tiny-huge"]) sizes.set(id, Number(made.indexes.get(id)!.totalBytes));

  scheduler = await startServer({
    routes: (r: ConnectRouter) =>
      r.service(SchedulerService, {
        heartbeat: (req) => {
          heartbeats.push(req.status!);
          return { intervalMs: 100 };
        },
      }),
  });
  agent = await startAgent({
    dir: path.join(dir, "agent"),
    port: 0,
    store: made.store,
    engines: "cpu",
    python: PYTHON,
    dramBytes: POOL,
    diskBytes: 1 << 30,
    gpuBytes,
    kvFloorBytes: FLOOR,
    kvPoolBytes: KV_POOL,
    engineArgs: ["--threads", "1"],
    healthIntervalMs: 200,
    scheduler: `127.0.0.1:${scheduler.port}`,
    heartbeatIntervalMs: 100,
    log: (line) => {
      logs.push(line);
      onLog?.(line);
    },
  });
  owned = tcpClient(AgentService, agent.url);
});

test.after.always(async () => {
  owned?.close();
  await agent?.close();
  await scheduler?.close();
  await dirs.cleanup();
});

test.afterEach.always((t) => {
  if (!t.passed) t.log(logs.slice(-40).join("\n"));
});

async function load(model: string, signal?: AbortSignal, inferFollows = false): Promise<LoadModelResponse> {
  let last: LoadModelResponse | undefined;
  for await (const p of owned.client.loadModel({ ref: ref(model), inferFollows }, { signal })) last = p;
  return last!;
}

const greedy = (maxTokens: number) => ({ temperature: 0, maxTokens, ignoreEos: true });
const PROMPT = { case: "text" as const, value: "The quick brown fox" };

async function infer(model: string, maxTokens = 24): Promise<number[]> {
  const out: InferResponse[] = [];
  for await (const r of owned.client.infer({ ref: ref(model), prompt: PROMPT, sampling: greedy(maxTokens) })) out.push(r);
  assertFinishedByLength(out);
  return out.flatMap((r) => r.tokens.map((x) => x.tokenId));
}

function assertFinishedByLength(out: InferResponse[]): void {
  if (out.at(-1)?.finishReason !== FinishReason.LENGTH) throw new Error(`the stream did not finish by length: ${JSON.stringify(out.at(-1)?.finishReason)}`);
}

/** A long stream held open: its first message has arrived; `stop()` cancels it. */
async function busy(model: string): Promise<{ stop: () => Promise<void> }> {
  const abort = new AbortController();
  const stream = owned.client.infer({ ref: ref(model), prompt: PROMPT, sampling: { maxTokens: 100_000, ignoreEos: true } }, { signal: abort.signal })[
    Symbol.asyncIterator
  ]();
  await stream.next();
  return {
    async stop() {
      abort.abort();
      await stream.next().catch(() => undefined);
    },
  };
}

const status = () => agent.status();
const tier = (model: string) => status().models.find((m) => m.ref?.modelId === `tiny-${model}`)?.tier;
const resident = () => status().devices[0].resident.map((r) => r.ref!.modelId).sort();

async function gpuEvictions(): Promise<number> {
  const body = await (await fetch(`${agent.url}/metrics`)).text();
  const line = body.split("\n").find((l) => l.startsWith('evictions_total{tier="gpu"} '));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

const oneAtATime = new Map<string, number[]>();

test.serial("three models are resident in one worker, each loaded next to the others", async (t) => {
  const pidBefore = agent.enginePids()[0];
  for (const model of MODELS) {
    const last = await load(model);
    t.true(last.ready);
    t.is(last.device, "cpu");
    t.deepEqual(last.evicted, [], `${model} evicted nothing`);
    t.is(tier(model), Tier.GPU);
  }
  t.deepEqual(agent.enginePids(), [pidBefore], "one worker, never restarted");
  const engine = status().engines[0];
  t.is(engine.state, EngineState.SERVING);
  t.deepEqual(engine.models.map((m) => m.modelId).sort(), MODELS.map((m) => `tiny-${m}`));
  t.deepEqual(resident(), MODELS.map((m) => `tiny-${m}`));
});

test.serial("interleaved concurrent streams of the three models equal one-at-a-time runs", async (t) => {
  for (const model of MODELS) oneAtATime.set(model, await infer(model));
  // The models route by name: the same prompt gives each its own tokens.
  t.notDeepEqual(oneAtATime.get("llama"), oneAtATime.get("mistral"));
  t.notDeepEqual(oneAtATime.get("llama"), oneAtATime.get("qwen2"));
  const order = [...MODELS, ...MODELS, ...MODELS];
  const together = await Promise.all(order.map((model) => infer(model)));
  order.forEach((model, i) => t.deepEqual(together[i], oneAtATime.get(model), `${model} stream ${i}`));
});

test.serial("Infer on a model that is not resident is refused: the scheduler loads, not Infer", async (t) => {
  const err = ConnectError.from(await t.throwsAsync(infer("llama-2")));
  t.is(err.code, Code.FailedPrecondition);
  t.is(err.rawMessage, "tiny-llama-2@main is not loaded on this agent (LoadModel first)");
  t.not(tier("llama-2"), Tier.GPU);
  t.is(status().models.find((m) => m.ref?.modelId === "tiny-llama-2"), undefined, "nothing was fetched for it");
});

test.serial("unloading one model while another streams leaves the stream intact", async (t) => {
  const stream = owned.client.infer({ ref: ref("llama"), prompt: PROMPT, sampling: greedy(24) })[Symbol.asyncIterator]();
  const first = await stream.next();
  t.false(first.done);
  t.true((await owned.client.unloadModel({ ref: ref("qwen2"), downTo: Tier.GPU })).unloaded);
  t.is(tier("qwen2"), Tier.DRAM);
  const out = [first.value as InferResponse];
  for (let r = await stream.next(); !r.done; r = await stream.next()) out.push(r.value);
  t.is(out.at(-1)!.finishReason, FinishReason.LENGTH);
  t.deepEqual(out.flatMap((r) => r.tokens.map((x) => x.tokenId)), oneAtATime.get("llama"));
  // Back from DRAM, next to the others.
  const back = await load("qwen2");
  t.is(back.startTier, Tier.DRAM);
  t.deepEqual(back.evicted, []);
  t.deepEqual(await infer("qwen2"), oneAtATime.get("qwen2"));
});

test.serial("a full device evicts its least recently used idle model, never a busy one, and its DRAM copy stays", async (t) => {
  // Use order: llama, mistral, qwen2 (llama least recent) — then llama gets busy.
  for (const model of MODELS) await infer(model, 1);
  const llama = await busy("llama");
  try {
    const before = await gpuEvictions();
    const last = await load("llama-2");
    t.deepEqual(last.evicted.map((r) => r.modelId), ["tiny-mistral"]);
    t.is(await gpuEvictions(), before + 1);
    t.is(tier("mistral"), Tier.DRAM);
    t.deepEqual(resident(), ["tiny-llama", "tiny-llama-2", "tiny-qwen2"]);
    const device = status().devices[0];
    t.true(device.usedBytes <= device.budgetBytes);
  } finally {
    await llama.stop();
  }
});

test.serial("when busy models leave no room a load waits, as long as its caller does", async (t) => {
  const streams = await Promise.all(["llama", "llama-2", "qwen2"].map((m) => busy(m)));
  try {
    const before = await gpuEvictions();
    // The caller gives up while the load waits for room: nothing was evicted.
    const abort = new AbortController();
    const waits = logged(/^tiny-mistral@main waits for room: every device is full of models with requests running/);
    const gaveUp = t.throwsAsync(load("mistral", abort.signal));
    await waits;
    abort.abort();
    t.is(ConnectError.from(await gaveUp).code, Code.Canceled);
    t.is(await gpuEvictions(), before);
    t.deepEqual(resident(), ["tiny-llama", "tiny-llama-2", "tiny-qwen2"]);

    // A load that waits gets the room of the first model whose requests end.
    const waitsAgain = logged(/^tiny-mistral@main waits for room/);
    const loading = load("mistral");
    await waitsAgain;
    await streams[2].stop(); // qwen2 is idle now
    const last = await loading;
    t.deepEqual(last.evicted.map((r) => r.modelId), ["tiny-qwen2"]);
    t.deepEqual(resident(), ["tiny-llama", "tiny-llama-2", "tiny-mistral"]);
  } finally {
    for (const s of streams) await s.stop();
  }
});

test.serial("a model loaded for an Infer that follows is held for it, so two loads cannot evict each other", async (t) => {
  // Resident now: llama, llama-2, mistral. Two of them busy; qwen2 takes the idle one's room, as the
  // scheduler loads: announcing the Infer that follows.
  const streams = await Promise.all(["llama", "llama-2"].map((m) => busy(m)));
  try {
    t.deepEqual((await load("qwen2", undefined, true)).evicted.map((r) => r.modelId), ["tiny-mistral"]);
    // qwen2 is idle, but its Infer has not come yet: mistral must wait rather than evict it.
    const waits = logged(/^tiny-mistral@main waits for room/);
    const loading = load("mistral", undefined, true);
    await waits;
    t.deepEqual(resident(), ["tiny-llama", "tiny-llama-2", "tiny-qwen2"]);
    // The Infer comes and ends: qwen2 is idle for real, and the waiting load takes its room.
    t.deepEqual(await infer("qwen2", 4), oneAtATime.get("qwen2")!.slice(0, 4));
    t.deepEqual((await loading).evicted.map((r) => r.modelId), ["tiny-qwen2"]);
    await infer("mistral", 1); // the Infer its LoadModel announced
  } finally {
    for (const s of streams) await s.stop();
  }
});

test.serial("a model no device could hold, or larger than the pinned pool, fails at once naming both sizes; nothing is evicted", async (t) => {
  const before = await gpuEvictions();
  const residentBefore = resident();
  const big = ConnectError.from(await t.throwsAsync(load("big")));
  t.is(big.code, Code.FailedPrecondition);
  t.true(big.rawMessage.includes(`needs ${sizes.get("tiny-big")! + FLOOR} bytes`), big.rawMessage);
  t.true(big.rawMessage.includes(`largest device budget on this agent is ${gpuBytes} bytes (cpu)`), big.rawMessage);
  const huge = ConnectError.from(await t.throwsAsync(load("huge")));
  t.is(huge.code, Code.FailedPrecondition);
  t.regex(huge.rawMessage, new RegExp(`needs \\d+ bytes of the pinned pool, which holds ${POOL} bytes`));
  t.is(await gpuEvictions(), before);
  t.deepEqual(resident(), residentBefore);
});

test.serial("heartbeats report each device: budget, use, KV pool, resident models; the CPU engine is no GPU", async (t) => {
  const keys = ["tiny-llama", "tiny-llama-2", "tiny-mistral"];
  const residentIn = (h: AgentStatus) => h.devices[0]?.resident.map((r) => r.ref!.modelId).sort().join() ?? "";
  // The streams of the tests before have ended: the agent has seen their cancellations.
  const settled = (h: AgentStatus) => residentIn(h) === keys.join() && h.devices[0].resident.every((r) => r.running === 0);
  const beat = await until(() => heartbeats.findLast((h) => settled(h) && h.devices[0].kvPoolBytes > 0n));
  t.is(beat.agentId, agent.agentId);
  t.is(beat.gpuCount, 0);
  const gpuTier = beat.tiers.find((x) => x.tier === Tier.GPU)!;
  t.is(gpuTier.totalBytes, 0n, "a CPU-only agent has no GPU tier capacity");
  t.is(beat.dramPoolBytes, BigInt(POOL));
  t.is(beat.devices.length, 1);
  const device = beat.devices[0];
  t.is(device.device, "cpu");
  t.is(device.engineId, beat.engines[0].engineId);
  t.is(device.budgetBytes, BigInt(gpuBytes));
  const held = keys.reduce((s, k) => s + sizes.get(k)! + FLOOR, 0);
  t.is(device.usedBytes, BigInt(held));
  t.is(device.freeBytes, BigInt(gpuBytes - held));
  t.is(device.kvPoolBytes, BigInt(KV_POOL));
  t.is(device.maxModelBytes, BigInt(gpuBytes - FLOOR));
  t.deepEqual(device.resident.map((r) => r.ref!.modelId).sort(), keys);
  for (const r of device.resident) {
    t.is(r.bytes, BigInt(sizes.get(r.ref!.modelId)! + FLOOR));
    t.is(r.running, 0);
    t.true(r.idleMs >= 0n);
  }
  for (const key of keys) t.is(beat.models.find((m) => m.ref?.modelId === key)?.device, "cpu");
  t.is(beat.models.find((m) => m.ref?.modelId === "tiny-qwen2")?.device, "", "evicted: below the GPU tier");
  t.deepEqual(beat.engines[0].models.map((m) => m.modelId).sort(), keys);

  // KV use, from the worker's own figures: the pages the llama's finished streams left in its prefix cache.
  const kvBeat = await until(() => heartbeats.findLast((h) => (h.models.find((m) => m.ref?.modelId === "tiny-llama")?.kvBytesUsed ?? 0n) > 0n));
  const llamaKv = kvBeat.models.find((m) => m.ref?.modelId === "tiny-llama")!.kvBytesUsed;
  t.is(llamaKv % 65536n, 0n, "whole pages of the CPU pool");
  t.true(kvBeat.devices[0].kvUsedBytes >= llamaKv);
  t.true(kvBeat.devices[0].kvUsedBytes <= kvBeat.devices[0].kvPoolBytes);
});

test.serial("a worker killed with two models resident: both are gone, the stream ends UNAVAILABLE, a new worker serves", async (t) => {
  await owned.client.unloadModel({ ref: ref("llama-2"), downTo: Tier.GPU });
  t.deepEqual(resident(), ["tiny-llama", "tiny-mistral"]);
  const [pid] = agent.enginePids();
  const stream = owned.client.infer({ ref: ref("llama"), prompt: PROMPT, sampling: { maxTokens: 100_000, ignoreEos: true } });
  const err = ConnectError.from(
    await t.throwsAsync(async () => {
      let n = 0;
      for await (const _ of stream) if (++n === 2) process.kill(pid, "SIGKILL");
    }),
  );
  t.is(err.code, Code.Unavailable, err.message);
  t.regex(err.message, /engine worker .* killed by SIGKILL/);
  t.not(tier("llama"), Tier.GPU);
  t.not(tier("mistral"), Tier.GPU);
  t.deepEqual(resident(), []);
  t.is(ConnectError.from(await t.throwsAsync(infer("mistral"))).code, Code.FailedPrecondition);
  // LoadModel waits for the replacement worker, then both come back and answer as before.
  t.is((await load("llama")).device, "cpu");
  t.is((await load("mistral")).device, "cpu");
  t.not(agent.enginePids()[0], pid);
  t.deepEqual(await infer("llama"), oneAtATime.get("llama"));
  t.deepEqual(await infer("mistral"), oneAtATime.get("mistral"));
});

/** Waits (on heartbeats, which arrive every 100 ms) for `get` to return something. */
async function until<T>(get: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error("timed out waiting for a heartbeat");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves when the agent logs a line matching `pattern` (from now on). */
function logged(pattern: RegExp): Promise<string> {
  return new Promise((resolve) => {
    onLog = (line) => {
      if (!pattern.test(line)) return;
      onLog = undefined;
      resolve(line);
    };
  });
}
