import test from "ava";
import { cp, readdir, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { CheckpointReader } from "../../src/checkpoint/checkpoint-reader.js";
import { type ConvertOptions, type ConvertProgress, convertModel } from "../../src/converter/convert.js";
import { hubCacheFolder } from "../../src/converter/sources/hub-source.js";
import { ConvertPhase } from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { LocalStore } from "../../src/store/local-store.js";
import { expectedTensors, makeHfFolder } from "../fixtures/hf-folder.js";
import { FakeHub } from "../fixtures/hub-server.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs();
const TOKEN = "hf_test_token";
let models = "";
let hub: FakeHub;

test.before(async () => {
  models = await dirs.make();
  await Promise.all([makeHfFolder(path.join(models, "sharded"), "sharded"), makeHfFolder(path.join(models, "single"), "single")]);
  const pickle = path.join(models, "pickle");
  await cp(path.join(models, "single"), pickle, { recursive: true });
  await rm(path.join(pickle, "model.safetensors"));
  await writeFile(path.join(pickle, "pytorch_model.bin"), "not a pickle");
  const noConfig = path.join(models, "noconfig");
  await cp(path.join(models, "single"), noConfig, { recursive: true });
  await rm(path.join(noConfig, "config.json"));
  hub = await FakeHub.start({
    token: TOKEN,
    cdn: true,
    repos: {
      "org/sharded": { folder: path.join(models, "sharded") },
      "org/single": { folder: path.join(models, "single") },
      "org/private": { folder: path.join(models, "single"), access: "private" },
      "org/gated": { folder: path.join(models, "single"), access: "gated" },
      "org/pickle": { folder: pickle },
      "org/noconfig": { folder: noConfig },
      "org/mirror": { folder: path.join(models, "single"), listingWithoutSha: true },
    },
  });
});
test.after.always(async () => {
  await hub?.close();
  await dirs.cleanup();
});
// Each test counts requests and injects failures: run them one at a time.
test.beforeEach(() => hub.clearFailures());

async function options(extra: Partial<ConvertOptions> = {}): Promise<ConvertOptions & { cacheDir: string }> {
  const cacheDir = await dirs.make();
  return {
    source: "org/sharded",
    store: await LocalStore.open(await dirs.make()),
    hub: { endpoint: hub.endpoint, cacheDir, retries: 2, retryDelayMs: 1, idleTimeoutMs: 2000 },
    cacheDir,
    ...extra,
  };
}

async function rejects(t: import("ava").ExecutionContext, o: ConvertOptions, code: Code, message?: RegExp): Promise<void> {
  const err = await t.throwsAsync(convertModel(o), { instanceOf: ConnectError });
  t.is(err?.code, code, `${Code[code]} expected, got ${err?.message}`);
  if (message) t.regex(err!.rawMessage, message);
  t.deepEqual(await o.store.list(), []);
}

test.serial("a sharded Hub repository converts byte for byte, through a CDN redirect, pinned to the commit", async (t) => {
  const o = await options();
  const before = hub.requests.length;
  const events: ConvertProgress[] = [];
  const index = await convertModel({ ...o, onProgress: (p) => events.push(p), progressIntervalMs: 0 });
  t.is(index.modelKey, "org--sharded@main");
  t.is(index.source?.revision, hub.sha("org/sharded"));
  t.is(index.source?.location, `${hub.endpoint}/org/sharded`);
  const expected = await expectedTensors(path.join(models, "sharded"));
  const reader = await CheckpointReader.open(o.store, index.modelKey);
  for (const [name, e] of expected) t.true(Buffer.from(await reader.tensor(name)).equals(e.bytes), name);
  for (const f of index.source!.files) t.regex(f.sha256, /^[0-9a-f]{64}$/);
  t.deepEqual(index.extraFiles.map((f) => f.name), ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]);

  const mine = hub.requests.slice(before);
  const resolves = mine.filter((r) => r.server === "hub" && r.path.includes("/resolve/"));
  t.true(resolves.every((r) => r.path.includes(`/resolve/${hub.sha("org/sharded")}/`)), "files fetched by commit");
  t.false(mine.some((r) => r.path.includes("expected")), "only weights and side files are downloaded");
  const cdn = mine.filter((r) => r.server === "cdn");
  t.is(cdn.length, 3, "three shards via the CDN");
  t.true(cdn.every((r) => r.authorization === undefined), "the token never goes to another origin");
  t.deepEqual([...new Set(events.map((e) => e.phase))], [ConvertPhase.RESOLVING, ConvertPhase.DOWNLOADING, ConvertPhase.WRITING, ConvertPhase.PUBLISHING]);
  const downloads = events.filter((e) => e.phase === ConvertPhase.DOWNLOADING);
  t.is(downloads.at(-1)!.filesDone, 7, "3 shards and 4 side files");
  t.is(downloads.at(-1)!.bytesDone, downloads.at(-1)!.bytesTotal);
  // downloads are removed after a successful conversion
  await t.throwsAsync(stat(hubCacheFolder(o.cacheDir, "org/sharded", hub.sha("org/sharded"))));
});

test.serial("without a commit in the listing, x-repo-commit pins the downloads", async (t) => {
  const before = hub.requests.length;
  const index = await convertModel(await options({ source: "org/mirror" }));
  t.is(index.source?.revision, hub.sha("org/mirror"));
  const weights = hub.requests.slice(before).filter((r) => r.path.endsWith("/model.safetensors"));
  t.deepEqual(weights.map((r) => r.path), [`/org/mirror/resolve/${hub.sha("org/mirror")}/model.safetensors`]);
});

test.serial("the token is sent as Bearer: private repos need it, gated ones answer 403", async (t) => {
  await rejects(t, await options({ source: "org/private" }), Code.Unauthenticated, /set HF_TOKEN/);
  const withToken = await options({ source: "org/private" });
  withToken.hub!.token = TOKEN;
  const index = await convertModel(withToken);
  t.is(index.modelKey, "org--private@main");
  const wrong = await options({ source: "org/private" });
  wrong.hub!.token = "wrong";
  await rejects(t, wrong, Code.Unauthenticated, /rejected the token/);
  const gated = await options({ source: "org/gated" });
  gated.hub!.token = TOKEN;
  await rejects(t, gated, Code.PermissionDenied, /accept its terms/);
});

test.serial("unknown repos and revisions are NotFound", async (t) => {
  await rejects(t, await options({ source: "org/missing" }), Code.NotFound, /not found/);
  await rejects(t, await options({ source: "org/single", revision: "v9" }), Code.NotFound, /Invalid rev id/);
});

test.serial("a 500 is retried; a persistent one is Unavailable", async (t) => {
  hub.fail({ match: "/api/models/", status: 500 });
  hub.fail({ match: "/blobs/", status: 503 });
  const index = await convertModel(await options({ source: "org/single" }));
  t.is(index.modelKey, "org--single@main");
  hub.fail({ match: "/api/models/", status: 500, times: Infinity });
  await rejects(t, await options({ source: "org/single" }), Code.Unavailable, /HTTP 500.*gave up after 3 attempts/);
  hub.clearFailures();
  hub.fail({ match: "/blobs/", status: 502, times: Infinity });
  await rejects(t, await options({ source: "org/single" }), Code.Unavailable, /HTTP 502/);
});

test.serial("a download cut short is resumed with a Range request", async (t) => {
  const o = await options({ source: "org/single" });
  const before = hub.requests.length;
  hub.fail({ match: "/blobs/", cutAfter: 20000 });
  const index = await convertModel(o);
  const blobs = hub.requests.slice(before).filter((r) => r.server === "cdn");
  t.is(blobs.length, 2);
  t.is(blobs[0].range, undefined);
  t.is(blobs[1].range, "bytes=20000-");
  const size = (await stat(path.join(models, "single", "model.safetensors"))).size;
  t.is(blobs[0].sent + blobs[1].sent, size, "no byte fetched twice");
  await t.notThrowsAsync(CheckpointReader.open(o.store, index.modelKey));
});

test.serial("a run that gives up leaves its partial download; the next run resumes it", async (t) => {
  const o = await options({ source: "org/single" });
  o.hub!.retries = 0;
  hub.fail({ match: "/blobs/", cutAfter: 30000 });
  await rejects(t, o, Code.Unavailable, /connection|closed/);
  const folder = hubCacheFolder(o.cacheDir, "org/single", hub.sha("org/single"));
  t.true((await readdir(folder)).includes("model.safetensors.part"));
  const before = hub.requests.length;
  const index = await convertModel(o);
  const blobs = hub.requests.slice(before).filter((r) => r.server === "cdn");
  t.deepEqual(blobs.map((r) => r.range), ["bytes=30000-"]);
  const expected = await expectedTensors(path.join(models, "single"));
  const reader = await CheckpointReader.open(o.store, index.modelKey);
  for (const [name, e] of expected) t.true(Buffer.from(await reader.tensor(name)).equals(e.bytes), name);
});

test.serial("a pickle-only repository is refused before any weight is downloaded", async (t) => {
  const before = hub.requests.length;
  await rejects(t, await options({ source: "org/pickle" }), Code.FailedPrecondition, /only pickle weights/);
  t.false(hub.requests.slice(before).some((r) => r.path.includes("pytorch_model.bin")));
  await rejects(t, await options({ source: "org/noconfig" }), Code.FailedPrecondition, /has no config\.json/);
});

test.serial("an unreachable Hub is Unavailable; cancelling a download is Canceled", async (t) => {
  const o = await options({ source: "org/single" });
  o.hub!.endpoint = "http://127.0.0.1:9"; // discard port: connection refused
  o.hub!.retries = 1;
  await rejects(t, o, Code.Unavailable, /cannot reach/);
  const controller = new AbortController();
  hub.fail({ match: "/blobs/", cutAfter: 1000 });
  const slow = await options({ source: "org/single", signal: controller.signal, progressIntervalMs: 0 });
  slow.hub!.retryDelayMs = 60_000; // cancelled while waiting to retry
  await rejects(
    t,
    { ...slow, onProgress: (p) => p.phase === ConvertPhase.DOWNLOADING && p.bytesDone > 0n && controller.abort() },
    Code.Canceled,
  );
});
