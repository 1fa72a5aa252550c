// Chunk downloads into the disk tier, with sources the test controls: parallel, resumed from the
// last byte received when a transfer breaks, verified, refetched when the bytes are wrong.
import test from "ava";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CheckpointRef } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { ChunkDownloader, type ChunkProgress } from "../../src/agent/chunk-download.js";
import { type ChunkSource, SourceMissError, StoreSource } from "../../src/agent/chunk-sources.js";
import { DiskTier } from "../../src/agent/disk-tier.js";
import { tempDirs } from "../fixtures/temp-dir.js";
import { tinyStore } from "./fixtures/checkpoints.js";

const dirs = tempDirs("thaw-agent-dl-");
test.after.always(() => dirs.cleanup());

const ref = { $typeName: "thaw.checkpoint.v1.CheckpointRef", modelId: "tiny-llama", revision: "main" } as CheckpointRef;
const KEY = "tiny-llama@main";

/**
 * Wraps a source: records the offsets asked for, and can break at a byte offset (once, or every
 * time), corrupt the bytes it passes on, or have nothing.
 */
class Scripted implements ChunkSource {
  readonly asked: { file: string; offset: number }[] = [];
  private broken = false;
  constructor(
    readonly name: string,
    private readonly inner: ChunkSource,
    private readonly behave: { breakAt?: number; always?: boolean; corrupt?: boolean; missing?: boolean } = {},
  ) {}
  readIndex(r: CheckpointRef, key: string) {
    return this.inner.readIndex(r, key);
  }
  readFile(r: CheckpointRef, key: string, name: string) {
    return this.inner.readFile(r, key, name);
  }
  async *readChunk(r: CheckpointRef, key: string, fileName: string, offset: number, signal?: AbortSignal) {
    this.asked.push({ file: fileName, offset });
    if (this.behave.missing) throw new SourceMissError(`${fileName} not here`);
    const breakAt = this.behave.breakAt !== undefined && (this.behave.always || !this.broken) ? this.behave.breakAt : Infinity;
    let at = offset;
    for await (const piece of this.inner.readChunk(r, key, fileName, offset, signal)) {
      const copy = Buffer.from(piece);
      if (this.behave.corrupt) copy[0] ^= 0xff;
      if (at + copy.length > breakAt) {
        if (breakAt > at) yield copy.subarray(0, breakAt - at);
        this.broken = true;
        throw new ConnectError("connection reset", Code.Unavailable);
      }
      at += copy.length;
      yield copy;
    }
  }
}

let shared: Promise<Awaited<ReturnType<typeof tinyStore>>> | undefined;
/** One store of the three tiny models for every test (each test has its own disk tier). */
const sharedStore = () => (shared ??= dirs.make().then((d) => tinyStore(d, ["llama", "mistral", "qwen2"])));

async function setup() {
  const dir = await dirs.make();
  const { store, indexes } = await sharedStore();
  const disk = await DiskTier.open({ dir: path.join(dir, "agent"), budgetBytes: 64 << 20, fsync: false });
  const index = indexes.get("tiny-llama")!;
  return { dir, store, disk, index, origin: new StoreSource(store) };
}

test("all chunks arrive verified, in parallel, with the side files; a second fetch finds them cached", async (t) => {
  const { store, disk, index, origin } = await setup();
  t.true(index.chunks.length >= 3);
  const downloader = new ChunkDownloader(disk, { concurrency: 3 });
  await downloader.ensureIndex(ref, KEY, [origin]);
  for (const extra of index.extraFiles) t.truthy(await disk.readFile(KEY, extra.name), extra.name);
  const progress: ChunkProgress[] = [];
  const r = await downloader.fetchChunks(ref, KEY, index.chunks, [origin], (p) => progress.push(p));
  t.is(r.bytes, Number(index.totalBytes));
  t.true(disk.complete(KEY));
  for (const c of index.chunks) {
    // (Buffer.equals: ava's deepEqual is slow on megabytes)
    t.true((await readFile(disk.chunkPath(KEY, c.fileName))).equals(await store.read(KEY, c.fileName)), c.fileName);
  }
  t.is(progress.filter((p) => p.complete).length, index.chunks.length);
  const again: ChunkProgress[] = [];
  const r2 = await downloader.fetchChunks(ref, KEY, index.chunks, [origin], (p) => again.push(p));
  t.is(r2.bytes, 0);
  t.true(again.every((p) => p.source === "cache" && p.complete));
});

test("a broken transfer resumes from the last byte received, on the same source", async (t) => {
  const { disk, index, origin } = await setup();
  const flaky = new Scripted("flaky", origin, { breakAt: 300_000 });
  const downloader = new ChunkDownloader(disk, { concurrency: 1 });
  await downloader.ensureIndex(ref, KEY, [flaky]);
  const chunk = index.chunks[0];
  await downloader.fetchChunks(ref, KEY, [chunk], [flaky], () => {});
  t.deepEqual(flaky.asked, [
    { file: chunk.fileName, offset: 0 },
    { file: chunk.fileName, offset: 300_000 },
  ]);
  t.true(disk.hasChunk(KEY, chunk.fileName));
});

test("a source without the chunk is skipped; wrong bytes are detected and fetched again elsewhere", async (t) => {
  const { disk, index, origin } = await setup();
  const empty = new Scripted("empty", origin, { missing: true });
  const liar = new Scripted("liar", origin, { corrupt: true });
  const good = new Scripted("good", origin);
  const downloader = new ChunkDownloader(disk, { concurrency: 1 });
  await downloader.ensureIndex(ref, KEY, [origin]);
  const chunk = index.chunks[1];
  await downloader.fetchChunks(ref, KEY, [chunk], [empty, liar, good], () => {});
  t.is(empty.asked.length, 2); // once per round
  t.is(liar.asked.length, 1); // its bytes failed the checksum: the second round starts elsewhere
  t.is(good.asked.length, 1);
  t.true(await disk.verifyChunk(KEY, chunk));
});

test("nothing but liars: DATA_LOSS, and nothing lands on disk", async (t) => {
  const { disk, index, origin } = await setup();
  const downloader = new ChunkDownloader(disk, { concurrency: 1 });
  await downloader.ensureIndex(ref, KEY, [origin]);
  const chunk = index.chunks[0];
  const err = await t.throwsAsync(downloader.fetchChunks(ref, KEY, [chunk], [new Scripted("liar", origin, { corrupt: true })], () => {}));
  t.is(ConnectError.from(err).code, Code.DataLoss);
  t.false(disk.hasChunk(KEY, chunk.fileName));
});

test("a partial download left by an earlier run is resumed, not restarted", async (t) => {
  const { dir, disk, index, origin } = await setup();
  const chunk = index.chunks[0];
  const first = new ChunkDownloader(disk, { concurrency: 1 });
  await first.ensureIndex(ref, KEY, [origin]);
  // The first run gets 500 000 bytes and no more (every attempt of its only source breaks there).
  const dying = new Scripted("dying", origin, { breakAt: 500_000, always: true });
  await t.throwsAsync(first.fetchChunks(ref, KEY, [chunk], [dying], () => {}));
  const reopened = await DiskTier.open({ dir: path.join(dir, "agent"), budgetBytes: 64 << 20, fsync: false });
  const watch = new Scripted("store", origin);
  await new ChunkDownloader(reopened).fetchChunks(ref, KEY, [chunk], [watch], () => {});
  t.deepEqual(watch.asked, [{ file: chunk.fileName, offset: 500_000 }]);
  t.true(await reopened.verifyChunk(KEY, chunk));
});

test("the disk budget evicts the least recently used unpinned model, chunk by chunk", async (t) => {
  const dir = await dirs.make();
  const { store, indexes } = await sharedStore();
  const size = Number(indexes.get("tiny-llama")!.totalBytes);
  const evicted: string[] = [];
  const disk = await DiskTier.open({ dir: path.join(dir, "agent"), budgetBytes: Math.floor(size * 2.5), fsync: false, onEvict: (k) => evicted.push(k) });
  const downloader = new ChunkDownloader(disk);
  const origin = new StoreSource(store);
  const fetchAll = async (modelId: string) => {
    const r = { ...ref, modelId };
    const key = `${modelId}@main`;
    const index = await downloader.ensureIndex(r, key, [origin]);
    await downloader.fetchChunks(r, key, index.chunks, [origin], () => {});
  };
  await fetchAll("tiny-llama");
  await fetchAll("tiny-mistral");
  disk.touch("tiny-llama@main"); // llama used more recently than mistral
  const unpin = disk.pin("tiny-llama@main");
  await fetchAll("tiny-qwen2");
  unpin();
  t.true(evicted.length > 0);
  t.true(evicted.every((k) => k === "tiny-mistral@main"));
  t.true(disk.complete("tiny-llama@main"));
  t.true(disk.complete("tiny-qwen2@main"));
  t.false(disk.complete("tiny-mistral@main"));
  t.true(disk.stats().usedBytes <= disk.budgetBytes);
  // Everything pinned and no room: RESOURCE_EXHAUSTED instead of evicting what is in use.
  const pins = ["tiny-llama@main", "tiny-qwen2@main"].map((k) => disk.pin(k));
  const err = await t.throwsAsync(disk.reserve(size));
  t.is(ConnectError.from(err).code, Code.ResourceExhausted);
  pins.forEach((p) => p());
});
