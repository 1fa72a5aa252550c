// The agent without engine workers, over real servers on loopback: chunk transfer from the store,
// a converter and peers, ReadChunk's ranges, a restart that keeps the disk tier, unloading, the
// internal token, heartbeats to a scheduler that goes away and comes back, Infer that never loads,
// and a model larger than the pinned pool refused before anything moves.
import test from "ava";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import type { AgentStatus } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { AgentService } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { ConverterService } from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { SchedulerService } from "../../src/gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { ConverterServiceImpl } from "../../src/converter/converter-service.js";
import { converterDeps } from "../../src/converter/routes.js";
import { decodeIndex } from "../../src/checkpoint/index-codec.js";
import { type AgentOptions, startAgent } from "../../src/agent/start-agent.js";
import { tcpClient } from "../../src/agent/rpc-clients.js";
import { type RunningServer, startServer } from "../../src/shared/server.js";
import { tempDirs } from "../fixtures/temp-dir.js";
import { type TinyStore, tinyStore } from "./fixtures/checkpoints.js";

const dirs = tempDirs("thaw-agent-svc-");
const cleanups: (() => unknown)[] = [];
test.after.always(async () => {
  for (const c of cleanups.reverse()) await c();
  await dirs.cleanup();
});

let shared: Promise<TinyStore> | undefined;
const models = () => (shared ??= dirs.make().then((d) => tinyStore(d, ["llama"])));
const ref = { modelId: "tiny-llama" };
const KEY = "tiny-llama@main";

async function agentWith(options: Partial<AgentOptions> & { dir?: string }) {
  const dir = options.dir ?? path.join(await dirs.make(), "agent");
  const agent = await startAgent({ port: 0, engines: "none", dramBytes: 0, log: () => {}, ...options, dir });
  cleanups.push(() => agent.close());
  const owned = tcpClient(AgentService, agent.url, options.token);
  cleanups.push(() => owned.close());
  return { agent, client: owned.client, dir };
}

async function download(client: ReturnType<typeof tcpClient<typeof AgentService>>["client"], fileNames: string[] = []) {
  const complete = new Map<string, string>();
  for await (const p of client.downloadChunks({ ref, fileNames })) if (p.complete) complete.set(p.fileName, p.source);
  return complete;
}

test("DownloadChunks fetches named chunks or all; ReadChunk serves ranges, the index and side files", async (t) => {
  const { store, indexes } = await models();
  const index = indexes.get("tiny-llama")!;
  const { client, agent } = await agentWith({ store });
  const one = await download(client, [index.chunks[1].fileName]);
  t.deepEqual([...one.entries()], [[index.chunks[1].fileName, "store"]]);
  const status = agent.status().models[0];
  t.is(status.tier, Tier.REMOTE);
  t.is(status.diskChunks, 1);
  const all = await download(client);
  t.is(all.size, index.chunks.length);
  t.is(all.get(index.chunks[1].fileName), "cache");
  t.is(agent.status().models[0].tier, Tier.DISK);

  const read = async (fileName: string, offset = 0n, length = 0n) => {
    const parts: Uint8Array[] = [];
    let fileLength = 0n;
    for await (const r of client.readChunk({ ref, fileName, offset, length })) {
      parts.push(r.data);
      fileLength = r.fileLength;
    }
    return { bytes: Buffer.concat(parts), fileLength };
  };
  const chunk = Buffer.from(await store.read(KEY, index.chunks[0].fileName));
  const ranged = await read(index.chunks[0].fileName, 5000n, 70000n);
  t.true(ranged.bytes.equals(chunk.subarray(5000, 75000)));
  t.is(ranged.fileLength, BigInt(chunk.length));
  t.is(decodeIndex((await read("model.idx")).bytes).modelKey, KEY);
  t.true((await read("tokenizer.json")).bytes.equals(Buffer.from(await store.read(KEY, "tokenizer.json"))));
  const missing = await t.throwsAsync(read("chunk-99999.bin"));
  t.is(ConnectError.from(missing).code, Code.NotFound);
  const past = await t.throwsAsync(read(index.chunks[0].fileName, BigInt(chunk.length + 1)));
  t.is(ConnectError.from(past).code, Code.OutOfRange);
  const escape = await t.throwsAsync(read("../model.idx"));
  t.is(ConnectError.from(escape).code, Code.InvalidArgument);
  const other = await t.throwsAsync(async () => {
    for await (const _ of client.readChunk({ ref: { modelId: "nope" }, fileName: "model.idx" }));
  });
  t.is(ConnectError.from(other).code, Code.NotFound);

  // UnloadModel down to disk drops the files.
  t.true((await client.unloadModel({ ref, downTo: Tier.DISK })).unloaded);
  t.is(agent.status().models.length, 0);
  t.false((await client.unloadModel({ ref, downTo: Tier.DISK })).unloaded);
});

test("Infer never loads: a model that is not resident is FAILED_PRECONDITION, and nothing is fetched for it", async (t) => {
  const { store } = await models();
  const { client, agent } = await agentWith({ store });
  const err = ConnectError.from(
    await t.throwsAsync(async () => {
      for await (const _ of client.infer({ ref, prompt: { case: "text", value: "hi" } }));
    }),
  );
  t.is(err.code, Code.FailedPrecondition);
  t.is(err.rawMessage, `${KEY} is not loaded on this agent (LoadModel first)`);
  t.deepEqual(agent.status().models, []);
});

test("a model larger than the pinned pool fails at once, naming both sizes, before its chunks are fetched", async (t) => {
  const { store, indexes } = await models();
  const poolBytes = 1 << 20;
  const { client, agent } = await agentWith({ store, dramBytes: poolBytes });
  const err = ConnectError.from(
    await t.throwsAsync(async () => {
      for await (const _ of client.loadModel({ ref }));
    }),
  );
  t.is(err.code, Code.FailedPrecondition);
  const size = Number(indexes.get("tiny-llama")!.totalBytes);
  t.regex(err.rawMessage, new RegExp(`^${KEY} needs ${size} bytes of the pinned pool, which holds ${poolBytes} bytes \\(--dram-bytes\\)`));
  const status = agent.status();
  t.is(status.dramPoolBytes, BigInt(poolBytes));
  t.deepEqual(status.devices, [], "no engine, no device");
  t.is(status.models.find((m) => m.ref?.modelId === "tiny-llama")?.diskChunks, 0, "only the index was read");
});

test("a restarted agent keeps its disk tier and its id", async (t) => {
  const { store, indexes } = await models();
  const first = await agentWith({ store });
  await download(first.client);
  const id = first.agent.agentId;
  await first.agent.close();
  // No origin at all this time: everything must come from disk.
  const second = await agentWith({ dir: first.dir });
  t.is(second.agent.agentId, id);
  const entry = second.agent.status().models.find((m) => m.ref?.modelId === "tiny-llama")!;
  t.is(entry.tier, Tier.DISK);
  t.is(entry.diskChunks, indexes.get("tiny-llama")!.chunks.length);
  const again = await download(second.client);
  t.true([...again.values()].every((s) => s === "cache"));
  const parts: Uint8Array[] = [];
  for await (const r of second.client.readChunk({ ref, fileName: "chunk-00000.bin" })) parts.push(r.data);
  t.true(Buffer.concat(parts).equals(Buffer.from(await store.read(KEY, "chunk-00000.bin"))));
});

test("chunks come from the converter when the agent has no store", async (t) => {
  const { store, indexes } = await models();
  const server = await startServer({ routes: (r: ConnectRouter) => r.service(ConverterService, new ConverterServiceImpl(converterDeps({ store }))) });
  cleanups.push(() => server.close());
  const { client, dir } = await agentWith({ converter: server.url.replace("http://", "") });
  const got = await download(client);
  t.is(got.size, indexes.get("tiny-llama")!.chunks.length);
  t.true([...got.values()].every((s) => s.startsWith("converter ")));
  for (const c of indexes.get("tiny-llama")!.chunks) {
    const onDisk = await readFile(path.join(dir, "models", KEY, c.fileName));
    t.true(onDisk.equals(Buffer.from(await store.read(KEY, c.fileName))));
  }
});

test("peers are asked before the store; an unreachable peer is skipped", async (t) => {
  const { store } = await models();
  const holder = await agentWith({ store });
  await download(holder.client);
  const { client } = await agentWith({ store, peers: ["127.0.0.1:1", holder.agent.address] });
  const got = await download(client);
  t.true([...got.values()].every((s) => s === `peer ${holder.agent.address}`));
});

test("with a token, calls without it are refused", async (t) => {
  const { store } = await models();
  const { agent, client } = await agentWith({ store, token: "s3cret" });
  t.is((await client.getStatus({})).status?.agentId, agent.agentId);
  const anonymous = tcpClient(AgentService, agent.url);
  cleanups.push(() => anonymous.close());
  const err = await t.throwsAsync(anonymous.client.getStatus({}));
  t.is(ConnectError.from(err).code, Code.Unauthenticated);
});

test("heartbeats follow the scheduler's interval and survive a scheduler restart", async (t) => {
  const { store } = await models();
  const received: AgentStatus[] = [];
  const scheduler = (port = 0) =>
    startServer({
      port,
      routes: (r: ConnectRouter) =>
        r.service(SchedulerService, {
          heartbeat: (req) => {
            received.push(req.status!);
            return { intervalMs: 50 };
          },
        }),
    });
  let server: RunningServer = await scheduler();
  const port = server.port;
  cleanups.push(() => server.close());
  const { agent, client } = await agentWith({ store, scheduler: `127.0.0.1:${port}`, heartbeatIntervalMs: 100 });
  await download(client);
  const waitFor = async (n: number) => {
    const deadline = Date.now() + 10_000;
    while (received.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  };
  const afterDownload = received.length;
  await waitFor(afterDownload + 3);
  t.true(received.length >= afterDownload + 3);
  const last = received.at(-1)!;
  t.is(last.agentId, agent.agentId);
  t.is(last.address, agent.address);
  t.deepEqual(last.tiers.map((x) => x.tier), [Tier.GPU, Tier.DRAM, Tier.DISK, Tier.REMOTE]);
  t.is(last.models.find((m) => m.ref?.modelId === "tiny-llama")?.tier, Tier.DISK);
  t.true(last.tiers.find((x) => x.tier === Tier.REMOTE)!.bandwidthBytesPerSecond > 0);

  await server.close();
  const before = received.length;
  await new Promise((r) => setTimeout(r, 400));
  t.true(received.length <= before + 1);
  server = await scheduler(port);
  await waitFor(before + 3);
  t.true(received.length >= before + 3, "heartbeats resumed");
});
