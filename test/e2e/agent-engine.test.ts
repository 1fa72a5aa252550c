// The agent with a real engine worker (Python, CPU) and the tiny models in a LocalStore: download
// → load → streaming infer, shared loads, evictions under small budgets (room for one model on the
// device and in the pool) and reloads from the next tier, corrupt chunks, stop strings,
// cancellation, a worker killed mid-stream, peers, metrics. Many models at once: agent-multimodel.
// One agent and one worker serve every test (importing torch takes seconds), so tests run in order.
import test from "ava";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { AgentService, type InferResponse, type LoadModelResponse } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { FinishReason } from "../../src/gen/thaw/engine/v1/engine_pb.js";
import { type RunningAgent, startAgent } from "../../src/agent/start-agent.js";
import { ModelText } from "../../src/agent/model-text.js";
import { type OwnedClient, tcpClient } from "../../src/agent/rpc-clients.js";
import type { LocalStore } from "../../src/store/local-store.js";
import { tempDirs } from "../fixtures/temp-dir.js";
import { tinyStore } from "../agent/fixtures/checkpoints.js";

const PYTHON = process.env.THAW_PYTHON ?? "/usr/bin/python3";
const dirs = tempDirs("thaw-agent-e2e-");
const logs: string[] = [];
let store: LocalStore;
let size = 0;
let agentDir = "";
let agent: RunningAgent;
let owned: OwnedClient<typeof AgentService>;
let text: ModelText;
const closers: (() => Promise<void> | void)[] = [];

const ref = (model: string) => ({ modelId: `tiny-${model}` });

test.before(async () => {
  const dir = await dirs.make();
  const made = await tinyStore(dir, ["llama", "mistral", "qwen2"]);
  store = made.store;
  size = Math.max(...[...made.indexes.values()].map((i) => Number(i.totalBytes)));
  agentDir = path.join(dir, "agent");
  agent = await startAgent({
    dir: agentDir,
    port: 0,
    store,
    engines: "cpu",
    python: PYTHON,
    // The pool (and so the CPU device's budget) holds one model, the disk two and a half: loading a
    // second and a third evicts.
    dramBytes: Math.ceil((size * 1.5) / 4096) * 4096,
    diskBytes: Math.floor(size * 2.5),
    kvFloorBytes: 1 << 20,
    kvPoolBytes: 8 << 20,
    engineArgs: ["--threads", "1"],
    healthIntervalMs: 200,
    log: (line) => logs.push(line),
  });
  owned = tcpClient(AgentService, agent.url);
  const llama = path.join(dir, "hf", "llama");
  text = new ModelText({
    tokenizerJson: await readFile(path.join(llama, "tokenizer.json")),
    tokenizerConfigJson: await readFile(path.join(llama, "tokenizer_config.json")),
  });
});

test.after.always(async () => {
  owned?.close();
  for (const close of closers) await close();
  await agent?.close();
  await dirs.cleanup();
});

async function load(model: string): Promise<LoadModelResponse[]> {
  const out: LoadModelResponse[] = [];
  for await (const p of owned.client.loadModel({ ref: ref(model) })) out.push(p);
  return out;
}

async function infer(request: Parameters<typeof owned.client.infer>[0]): Promise<InferResponse[]> {
  const out: InferResponse[] = [];
  for await (const r of owned.client.infer(request)) out.push(r);
  return out;
}

function tier(model: string): Tier | undefined {
  return agent.status().models.find((m) => m.ref?.modelId === `tiny-${model}`)?.tier;
}

/** The value of one series, e.g. 'load_bytes_total{tier="remote"}' (0 when absent). */
async function metric(series: string): Promise<number> {
  const body = await (await fetch(`${agent.url}/metrics`)).text();
  const line = body.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

/** The sum of every series of a metric. */
async function sumMetric(name: string): Promise<number> {
  const body = await (await fetch(`${agent.url}/metrics`)).text();
  return body
    .split("\n")
    .filter((l) => l.startsWith(name + "{") || l.startsWith(name + " "))
    .reduce((s, l) => s + Number(l.split(" ").at(-1)), 0);
}

const greedy = { temperature: 0 };

test.serial("download → load → infer: progress per tier, then tokens as they come", async (t) => {
  const progress = await load("llama");
  const last = progress.at(-1)!;
  t.true(last.ready);
  t.is(last.startTier, Tier.REMOTE);
  t.deepEqual(last.timings.map((x) => x.tier), [Tier.REMOTE, Tier.DISK, Tier.DRAM]);
  for (const timing of last.timings) t.true(timing.bytes > 0n && timing.seconds > 0, `tier ${timing.tier}`);
  t.true(progress.some((p) => p.tier === Tier.REMOTE && !p.ready));
  t.is(tier("llama"), Tier.GPU);
  t.regex(last.engineId, /^engine-/);
  t.is(last.device, "cpu");
  t.deepEqual(last.evicted, []);

  const messages = [{ role: "user", content: "Hello there" }];
  const out = await infer({ ref: ref("llama"), prompt: { case: "chat", value: { messages, addGenerationPrompt: true } }, sampling: { ...greedy, maxTokens: 12 }, skipSpecialTokens: true });
  t.true(out.length >= 2, "streamed in several messages");
  const final = out.at(-1)!;
  t.is(final.finishReason, FinishReason.LENGTH);
  const promptIds = text.encode(text.renderChat(messages, true), false);
  t.is(final.usage?.promptTokens, promptIds.length);
  t.is(final.usage?.completionTokens, 12);
  const ids = out.flatMap((r) => r.tokens.map((x) => x.tokenId));
  t.is(ids.length, 12);
  t.is(out.map((r) => r.text).join(""), text.decode(ids, true));
  for (const r of out.slice(0, -1)) t.is(r.finishReason, FinishReason.UNSPECIFIED);

  // Greedy is deterministic; a prompt given as token ids gives the same tokens as the chat did.
  const again = await infer({ ref: ref("llama"), prompt: { case: "tokens", value: { tokenIds: promptIds } }, sampling: { ...greedy, maxTokens: 12 }, skipSpecialTokens: true });
  t.deepEqual(again.flatMap((r) => r.tokens.map((x) => x.tokenId)), ids);

  // Logprobs come with each token's text (filled in by the agent).
  const withLogprobs = await infer({ ref: ref("llama"), prompt: { case: "text", value: "abc" }, sampling: { ...greedy, maxTokens: 4, logprobs: true, topLogprobs: 2 } });
  const positions = withLogprobs.flatMap((r) => r.tokens);
  t.is(positions.length, 4);
  for (const p of positions) {
    t.is(p.logprobs?.sampled?.tokenId, p.tokenId);
    t.is(p.logprobs?.top.length, 2);
    t.is(p.logprobs?.sampled?.text, text.tokenText(p.tokenId));
  }

  // A plain text prompt gets its BOS; echo puts the prompt first.
  const echoed = await infer({ ref: ref("llama"), prompt: { case: "text", value: "Once upon" }, echo: true, sampling: { ...greedy, maxTokens: 3 } });
  t.true(echoed.map((r) => r.text).join("").startsWith("Once upon"));
  t.is(echoed.at(-1)!.usage?.promptTokens, text.encode("Once upon", true).length);
});

test.serial("two concurrent loads of a model not yet here load it once", async (t) => {
  const coldBefore = await sumMetric("cold_starts_total");
  const remoteBefore = await metric('load_bytes_total{tier="remote"}');
  const [a, b] = await Promise.all([load("mistral"), load("mistral")]);
  t.true(a.at(-1)!.ready && b.at(-1)!.ready);
  t.is(a.at(-1)!.engineId, b.at(-1)!.engineId);
  t.is(a.at(-1)!.startTier, Tier.REMOTE);
  t.is(b.at(-1)!.startTier, Tier.REMOTE);
  // The device holds one model: the idle llama made room, and LoadModel says so.
  t.deepEqual(a.at(-1)!.evicted.map((r) => r.modelId), ["tiny-llama"]);
  t.is(await sumMetric("cold_starts_total"), coldBefore + 1);
  const remoteBytes = (await metric('load_bytes_total{tier="remote"}')) - remoteBefore;
  t.is(remoteBytes, Number(a.at(-1)!.timings.find((x) => x.tier === Tier.REMOTE)!.bytes));
  t.true(remoteBytes > 0 && remoteBytes < size * 1.01, "the chunks were fetched once");
});

test.serial("small budgets evict, and an evicted model reloads from the next tier", async (t) => {
  // Loading mistral took llama off the only engine and out of the pool; its disk copy stayed.
  t.is(tier("mistral"), Tier.GPU);
  t.is(tier("llama"), Tier.DISK);
  t.true((await sumMetric("evictions_total")) >= 2);
  const fromDisk = await load("llama");
  t.is(fromDisk.at(-1)!.startTier, Tier.DISK);
  t.deepEqual(fromDisk.at(-1)!.timings.map((x) => x.tier), [Tier.DISK, Tier.DRAM]);

  // A third model does not fit the disk with two others: the least recently used (mistral) goes.
  await load("qwen2");
  t.true((await metric('evictions_total{tier="disk"}')) > 0);
  t.is(tier("mistral"), Tier.REMOTE);
  t.is(tier("llama"), Tier.DISK);
  const fromRemote = await load("mistral");
  t.is(fromRemote.at(-1)!.startTier, Tier.REMOTE);
  const status = agent.status();
  const disk = status.tiers.find((x) => x.tier === Tier.DISK)!;
  t.true(disk.totalBytes - disk.freeBytes <= disk.totalBytes);
});

test.serial("a chunk corrupted on disk is detected, fetched again and never served", async (t) => {
  await load("llama"); // llama on disk, in the pool and on the engine
  const index = (await owned.client.getStatus({})).status!;
  t.truthy(index);
  const chunkFile = (name: string) => path.join(agentDir, "models", "tiny-llama@main", name);
  const good = Buffer.from(await store.read("tiny-llama@main", "chunk-00001.bin"));
  const bad = Buffer.from(good);
  for (let i = 0; i < 64; i++) bad[8192 + i] ^= 0x5a;
  await writeFile(chunkFile("chunk-00001.bin"), bad);

  // Served to a peer: the agent checks, finds it bad, fetches it again, sends the good bytes.
  const pieces: Uint8Array[] = [];
  for await (const r of owned.client.readChunk({ ref: ref("llama"), fileName: "chunk-00001.bin" })) pieces.push(r.data);
  t.true(Buffer.concat(pieces).equals(good));
  t.true((await readFile(chunkFile("chunk-00001.bin"))).equals(good));
  t.true(logs.some((l) => l.includes("does not match its checksum")));

  // Loaded from disk: the native reader's checksum catches it; the chunk is fetched again.
  await owned.client.unloadModel({ ref: ref("llama"), downTo: Tier.DRAM });
  t.is(tier("llama"), Tier.DISK);
  const other = Buffer.from(await store.read("tiny-llama@main", "chunk-00002.bin"));
  other[100] ^= 1;
  await writeFile(chunkFile("chunk-00002.bin"), other);
  const loaded = await load("llama");
  t.is(loaded.at(-1)!.startTier, Tier.DISK);
  t.true(logs.some((l) => l.includes("fetching the bad chunk again")));
  t.true((await readFile(chunkFile("chunk-00002.bin"))).equals(Buffer.from(await store.read("tiny-llama@main", "chunk-00002.bin"))));
});

test.serial("stop strings end the output before the match; cancelling reaches the engine", async (t) => {
  const prompt = { case: "text" as const, value: "The quick brown fox" };
  const full = (await infer({ ref: ref("llama"), prompt, sampling: { ...greedy, maxTokens: 48 } })).map((r) => r.text).join("");
  // A two-character stop string from the middle of the greedy text (avoiding replacement characters).
  let k = Math.floor(full.length / 2);
  while (k < full.length - 2 && full.slice(k, k + 2).includes("\uFFFD")) k++;
  const stop = full.slice(k, k + 2);
  t.true(stop.length === 2, `greedy text long enough: ${JSON.stringify(full)}`);
  const at = full.indexOf(stop);
  const cut = await infer({ ref: ref("llama"), prompt, stop: [stop], sampling: { ...greedy, maxTokens: 48 } });
  t.is(cut.map((r) => r.text).join(""), full.slice(0, at));
  t.is(cut.at(-1)!.finishReason, FinishReason.STOP);
  t.is(cut.at(-1)!.stopReason, stop);
  const kept = await infer({ ref: ref("llama"), prompt, stop: [stop], includeStopStrInOutput: true, sampling: { ...greedy, maxTokens: 48 } });
  t.is(kept.map((r) => r.text).join(""), full.slice(0, at + 2));

  // Cancel a long generation after its first message: the engine stops running it.
  const abort = new AbortController();
  let got = 0;
  await t.throwsAsync(async () => {
    for await (const _ of owned.client.infer({ ref: ref("llama"), prompt, sampling: { maxTokens: 100_000, ignoreEos: true } }, { signal: abort.signal })) {
      got++;
      if (got === 1) abort.abort();
    }
  });
  const deadline = Date.now() + 10_000;
  const running = () => agent.status().engines.reduce((s, e) => s + e.running, 0);
  while (running() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 500)); // a health check after the cancel
  t.is(running(), 0);
  t.is(agent.status().queueLength, 0);
});

test.serial("a worker killed mid-stream ends the stream with an error; the model is gone until loaded on the new worker", async (t) => {
  await load("llama");
  const [pid] = agent.enginePids();
  const stream = owned.client.infer({ ref: ref("llama"), prompt: { case: "text", value: "Again" }, sampling: { maxTokens: 100_000, ignoreEos: true } });
  const err = await t.throwsAsync(async () => {
    let n = 0;
    for await (const _ of stream) if (++n === 2) process.kill(pid, "SIGKILL");
  });
  const e = ConnectError.from(err);
  t.is(e.code, Code.Unavailable, e.message);
  t.regex(e.message, /engine worker .* killed by SIGKILL/);
  t.not(tier("llama"), Tier.GPU); // reported unloaded
  const refused = ConnectError.from(await t.throwsAsync(infer({ ref: ref("llama"), prompt: { case: "text", value: "Again" } })));
  t.is(refused.code, Code.FailedPrecondition);
  t.regex(refused.rawMessage, /not loaded on this agent \(LoadModel first\)/);
  await load("llama"); // waits for the new worker
  const out = await infer({ ref: ref("llama"), prompt: { case: "text", value: "Again" }, sampling: { ...greedy, maxTokens: 4 } });
  t.is(out.at(-1)!.finishReason, FinishReason.LENGTH);
  t.not(agent.enginePids()[0], pid);
  t.is(tier("llama"), Tier.GPU);
});

test.serial("a peer agent fetches chunks from this one; it has no engines to load onto", async (t) => {
  const peer = await startAgent({ dir: path.join(await dirs.make(), "peer"), port: 0, engines: "none", dramBytes: 0, peers: [agent.address], log: () => {} });
  closers.push(() => peer.close());
  const client = tcpClient(AgentService, peer.url);
  closers.push(() => client.close());
  const sources = new Set<string>();
  for await (const p of client.client.downloadChunks({ ref: ref("llama") })) if (p.complete) sources.add(p.source);
  t.deepEqual([...sources], [`peer ${agent.address}`]);
  const peerStatus = peer.status().models.find((m) => m.ref?.modelId === "tiny-llama")!;
  t.is(peerStatus.tier, Tier.DISK);
  t.is(peerStatus.diskChunks, peerStatus.totalChunks);
  const err = await t.throwsAsync(load2(client, "llama"));
  t.is(ConnectError.from(err).code, Code.FailedPrecondition);
});

async function load2(client: OwnedClient<typeof AgentService>, model: string): Promise<void> {
  for await (const _ of client.client.loadModel({ ref: ref(model) }));
}

test.serial("status and /metrics report tiers, bandwidths, engines and the agent's metrics", async (t) => {
  const status = (await owned.client.getStatus({})).status!;
  t.is(status.agentId, agent.agentId);
  t.is(status.address, agent.address);
  for (const x of [Tier.REMOTE, Tier.DISK, Tier.DRAM]) {
    t.true(status.tiers.find((c) => c.tier === x)!.bandwidthBytesPerSecond > 0, `bandwidth of tier ${x}`);
  }
  t.is(status.engines.length, 1);
  t.is(status.engines[0].device, "cpu");
  t.is(status.gpuCount, 0);
  // The CPU engine is a device of the GPU tier's budget, reported as "cpu", never as GPU capacity.
  t.is(status.tiers.find((c) => c.tier === Tier.GPU)!.totalBytes, 0n);
  t.deepEqual(status.devices.map((d) => d.device), ["cpu"]);
  t.is(status.devices[0].budgetBytes, status.dramPoolBytes, "a CPU engine's budget is the pool it serves from");
  t.is(status.devices[0].engineId, status.engines[0].engineId);
  const body = await (await fetch(`${agent.url}/metrics`)).text();
  for (const name of ["model_load_seconds_bucket", "cold_starts_total", "load_bytes_total", "pinned_pool_bytes", "evictions_total", "queue_lengths", "cache_hit_ratio", "agent_loads"]) {
    t.true(body.includes(name), name);
  }
  t.regex(body, /pinned_pool_bytes\{state="used"\} [1-9]/);
});
