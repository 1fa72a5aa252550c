// Credentials at the agent and the converter, over real servers on loopback: every RPC needs the
// internal or the admin token; peers a call names are used only once they proved they hold the
// internal token (a stranger is refused and never read from; one that does not answer is skipped);
// a proven peer's chunks are still checked against the store's index, never against the peer's;
// a process that would listen beyond loopback without an internal token does not start; and a
// launch command the agent does not allow is the caller's 400, saying what to do.
import test from "ava";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { AgentService, type ReadChunkRequest } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { ConverterService } from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { CheckpointIndexSchema } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { ModelSpecSchema } from "../../src/gen/thaw/scheduler/v1/scheduler_pb.js";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { ConverterServiceImpl } from "../../src/converter/converter-service.js";
import { CONVERTER_ACCESS, converterDeps } from "../../src/converter/routes.js";
import { AGENT_ACCESS } from "../../src/agent/routes.js";
import { encodeIndex } from "../../src/checkpoint/index-codec.js";
import { type AgentOptions, startAgent } from "../../src/agent/start-agent.js";
import { tcpClient } from "../../src/agent/rpc-clients.js";
import { crc32cSync } from "../../src/native/index.js";
import { startOrchestrator } from "../../src/orchestrator/orchestrator.js";
import { authorize } from "../../src/shared/auth.js";
import { startServer } from "../../src/shared/server.js";
import { tempDirs } from "../fixtures/temp-dir.js";
import { type TinyStore, tinyStore } from "./fixtures/checkpoints.js";

const TOKEN = "internal-secret";
const ADMIN = "admin-secret";
const dirs = tempDirs("thaw-agent-auth-");
const cleanups: (() => unknown)[] = [];
test.after.always(async () => {
  for (const c of cleanups.reverse()) await c();
  await dirs.cleanup();
});

let shared: Promise<TinyStore> | undefined;
const models = () => (shared ??= dirs.make().then((d) => tinyStore(d, ["llama"])));
const ref = { modelId: "tiny-llama" };
const KEY = "tiny-llama@main";

async function agentWith(options: Partial<AgentOptions>) {
  const dir = path.join(await dirs.make(), "agent");
  const agent = await startAgent({ port: 0, engines: "none", dramBytes: 0, log: () => {}, token: TOKEN, adminToken: ADMIN, ...options, dir });
  cleanups.push(() => agent.close());
  return { agent, dir, client: (token?: string) => owned(agent.url, token) };
}

function owned(url: string, token?: string) {
  const c = tcpClient(AgentService, url, token);
  cleanups.push(() => c.close());
  return c.client;
}

async function code(call: () => Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call();
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream);
}

/** Where each chunk of a DownloadChunks came from. */
async function download(client: ReturnType<typeof owned>, peers: string[]): Promise<Map<string, string>> {
  const sources = new Map<string, string>();
  for await (const p of client.downloadChunks({ ref, peers })) if (p.complete) sources.set(p.fileName, p.source);
  return sources;
}

test("every agent RPC needs the internal or the admin token", async (t) => {
  const { store } = await models();
  const { client } = await agentWith({ store, allowLaunch: true });
  for (const who of [undefined, "wrong", "user-key"]) {
    const c = client(who);
    t.is(await code(() => c.getStatus({})), Code.Unauthenticated, `GetStatus as ${who}`);
    t.is(await code(() => c.unloadModel({ ref, downTo: Tier.DISK })), Code.Unauthenticated, `UnloadModel as ${who}`);
    t.is(await code(() => drain(c.downloadChunks({ ref }))), Code.Unauthenticated, `DownloadChunks as ${who}`);
    t.is(await code(() => drain(c.loadModel({ ref: { modelId: "x" }, launchCommand: ["sh", "-c", "exit 0"] }))), Code.Unauthenticated, `LoadModel as ${who}`);
    t.is(await code(() => drain(c.infer({ ref, prompt: { case: "text", value: "x" } }))), Code.Unauthenticated, `Infer as ${who}`);
    t.is(await code(() => drain(c.readChunk({ ref, fileName: "model.idx" }))), Code.Unauthenticated, `ReadChunk as ${who}`);
  }
  t.is(await code(() => client(TOKEN).getStatus({})), "ok");
  t.is(await code(() => client(ADMIN).unloadModel({ ref, downTo: Tier.DISK })), "ok", "operators may unload with the admin token");
});

test("the converter: Convert, DeleteCheckpoint and reads need the internal or the admin token", async (t) => {
  const { store } = await models();
  const server = await startServer({
    routes: (r: ConnectRouter) => r.service(ConverterService, new ConverterServiceImpl(converterDeps({ store, localRoots: [] }))),
    interceptors: [authorize({ internalToken: TOKEN, adminToken: ADMIN }, CONVERTER_ACCESS)],
  });
  cleanups.push(() => server.close());
  const as = (token?: string) => {
    const c = tcpClient(ConverterService, server.url, token);
    cleanups.push(() => c.close());
    return c.client;
  };
  t.is(await code(() => as().deleteCheckpoint({ ref })), Code.Unauthenticated);
  t.is(await code(() => as("user-key").deleteCheckpoint({ ref })), Code.Unauthenticated);
  t.is(await code(() => drain(as().convert({ source: "org/x", modelId: "x" }))), Code.Unauthenticated);
  t.is(await code(() => as().listCheckpoints({})), Code.Unauthenticated);
  t.true((await store.list()).includes(KEY), "nothing was deleted");
  t.deepEqual((await as(ADMIN).listCheckpoints({})).checkpoints.map((c) => c.modelKey), [KEY]);
});

test("DownloadChunks naming a peer that is not an agent of this deployment is refused, and nothing is read from it", async (t) => {
  const { store } = await models();
  // A stranger's AgentService: it answers, but holds no internal token (and would serve anything).
  const asked: ReadChunkRequest[] = [];
  const stranger = await startServer({
    routes: (r: ConnectRouter) =>
      r.service(AgentService, {
        getStatus: () => ({ status: { agentId: "stranger", address: "" } }),
        async *readChunk(req: ReadChunkRequest) {
          asked.push(req);
        },
      }),
  });
  cleanups.push(() => stranger.close());
  const strangerAddress = `127.0.0.1:${stranger.port}`;
  const { client } = await agentWith({ store });
  const err = ConnectError.from(await t.throwsAsync(download(client(TOKEN), [strangerAddress])));
  t.is(err.code, Code.PermissionDenied);
  t.regex(err.rawMessage, new RegExp(`peer ${strangerAddress} is not an agent of this deployment`));
  t.is(asked.length, 0);
  // Neither may a LoadModel name it; and an address that is not host:port is malformed.
  t.is(await code(() => drain(client(TOKEN).loadModel({ ref, peers: [strangerAddress] }))), Code.PermissionDenied);
  t.is(await code(() => download(client(TOKEN), ["http://127.0.0.1:1/x"])), Code.InvalidArgument);
  // A peer that does not answer (an agent that just died) is left out; the store serves.
  const got = await download(client(TOKEN), ["127.0.0.1:1"]);
  t.true(got.size > 0);
  t.true([...got.values()].every((s) => s === "store"));
});

test("a peer that proved it holds the token is fetched from", async (t) => {
  const { store } = await models();
  const holder = await agentWith({ store });
  await download(holder.client(TOKEN), []);
  const { client } = await agentWith({ store });
  const got = await download(client(TOKEN), [holder.agent.address]);
  t.true([...got.values()].every((s) => s === `peer ${holder.agent.address}`));
});

test("a proven peer that lies: the index comes from the store, and its chunks are checked against it and fetched again", async (t) => {
  const { store, indexes } = await models();
  const index = indexes.get("tiny-llama")!;
  // The liar's chunks are noise, and its index says the noise is right.
  const noise = (name: string) => createHash("sha256").update(name).digest().subarray(0, 16);
  const lyingIndex = create(CheckpointIndexSchema, {
    ...index,
    chunks: index.chunks.map((c) => ({ ...c, checksum: { ...c.checksum!, value: BigInt(crc32cSync(Buffer.alloc(Number(c.byteLength), noise(c.fileName)))) } })),
  });
  const served: string[] = [];
  let address = "";
  const liar = await startServer({
    routes: (r: ConnectRouter) =>
      r.service(AgentService, {
        getStatus: () => ({ status: { agentId: "liar", address } }),
        async *readChunk(req: ReadChunkRequest) {
          served.push(req.fileName);
          if (req.fileName === "model.idx") {
            const bytes = encodeIndex(lyingIndex);
            yield { offset: 0n, data: bytes, fileLength: BigInt(bytes.length) };
            return;
          }
          const chunk = index.chunks.find((c) => c.fileName === req.fileName);
          if (chunk === undefined) return;
          const bytes = Buffer.alloc(Number(chunk.byteLength), noise(chunk.fileName)).subarray(Number(req.offset));
          yield { offset: req.offset, data: bytes, fileLength: chunk.byteLength };
        },
      }),
    // It does hold the token (a compromised agent): it passes the proof.
    interceptors: [authorize({ internalToken: TOKEN }, AGENT_ACCESS, () => ({ agentId: "liar", address }))],
  });
  cleanups.push(() => liar.close());
  address = `127.0.0.1:${liar.port}`;
  const { client, dir } = await agentWith({ store });
  const got = await download(client(TOKEN), [address]);
  t.false(served.includes("model.idx"), "the index was never asked of the peer");
  t.true(served.some((name) => name.startsWith("chunk-")), "the peer was asked for chunks");
  t.true([...got.values()].every((s) => s === "store"), "every chunk ended up from the store");
  for (const c of index.chunks) {
    t.true((await readFile(path.join(dir, "models", KEY, c.fileName))).equals(Buffer.from(await store.read(KEY, c.fileName))), c.fileName);
  }
});

test("an agent or an orchestrator that would listen beyond loopback without an internal token does not start", async (t) => {
  const dir = path.join(await dirs.make(), "agent");
  const agent = await t.throwsAsync(startAgent({ dir, host: "0.0.0.0", port: 0, engines: "none", dramBytes: 0, log: () => {} }));
  t.regex(agent!.message, /thaw agent: refusing to listen on 0\.0\.0\.0 without an internal token/);
  const orchestrator = await t.throwsAsync(startOrchestrator({ host: "0.0.0.0", port: 0, modelsFile: null, log: () => {} }));
  t.regex(orchestrator!.message, /THAW_INTERNAL_TOKEN/);
  // With a token it may.
  const open = await startAgent({ dir, host: "0.0.0.0", port: 0, engines: "none", dramBytes: 0, token: TOKEN, log: () => {} });
  t.regex(open.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  await open.close();
});

test("a launch command the agent does not allow is a 400 at the edge that says what to do, and the agent stays usable", async (t) => {
  const orchestrator = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentWaitMs: 2000, maxAttempts: 1, token: TOKEN, adminToken: ADMIN, log: () => {} });
  cleanups.push(() => orchestrator.close());
  await agentWith({ scheduler: `127.0.0.1:${orchestrator.port}`, heartbeatIntervalMs: 100 });
  await orchestrator.scheduler.registerModel(create(ModelSpecSchema, { id: "ext", launchCommand: ["sh", "-c", "exit 0"] }));
  const res = await fetch(`${orchestrator.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "ext", messages: [{ role: "user", content: "x" }] }) });
  t.is(res.status, 400);
  const body = (await res.json()) as { error: { message: string; type: string } };
  t.is(body.error.type, "invalid_request_error");
  t.regex(body.error.message, /--allow-launch/);
  t.notRegex(body.error.message, /TOKEN/);
  t.is(orchestrator.scheduler.explain("ext")[0].ineligibleReason, "");
});
