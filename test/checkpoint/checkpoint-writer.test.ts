import test from "ava";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { CheckpointReader } from "../../src/checkpoint/checkpoint-reader.js";
import { type WriteProgress, writeCheckpoint } from "../../src/checkpoint/checkpoint-writer.js";
import { ChecksumAlgorithm, Dtype } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { crc32cSync } from "../../src/native/checksum.js";
import { LocalStore } from "../../src/store/local-store.js";
import { memoryTensor } from "../fixtures/memory-tensor.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs();
test.after.always(() => dirs.cleanup());

const KiB = 1024;

function llamaLike() {
  const embed = memoryTensor("model.embed_tokens.weight", Dtype.BF16, [64, 48]);
  const ones = new Uint8Array(48 * 2).fill(0x3f);
  return [
    embed,
    memoryTensor("model.layers.0.self_attn.q_proj.weight", Dtype.BF16, [48, 48]),
    memoryTensor("model.layers.0.self_attn.k_proj.weight", Dtype.BF16, [48, 48]),
    memoryTensor("model.layers.0.input_layernorm.weight", Dtype.BF16, [48], ones),
    memoryTensor("model.layers.1.input_layernorm.weight", Dtype.BF16, [48], ones.slice()),
    memoryTensor("model.layers.0.mlp.big.weight", Dtype.F32, [100, 100]), // 40 000 bytes: larger than the 16 KiB target
    memoryTensor("model.norm.bias", Dtype.F32, [0]),
    memoryTensor("scalar", Dtype.I64, []),
    memoryTensor("lm_head.weight", Dtype.BF16, [64, 48], embed.data.slice()),
    memoryTensor("model.layers.0.self_attn.q_proj.other", Dtype.F16, [48, 48], memoryTensor("x", Dtype.BF16, [48, 48]).data), // same bytes as nothing else
  ];
}

test("round trip: every byte comes back, aliases resolve, invariants hold", async (t) => {
  const root = await dirs.make();
  const store = await LocalStore.open(root);
  const tensors = llamaLike();
  const events: WriteProgress[] = [];
  const index = await writeCheckpoint(store, tensors, {
    modelId: "org/tiny",
    chunkSize: 16 * KiB,
    blockSize: 8 * KiB,
    buffers: 2,
    sideFiles: [{ name: "config.json", data: new TextEncoder().encode('{"architectures":["LlamaForCausalLM"]}') }],
    architecture: "LlamaForCausalLM",
    metadata: { format: "pt" },
    onProgress: (p) => events.push(p),
  });
  t.is(index.modelKey, "org--tiny@main");
  t.deepEqual(await store.list(), ["org--tiny@main"]);

  // tied tensors stored once
  const embed = index.tensors.find((x) => x.name === "model.embed_tokens.weight")!;
  t.deepEqual(embed.aliases, ["lm_head.weight"]);
  const norm = index.tensors.find((x) => x.name === "model.layers.0.input_layernorm.weight")!;
  t.deepEqual(norm.aliases, ["model.layers.1.input_layernorm.weight"]);
  t.is(index.tensors.length, tensors.length - 2);

  // alignment, chunk lengths, big tensor alone, checksums over whole files
  const folder = store.localPath("org--tiny@main");
  for (const x of index.tensors) t.is(x.offset % 4096n, 0n, x.name);
  const big = index.tensors.find((x) => x.name === "model.layers.0.mlp.big.weight")!;
  t.is(big.offset, 0n);
  t.true(index.tensors.every((x) => x === big || x.chunk !== big.chunk || x.byteLength === 0n));
  for (const chunk of index.chunks) {
    const bytes = await readFile(path.join(folder, chunk.fileName));
    t.is(BigInt(bytes.length), chunk.byteLength);
    t.is(bytes.length % 4096, 0);
    t.is(chunk.checksum?.algorithm, ChecksumAlgorithm.CRC32C);
    t.is(BigInt(crc32cSync(bytes)), chunk.checksum!.value);
  }
  t.is(index.totalBytes, index.chunks.reduce((a, c) => a + c.byteLength, 0n));
  // padding is zeros
  const chunk0 = await readFile(path.join(folder, index.chunks[0].fileName));
  t.true(chunk0.subarray(Number(embed.byteLength), 4096).every((b) => b === 0));

  const reader = await CheckpointReader.open(store, "org--tiny@main");
  for (const x of tensors) t.deepEqual(await reader.tensor(x.name), x.data, x.name);
  t.is(reader.names().length, tensors.length);
  t.deepEqual(reader.index.metadata, { format: "pt" });
  t.is(reader.index.architecture, "LlamaForCausalLM");
  t.is(reader.index.extraFiles[0].name, "config.json");

  // progress: monotonic, ends complete
  const last = events.at(-1)!;
  t.is(last.stage, "publishing");
  t.is(last.tensorsDone, tensors.length);
  t.is(last.bytesDone, Number(index.totalBytes));
  for (let i = 1; i < events.length; i++) t.true(events[i].bytesDone >= events[i - 1].bytesDone && events[i].tensorsDone >= events[i - 1].tensorsDone);
});

test("a corrupt chunk is caught by the reader", async (t) => {
  const store = await LocalStore.open(await dirs.make());
  await writeCheckpoint(store, llamaLike(), { modelId: "tiny", chunkSize: 16 * KiB });
  const file = path.join(store.localPath("tiny@main"), "chunk-00000.bin");
  const bytes = await readFile(file);
  bytes[100] ^= 1;
  await writeFile(file, bytes);
  const err = await t.throwsAsync(CheckpointReader.open(store, "tiny@main"), { instanceOf: ConnectError });
  t.is(err?.code, Code.DataLoss);
  t.regex(err!.message, /CRC-32C mismatch/);
  // without verification the (wrong) bytes are still readable
  await t.notThrowsAsync(CheckpointReader.open(store, "tiny@main", { verify: false }));
  const missing = await t.throwsAsync(CheckpointReader.open(store, "other@main"), { instanceOf: ConnectError });
  t.is(missing?.code, Code.NotFound);
});

test("a failing tensor read aborts the write and publishes nothing", async (t) => {
  const root = await dirs.make();
  const store = await LocalStore.open(root);
  const tensors = llamaLike();
  const broken = { ...tensors[5], read: async () => { throw new Error("disk on fire"); } };
  tensors[5] = broken;
  await t.throwsAsync(writeCheckpoint(store, tensors, { modelId: "tiny", chunkSize: 16 * KiB }), { message: "disk on fire" });
  t.deepEqual(await store.list(), []);
  t.deepEqual(await readdir(path.join(root, ".tmp")), []);
});

test("an aborted signal stops the write and publishes nothing", async (t) => {
  const store = await LocalStore.open(await dirs.make());
  const controller = new AbortController();
  const err = await t.throwsAsync(
    writeCheckpoint(store, llamaLike(), {
      modelId: "tiny",
      chunkSize: 16 * KiB,
      blockSize: 4 * KiB,
      signal: controller.signal,
      onProgress: (p) => p.bytesDone > 0 && controller.abort(),
    }),
    { any: true },
  );
  t.is((err as Error | undefined)?.name, "AbortError");
  t.deepEqual(await store.list(), []);
});

test("large tensors stream through the block buffers intact", async (t) => {
  const store = await LocalStore.open(await dirs.make());
  const tensors = [
    memoryTensor("a", Dtype.U8, [3 * 1024 * 1024 + 5]),
    memoryTensor("b", Dtype.F32, [1000, 333]),
    memoryTensor("c", Dtype.U8, [1]),
  ];
  const index = await writeCheckpoint(store, tensors, { modelId: "stream", chunkSize: 2 << 20, blockSize: 1 << 20, buffers: 3 });
  t.deepEqual(index.chunks.map((c) => Number(c.byteLength)), [3 * 1024 * 1024 + 4096, 1335296 + 4096]);
  const reader = await CheckpointReader.open(store, "stream@main");
  for (const x of tensors) t.true(Buffer.from(await reader.tensor(x.name)).equals(x.data), x.name);
  t.is((await stat(path.join(store.localPath("stream@main"), "chunk-00001.bin"))).size, 1335296 + 4096);
});

test("inputs are checked", async (t) => {
  const store = await LocalStore.open(await dirs.make());
  const a = memoryTensor("a", Dtype.U8, [4]);
  await t.throwsAsync(writeCheckpoint(store, [a, a], { modelId: "x" }), { instanceOf: RangeError, message: /twice/ });
  await t.throwsAsync(writeCheckpoint(store, [{ ...a, byteLength: 5 }], { modelId: "x" }), { instanceOf: RangeError });
  const bad = await t.throwsAsync(writeCheckpoint(store, [a], { modelId: "../x" }), { instanceOf: ConnectError });
  t.is(bad?.code, Code.InvalidArgument);
  await t.throwsAsync(writeCheckpoint(store, [a], { modelId: "x", sideFiles: [{ name: "../../etc/passwd", data: new Uint8Array(1) }] }), { instanceOf: ConnectError });
  t.deepEqual(await store.list(), []);
});
