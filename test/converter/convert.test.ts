import test from "ava";
import { spawn } from "node:child_process";
import { cp, readdir, readFile, rm, symlink, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { CheckpointReader } from "../../src/checkpoint/checkpoint-reader.js";
import { dtypeInfo } from "../../src/checkpoint/dtype.js";
import { type ConvertOptions, type ConvertProgress, convertModel } from "../../src/converter/convert.js";
import { ConvertPhase } from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { LocalStore } from "../../src/store/local-store.js";
import { expectedTensors, makeHfFolder } from "../fixtures/hf-folder.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const dirs = tempDirs();
let models = ""; // holds single/ and sharded/, written once by Python
test.before(async () => {
  models = await dirs.make();
  await Promise.all([makeHfFolder(path.join(models, "single"), "single"), makeHfFolder(path.join(models, "sharded"), "sharded")]);
});
test.after.always(() => dirs.cleanup());

async function freshStore(): Promise<LocalStore> {
  return LocalStore.open(await dirs.make());
}

/** A copy of a fixture folder to break. */
async function copyOf(name: "single" | "sharded"): Promise<string> {
  const dir = path.join(await dirs.make(), name);
  await cp(path.join(models, name), dir, { recursive: true });
  return dir;
}

async function rejects(t: import("ava").ExecutionContext, options: ConvertOptions, code: Code, message?: RegExp): Promise<ConnectError | undefined> {
  const err = await t.throwsAsync(convertModel(options), { instanceOf: ConnectError });
  t.is(err?.code, code, `${Code[code]} expected, got ${err?.message}`);
  if (message) t.regex(err!.rawMessage, message);
  t.deepEqual(await options.store.list(), [], "nothing published");
  return err;
}

for (const layout of ["single", "sharded"] as const) {
  test(`${layout} folder converts byte for byte (tensors written by the safetensors library)`, async (t) => {
    const store = await freshStore();
    const folder = path.join(models, layout);
    const events: ConvertProgress[] = [];
    const index = await convertModel({ source: folder, modelId: `test/${layout}`, store, chunkSize: 16384, onProgress: (p) => events.push(p), progressIntervalMs: 0 });
    t.is(index.modelKey, `test--${layout}@main`);
    t.is(index.architecture, "LlamaForCausalLM");
    t.is(index.metadata.format, "pt");

    const expected = await expectedTensors(folder);
    const reader = await CheckpointReader.open(store, index.modelKey);
    t.deepEqual(reader.names().sort(), [...expected.keys()].sort());
    for (const [name, e] of expected) {
      const entry = reader.entry(name);
      t.is(dtypeInfo(entry.dtype)?.name, e.dtype, name);
      t.deepEqual(entry.shape.map(Number), e.shape, name);
      t.true(Buffer.from(await reader.tensor(name)).equals(e.bytes), `${name} bytes`);
    }
    const dtypes = new Set([...expected.values()].map((e) => e.dtype));
    t.is(dtypes.size, layout === "single" ? 10 : 15, "dtypes covered");

    // tied lm_head stored once (under whichever name comes first in the file's data)
    const tied = ["lm_head.weight", "model.embed_tokens.weight"];
    const stored = index.tensors.filter((x) => tied.includes(x.name));
    t.is(stored.length, 1);
    t.deepEqual([stored[0].name, ...stored[0].aliases].sort(), tied);
    // alignment and chunking invariants (16 KiB target; the 48 KiB tensor alone)
    for (const x of index.tensors) t.is(x.offset % 4096n, 0n);
    for (const c of index.chunks) t.is(c.byteLength % 4096n, 0n);
    const big = index.tensors.find((x) => x.name.endsWith(".big"))!;
    t.is(index.tensors.filter((x) => x.chunk === big.chunk && x.byteLength > 0n).length, 1);
    t.true(index.chunks.length > 2);

    // side files copied as is
    t.deepEqual(index.extraFiles.map((f) => f.name), ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]);
    for (const f of index.extraFiles) {
      t.deepEqual(await readFile(path.join(store.localPath(index.modelKey), f.name)), await readFile(path.join(folder, f.name)));
    }
    t.is(index.source?.files.length, layout === "single" ? 1 : 3);
    t.is(index.source?.location, folder);

    // progress: phases in order, totals right, done last
    const phases = [...new Set(events.map((e) => e.phase))];
    t.deepEqual(phases, [ConvertPhase.RESOLVING, ConvertPhase.WRITING, ConvertPhase.PUBLISHING]);
    const done = events.at(-1)!;
    t.is(done.tensorsDone, expected.size);
    t.is(done.filesDone, index.source!.files.length);
    t.is(done.bytesDone, index.totalBytes);
    const writing = events.filter((e) => e.phase === ConvertPhase.WRITING);
    t.true(writing.some((e) => e.filesDone > 0 && e.filesDone < e.filesTotal) || layout === "single");
  });
}

test("an existing checkpoint is returned unless overwrite; overwrite replaces it", async (t) => {
  const store = await freshStore();
  const source = path.join(models, "single");
  const first = await convertModel({ source, store, revision: "v1" });
  t.is(first.modelKey, "single@v1");
  const events: ConvertProgress[] = [];
  const again = await convertModel({ source, store, revision: "v1", onProgress: (p) => events.push(p) });
  t.is(again.createdUnixMs, first.createdUnixMs);
  t.is(events.at(-1)?.phase, ConvertPhase.RESOLVING);
  t.regex(events.at(-1)!.message, /already converted/);
  await new Promise((r) => setTimeout(r, 5));
  const replaced = await convertModel({ source, store, revision: "v1", overwrite: true, hashLocalFiles: true });
  t.not(replaced.createdUnixMs, first.createdUnixMs);
  t.regex(replaced.source!.files[0].sha256, /^[0-9a-f]{64}$/);
  t.deepEqual(await store.list(), ["single@v1"]);
});

test("corrupt safetensors are refused with the file and the reason", async (t) => {
  const cases: [string, (file: string) => Promise<void>, RegExp][] = [
    ["truncated data", (f) => truncate(f, 50000), /out of range.*truncated/],
    ["header length past EOF", async (f) => { const b = await readFile(f); b.writeBigUInt64LE(10n ** 9n, 0); await writeFile(f, b); }, /header length 1000000000 runs past the end/],
    ["shorter than 8 bytes", (f) => writeFile(f, "abc"), /shorter than the 8-byte/],
    ["invalid JSON", async (f) => { const b = await readFile(f); b[8] = 0x5b; b[9] = 0x7b; await writeFile(f, b); }, /not valid UTF-8 JSON/],
    ["unknown dtype", (f) => writeHeader(f, { a: { dtype: "C64", shape: [1], data_offsets: [0, 8] } }, 8), /unsupported dtype "C64"/],
    ["offsets beyond the data", (f) => writeHeader(f, { a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, 8), /out of range/],
    ["offsets not matching the shape", (f) => writeHeader(f, { a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8), /needs 12/],
    ["overlapping tensors", (f) => writeHeader(f, { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "U8", shape: [4], data_offsets: [4, 8] } }, 8), /overlap/],
    ["negative shape", (f) => writeHeader(f, { a: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } }, 8), /non-negative/],
  ];
  for (const [what, breakIt, message] of cases) {
    const folder = await copyOf("single");
    await breakIt(path.join(folder, "model.safetensors"));
    const err = await rejects(t, { source: folder, store: await freshStore() }, Code.InvalidArgument, message);
    t.regex(err?.rawMessage ?? "", /model\.safetensors: /, what);
  }
});

test("a shard index that disagrees with the shards, or points outside the folder, is refused", async (t) => {
  const folder = await copyOf("sharded");
  const indexFile = path.join(folder, "model.safetensors.index.json");
  const index = JSON.parse(await readFile(indexFile, "utf8"));
  index.weight_map["model.shard2.u16"] = "../../etc/passwd.safetensors";
  await writeFile(indexFile, JSON.stringify(index));
  await rejects(t, { source: folder, store: await freshStore() }, Code.InvalidArgument, /invalid file name/);
  index.weight_map["model.shard2.u16"] = "model-00001-of-00003.safetensors";
  await writeFile(indexFile, JSON.stringify(index));
  await rejects(t, { source: folder, store: await freshStore() }, Code.InvalidArgument, /shard index puts it in/);
  index.weight_map["model.shard2.u16"] = "model-00009-of-00009.safetensors";
  await writeFile(indexFile, JSON.stringify(index));
  await rejects(t, { source: folder, store: await freshStore() }, Code.InvalidArgument, /not in the folder/);
});

test("a pickle-only folder is refused without reading the pickle", async (t) => {
  const folder = await copyOf("single");
  await rm(path.join(folder, "model.safetensors"));
  // Not a pickle at all: if anything tried to read it as weights, the error would differ.
  await writeFile(path.join(folder, "pytorch_model.bin"), "not a pickle");
  await writeFile(path.join(folder, "training_args.ckpt"), "x");
  await rejects(t, { source: folder, store: await freshStore() }, Code.FailedPrecondition, /only pickle weights \(pytorch_model\.bin.*never unpickles/);
});

test("missing config.json, missing weights, missing folder", async (t) => {
  const noConfig = await copyOf("single");
  await rm(path.join(noConfig, "config.json"));
  await rejects(t, { source: noConfig, store: await freshStore() }, Code.FailedPrecondition, /has no config\.json/);
  const noWeights = await copyOf("single");
  await rm(path.join(noWeights, "model.safetensors"));
  await rejects(t, { source: noWeights, store: await freshStore() }, Code.FailedPrecondition, /no model\.safetensors/);
  await rejects(t, { source: path.join(models, "nope"), store: await freshStore() }, Code.NotFound, /does not exist/);
  const badConfig = await copyOf("single");
  await writeFile(path.join(badConfig, "config.json"), "{nope");
  await rejects(t, { source: badConfig, store: await freshStore() }, Code.InvalidArgument, /config\.json is not valid JSON/);
});

test("a config no engine could serve is refused at conversion, naming the field", async (t) => {
  const folder = await copyOf("single");
  const config = JSON.parse(await readFile(path.join(folder, "config.json"), "utf8"));
  await writeFile(path.join(folder, "config.json"), JSON.stringify({ ...config, num_attention_heads: 4, num_key_value_heads: 0 }));
  await rejects(t, { source: folder, store: await freshStore() }, Code.InvalidArgument, /config\.json: num_key_value_heads must be a positive integer, got 0/);
  await writeFile(path.join(folder, "config.json"), JSON.stringify({ ...config, hidden_size: 30, num_attention_heads: 4 }));
  await rejects(t, { source: folder, store: await freshStore() }, Code.InvalidArgument, /hidden_size \(30\) must be divisible by num_attention_heads \(4\)/);
});

test("local sources stay inside the allowed roots: ../, absolute, symlinks, NUL", async (t) => {
  const root = await dirs.make();
  const inside = path.join(root, "models", "single");
  await cp(path.join(models, "single"), inside, { recursive: true });
  const store = await freshStore();
  const localRoots = [path.join(root, "models")];
  await t.notThrowsAsync(convertModel({ source: inside, store, localRoots }));
  await store.delete("single@main");

  await rejects(t, { source: `${inside}/../../../`, store, localRoots }, Code.PermissionDenied, /outside the folders/);
  await rejects(t, { source: path.join(models, "sharded"), store, localRoots }, Code.PermissionDenied, /outside/);
  await rejects(t, { source: "/etc", store, localRoots }, Code.PermissionDenied);
  const link = path.join(root, "models", "link");
  await symlink(path.join(models, "sharded"), link);
  await rejects(t, { source: link, store, localRoots }, Code.PermissionDenied, /outside/);
  // a weight file linked from outside the roots
  const sneaky = path.join(root, "models", "sneaky");
  await cp(inside, sneaky, { recursive: true });
  await rm(path.join(sneaky, "model.safetensors"));
  await symlink(path.join(models, "single", "model.safetensors"), path.join(sneaky, "model.safetensors"));
  await rejects(t, { source: sneaky, store, localRoots }, Code.PermissionDenied, /weight file model\.safetensors/);
  await rejects(t, { source: `${inside}\0`, store, localRoots }, Code.InvalidArgument, /NUL/);
  await rejects(t, { source: "", store }, Code.InvalidArgument);
});

test("ids, revisions and chunk sizes are checked", async (t) => {
  const source = path.join(models, "single");
  const store = await freshStore();
  await rejects(t, { source, store, modelId: "../evil" }, Code.InvalidArgument, /invalid model id/);
  await rejects(t, { source, store, modelId: "a/b/c" }, Code.InvalidArgument, /invalid model id/);
  await rejects(t, { source, store, revision: "../../x" }, Code.InvalidArgument, /invalid revision/);
  await rejects(t, { source, store, revision: "refs/pr/1" }, Code.InvalidArgument, /invalid revision/);
  await rejects(t, { source: "not a repo id", store }, Code.InvalidArgument, /invalid model id/);
  await rejects(t, { source, store, chunkSize: 100 }, Code.InvalidArgument, /chunk size/);
});

test("a conversion cancelled half-way publishes nothing, and the next run succeeds", async (t) => {
  const root = await dirs.make();
  const store = await LocalStore.open(root);
  const source = path.join(models, "sharded");
  const controller = new AbortController();
  await rejects(
    t,
    {
      source,
      store,
      chunkSize: 4096,
      blockSize: 4096,
      signal: controller.signal,
      progressIntervalMs: 0,
      onProgress: (p) => p.phase === ConvertPhase.WRITING && p.bytesDone > 0n && controller.abort(),
    },
    Code.Canceled,
    /cancelled/,
  );
  t.deepEqual(await readdir(path.join(root, ".tmp")), []);
  const index = await convertModel({ source, store });
  t.deepEqual(await store.list(), [index.modelKey]);
});

test("a converter process killed half-way leaves nothing published; a new one cleans up and succeeds", async (t) => {
  const root = await dirs.make();
  const source = await copyOf("single");
  const child = spawn(process.execPath, ["--import=tsx", path.join(here, "../fixtures/convert-child.ts"), source, root], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => d.toString().includes("writing") && resolve());
    child.on("exit", (code) => reject(new Error(`child exited early with ${code}`)));
  });
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
  const tmp = await readdir(path.join(root, ".tmp"));
  t.is(tmp.length, 1, "the dead writer's temp folder is there");
  const store = await LocalStore.open(root);
  t.deepEqual(await readdir(path.join(root, ".tmp")), [], "cleaned at open");
  t.deepEqual(await store.list(), []);
  const index = await convertModel({ source, store });
  t.deepEqual(await store.list(), [index.modelKey]);
  await t.notThrowsAsync(CheckpointReader.open(store, index.modelKey));
});

test("bare shards without an index are converted in order", async (t) => {
  const folder = await copyOf("sharded");
  await rm(path.join(folder, "model.safetensors.index.json"));
  const store = await freshStore();
  const index = await convertModel({ source: folder, store });
  t.deepEqual(index.source?.files.map((f) => f.name), ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]);
  t.is(index.tensors.length + 1, (await expectedTensors(folder)).size);
});

async function writeHeader(file: string, header: object, dataBytes: number): Promise<void> {
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  await writeFile(file, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
}
