import test from "ava";
import { spawnSync } from "node:child_process";
import { mkdir, readdir, readFile, stat, symlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { ConnectError } from "@connectrpc/connect";
import { LocalStore } from "../../src/store/local-store.js";
import { NotFoundError } from "../../src/store/store.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs();
test.after.always(() => dirs.cleanup());
const enc = new TextEncoder();

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

async function put(store: LocalStore, key: string, files: Record<string, string>, index = "idx"): Promise<void> {
  const w = await store.beginWrite(key);
  for (const [name, body] of Object.entries(files)) {
    const out = await w.create(name);
    await out.write(enc.encode(body));
    await out.close();
  }
  await w.publish(enc.encode(index));
}

test("pending writes are invisible until publish, then atomic", async (t) => {
  const root = await dirs.make();
  const store = await LocalStore.open(root);
  const w = await store.beginWrite("org--m@main");
  const out = await w.create("chunk-00000.bin");
  // overlapped writes land in call order
  await Promise.all([out.write(enc.encode("hello ")), out.write(enc.encode("world"))]);
  await out.close();
  t.deepEqual(await store.list(), []);
  t.is(await store.stat("org--m@main", "chunk-00000.bin"), undefined);
  await t.throwsAsync(store.read("org--m@main", "model.idx"), { instanceOf: NotFoundError });
  t.is((await readdir(path.join(root, ".tmp"))).length, 1);
  await w.publish(enc.encode("index-bytes"));
  t.deepEqual(await store.list(), ["org--m@main"]);
  t.deepEqual(await readdir(path.join(root, ".tmp")), []);
  t.is((await store.stat("org--m@main", "chunk-00000.bin"))?.size, 11);
  t.is(Buffer.from(await store.read("org--m@main", "model.idx")).toString(), "index-bytes");
  t.is((await collect(store.readRange("org--m@main", "chunk-00000.bin", 6))).toString(), "world");
  t.is((await collect(store.readRange("org--m@main", "chunk-00000.bin", 2, 3))).toString(), "llo");
  t.is((await collect(store.readRange("org--m@main", "chunk-00000.bin", 20))).length, 0);
  t.is(store.localPath("org--m@main"), path.join(root, "org--m@main"));
  await t.throwsAsync(w.publish(enc.encode("again")));
});

test("publish replaces an older checkpoint; delete removes index first", async (t) => {
  const store = await LocalStore.open(await dirs.make());
  await put(store, "m@main", { "chunk-00000.bin": "old", "old.json": "{}" }, "v1");
  await put(store, "m@main", { "chunk-00000.bin": "new!" }, "v2");
  t.is(Buffer.from(await store.read("m@main", "model.idx")).toString(), "v2");
  t.is(Buffer.from(await store.read("m@main", "chunk-00000.bin")).toString(), "new!");
  t.is(await store.stat("m@main", "old.json"), undefined);
  t.is(await store.delete("m@main"), 6);
  t.deepEqual(await store.list(), []);
  t.is(await store.delete("m@main"), 0);
  await t.throwsAsync(collect(store.readRange("m@main", "chunk-00000.bin", 0)), { instanceOf: NotFoundError });
});

test("abort drops everything; list ignores folders without an index", async (t) => {
  const root = await dirs.make();
  const store = await LocalStore.open(root);
  const w = await store.beginWrite("m@main");
  const out = await w.create("chunk-00000.bin");
  await out.write(enc.encode("x"));
  await w.abort();
  await w.abort();
  t.deepEqual(await readdir(path.join(root, ".tmp")), []);
  await mkdir(path.join(root, "half@main"));
  await writeFile(path.join(root, "half@main", "chunk-00000.bin"), "x");
  await mkdir(path.join(root, "not a key"));
  await writeFile(path.join(root, "not a key", "model.idx"), "x");
  t.deepEqual(await store.list(), []);
});

test("stale temp folders of dead writers are removed at open, live ones kept", async (t) => {
  const root = await dirs.make();
  await LocalStore.open(root);
  const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
  const deadDir = path.join(root, ".tmp", `m@main~${dead}~abcdef`);
  const liveDir = path.join(root, ".tmp", `m@main~${process.ppid}~abcdef`);
  const oldDir = path.join(root, ".tmp", `m@main~${process.ppid}~0123456789`);
  const junk = path.join(root, ".tmp", "junk");
  for (const d of [deadDir, liveDir, oldDir, junk]) await mkdir(d);
  const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
  await utimes(oldDir, old, old);
  await LocalStore.open(root);
  t.deepEqual((await readdir(path.join(root, ".tmp"))).sort(), [path.basename(liveDir)]);
});

test("keys and names that could leave the root are refused", async (t) => {
  const root = await dirs.make();
  const store = await LocalStore.open(root);
  await put(store, "m@main", { "chunk-00000.bin": "x" });
  for (const key of ["../m@main", "/etc@main", "..", ".tmp", "m@main/../..", "a\0@main", ""]) {
    await t.throwsAsync(store.read(key, "model.idx"), { instanceOf: ConnectError }, key);
    await t.throwsAsync(store.beginWrite(key), { instanceOf: ConnectError }, key);
    t.throws(() => store.localPath(key), { instanceOf: ConnectError }, key);
  }
  for (const name of ["../m@main/model.idx", "/etc/passwd", "..", "a/b", "x\0"]) {
    await t.throwsAsync(store.read("m@main", name), { instanceOf: ConnectError }, name);
    await t.throwsAsync(store.stat("m@main", name), { instanceOf: ConnectError }, name);
  }
  const w = await store.beginWrite("n@main");
  await t.throwsAsync(w.create("../escape.bin"), { instanceOf: ConnectError });
  await t.throwsAsync(w.create("model.idx"), { instanceOf: RangeError });
  await w.abort();
  t.deepEqual((await readdir(root)).sort(), [".tmp", "m@main"]);
});

test("a root reached through a symlink works", async (t) => {
  const real = await dirs.make();
  const link = path.join(await dirs.make(), "store");
  await symlink(real, link);
  const store = await LocalStore.open(link);
  await put(store, "m@main", { "chunk-00000.bin": "x" });
  t.deepEqual(await store.list(), ["m@main"]);
  t.is((await stat(path.join(real, "m@main", "model.idx"))).size, 3);
  t.is((await readFile(path.join(real, "m@main", "chunk-00000.bin"))).toString(), "x");
});

test("fsync can be turned off", async (t) => {
  const store = await LocalStore.open(await dirs.make(), { fsync: false });
  await put(store, "m@main", { "chunk-00000.bin": "x" });
  t.deepEqual(await store.list(), ["m@main"]);
});

test("shared-memory data is written by the writer thread, in order, and its errors surface", async (t) => {
  const store = await LocalStore.open(await dirs.make());
  const w = await store.beginWrite("m@main");
  const out = await w.create("chunk-00000.bin");
  const shared = Buffer.from(new SharedArrayBuffer(3 << 20));
  for (let i = 0; i < shared.length; i++) shared[i] = (i * 7) & 0xff;
  // overlapped calls, each larger than one write() piece
  await Promise.all([out.write(shared.subarray(0, 2 << 20)), out.write(shared.subarray(2 << 20)), out.write(enc.encode("tail"))]);
  await out.close();
  await w.publish(enc.encode("idx"));
  const back = Buffer.from(await store.read("m@main", "chunk-00000.bin"));
  t.true(back.subarray(0, 3 << 20).equals(shared));
  t.is(back.subarray(3 << 20).toString(), "tail");

  const w2 = await store.beginWrite("n@main");
  const out2 = await w2.create("chunk-00000.bin");
  await out2.close();
  await t.throwsAsync(out2.write(shared.subarray(0, 4096)), { message: /is closed/ });
  await w2.abort();
  t.deepEqual(await store.list(), ["m@main"]);
});
