import test from "ava";
import { randomBytes } from "node:crypto";
import { existsSync, openSync, readFileSync, writeSync, closeSync, writeFileSync } from "node:fs";
import path from "node:path";
import { crc32c } from "../../src/native/checksum.js";
import { loadCheckpoint } from "../../src/native/load-checkpoint.js";
import { NativeError } from "../../src/native/native-error.js";
import { PinnedPool } from "../../src/native/pinned-pool.js";
import { readFiles } from "../../src/native/reader.js";
import { randomFile, tempDir, writeCheckpoint } from "./helpers.js";

const MiB = 1 << 20;
const disk = tempDir(); // ext4 or similar: takes O_DIRECT
const shm = existsSync("/dev/shm") ? tempDir("/dev/shm") : undefined; // tmpfs
let pool: PinnedPool;

test.before(async () => {
  pool = await PinnedPool.create({ bytes: 256 * MiB });
});
test.after.always(() => {
  pool?.dispose();
  disk.cleanup();
  shm?.cleanup();
});

/** What a promise rejects with (DOMException included, which ava's throwsAsync refuses). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

function whole(t: { deepEqual: (a: unknown, b: unknown, m?: string) => void }): void {
  const s = pool.stats();
  t.deepEqual([s.used, s.regions, s.releasing, s.freeExtents], [0, 0, 0, 1], "the pool is whole");
}

let seed = 7;
function rand(n: number): number {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed % n;
}

for (const [fs, where] of [
  ["disk", disk],
  ["tmpfs", shm],
  ["refused", disk], // O_DIRECT refused at open (THAW_NO_DIRECT_IO=1 simulates the EINVAL)
] as const) {
  // tmpfs needs /dev/shm: without it that case is skipped, and counted so.
  (where === undefined ? test.serial.skip : test.serial)(`${fs}: every byte read equals the file, for random sizes, offsets, thread counts and piece sizes`, async (t) => {
    if (where === undefined) throw new Error("unreachable: skipped without /dev/shm");
    if (fs === "refused") {
      process.env.THAW_NO_DIRECT_IO = "1";
      t.teardown(() => delete process.env.THAW_NO_DIRECT_IO);
    }
    const sizes = [0, 1, 4095, 4096, 4097, 65_536 + 3, 3 * MiB + 12_345, 5 * MiB, 1 + rand(8 * MiB), 1 + rand(2 * MiB)];
    const data = sizes.map((n, i) => randomFile(where.dir, `f${i}.bin`, n));
    for (const io of ["direct", "buffered", "auto"] as const) {
      const threads = 1 + rand(8);
      const pieceBytes = 4096 * (1 + rand(512));
      const files = data.map((d, i) => {
        const offset = i % 3 === 1 && d.length > 0 ? rand(d.length) : 0; // some ranged reads, unaligned starts
        const length = i % 4 === 2 ? rand(d.length - offset + 1) : undefined;
        return { path: path.join(where.dir, `f${i}.bin`), offset, length };
      });
      const r = await readFiles(pool, files, { io, threads, pieceBytes, checksum: true });
      for (const [i, p] of r.placements.entries()) {
        t.is(p.regionOffset % 4096, 0);
        const expected = data[i].subarray(p.fileOffset, p.fileOffset + p.length);
        t.true(Buffer.from(r.region.bytes(p.regionOffset, p.length)).equals(expected), `${io} file ${i} (${p.length} bytes at ${p.fileOffset}, ${threads} threads, ${pieceBytes}-byte pieces)`);
        t.is(r.stats.chunks[i].crc32c, await crc32c(expected));
        const pad = (4096 - (p.length % 4096)) % 4096;
        t.true(r.region.bytes(p.regionOffset + p.length, pad).every((b) => b === 0), "padding is zero");
      }
      const ios = new Set(r.stats.chunks.map((c) => c.io));
      // tmpfs refuses O_DIRECT before Linux 6.6 and takes it since; either way every byte arrives.
      if (fs === "tmpfs") t.true(ios.size === 1 && (ios.has("buffered") || ios.has("direct")));
      if (fs === "refused") t.deepEqual([...ios], ["buffered"], "refused O_DIRECT: buffered fallback");
      if (fs === "disk" && io === "direct") t.true(ios.has("direct"), "O_DIRECT used where the file system takes it");
      if (io === "buffered") t.deepEqual([...ios], ["buffered"]);
      t.is(r.stats.read?.bytes, r.placements.reduce((a, p) => a + p.length, 0));
      r.region.release();
    }
    whole(t);
  });
}

test.serial("a flipped byte in a chunk is caught by the checksum, with the chunk and file named", async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const { index } = await writeCheckpoint(dir, [MiB, 3 * MiB, 4096]);
  const ok = await loadCheckpoint({ pool, index, folder: dir, io: "direct" });
  t.deepEqual(ok.chunkOffsets, [0, MiB, 4 * MiB]);
  t.true(ok.stats.chunks.every((c) => c.verified));
  ok.region.release();

  const victim = path.join(dir, "chunk-00001.bin");
  const fd = openSync(victim, "r+");
  const at = 2 * MiB + 777;
  const old = readFileSync(victim)[at];
  writeSync(fd, Buffer.from([old ^ 0x10]), 0, 1, at);
  closeSync(fd);
  for (const io of ["direct", "buffered"] as const) {
    const err = await t.throwsAsync(loadCheckpoint({ pool, index, folder: dir, io, pieceBytes: 65_536 }), { instanceOf: NativeError });
    t.is(err!.kind, "checksum");
    t.is(err!.chunk, 1);
    t.is(err!.path, victim);
    t.regex(err!.message, /chunk 1 .*chunk-00001\.bin.*CRC-32C is [0-9a-f]{8}, the index says [0-9a-f]{8}/);
  }
  whole(t);
});

test.serial("errors carry the file, the offset and the errno text", async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const missing = path.join(dir, "nope.bin");
  const e1 = await t.throwsAsync(readFiles(pool, [{ path: missing, length: 4096 }]), { instanceOf: NativeError });
  t.is(e1!.kind, "io");
  t.is(e1!.code, "ENOENT");
  t.is(e1!.path, missing);
  t.regex(e1!.message, /open .*nope\.bin: No such file or directory \(ENOENT\)/);

  writeFileSync(path.join(dir, "short.bin"), randomBytes(10_000));
  const e2 = await t.throwsAsync(readFiles(pool, [{ path: path.join(dir, "short.bin"), length: 20_000 }]), { instanceOf: NativeError });
  t.is(e2!.kind, "io");
  t.regex(e2!.message, /holds 10000 bytes, fewer than the 20000 expected/);

  const e3 = await t.throwsAsync(readFiles(pool, [{ path: dir, length: 4096 }]), { instanceOf: NativeError }); // a directory
  t.is(e3!.code, "EISDIR");
  t.regex(e3!.message, /pread .* at offset 0: Is a directory \(EISDIR\)/);
  whole(t);
});

test.serial("cancellation stops promptly and leaks nothing", async (t) => {
  const { dir, cleanup } = tempDir("/dev/shm");
  t.teardown(cleanup);
  const { index } = await writeCheckpoint(dir, [64 * MiB, 64 * MiB, 64 * MiB]);
  // Already aborted: nothing starts.
  t.is(((await rejection(loadCheckpoint({ pool, index, folder: dir, signal: AbortSignal.abort() }))) as Error).name, "AbortError");
  // Aborted mid-way: small pieces, one thread, so the load is still running when the abort lands.
  const controller = new AbortController();
  let progressCalls = 0;
  let started = 0;
  const load = loadCheckpoint({
    pool,
    index,
    folder: dir,
    threads: 1,
    pieceBytes: 4096,
    signal: controller.signal,
    progressIntervalMs: 1,
    onProgress: (p) => {
      progressCalls++;
      if (p.readBytes > 0 && started === 0) {
        started = performance.now();
        controller.abort();
      }
    },
  });
  const err = (await rejection(load)) as Error;
  t.is(err.name, "AbortError");
  t.true(progressCalls > 0);
  t.true(performance.now() - started < 500, "stopped within half a second of the abort");
  whole(t);
  // A reason given to abort() is what the promise rejects with.
  const reason = new Error("shutting down");
  const c2 = new AbortController();
  const p2 = loadCheckpoint({ pool, index, folder: dir, threads: 1, pieceBytes: 4096, signal: c2.signal });
  setImmediate(() => c2.abort(reason));
  t.is(await rejection(p2), reason);
  whole(t);
});

test.serial("a load reports progress, per-chunk I/O mode and the read tier", async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  const { index, data } = await writeCheckpoint(dir, [2 * MiB, 4096, 5 * MiB]);
  const seen: number[] = [];
  const r = await loadCheckpoint({ pool, index, folder: dir, onProgress: (p) => seen.push(p.readBytes), progressIntervalMs: 1 });
  t.is(seen.at(-1), 7 * MiB + 4096);
  t.is(r.stats.read?.bytes, 7 * MiB + 4096);
  t.is(r.stats.copy, undefined, "no GPU copy asked for");
  t.is(r.device, undefined);
  for (const [i, d] of data.entries()) t.true(Buffer.from(r.region.bytes(r.chunkOffsets[i], d.length)).equals(d));
  // Reading into a region the caller owns: it stays the caller's after a failure too.
  const region = pool.allocate(r.totalBytes);
  r.region.release();
  const again = await loadCheckpoint({ pool, index, folder: dir, region, io: "buffered" });
  t.is(again.region, region);
  t.true(again.stats.chunks.every((c) => c.io === "buffered"));
  await t.throwsAsync(loadCheckpoint({ pool, index, folder: path.join(dir, "missing"), region }), { instanceOf: NativeError });
  t.false(region.released);
  region.release();
  await t.throwsAsync(loadCheckpoint({ pool, index, folder: dir, device: 0 }), { name: "CudaUnavailableError" });
  whole(t);
});

test.serial("bad arguments are TypeError / RangeError before any native call", async (t) => {
  await t.throwsAsync(readFiles(pool, "x" as never), { instanceOf: TypeError });
  await t.throwsAsync(readFiles(pool, [{ path: 3 as never }]), { instanceOf: TypeError });
  await t.throwsAsync(readFiles(pool, [{ path: "/etc/hostname", length: -1 }]), { instanceOf: RangeError });
  await t.throwsAsync(readFiles(pool, [{ path: "/etc/hostname" }], { pieceBytes: 1000 }), { instanceOf: RangeError });
  await t.throwsAsync(readFiles(pool, [{ path: "/etc/hostname" }], { io: "mmap" as never }), { instanceOf: RangeError });
  await t.throwsAsync(readFiles(pool, [{ path: "/etc/hostname", crc32c: 2 ** 32 }]), { instanceOf: RangeError });
  await t.throwsAsync(readFiles(pool, [{ path: "/etc/hostname" }], { signal: {} as never }), { instanceOf: TypeError });
  const { index } = await writeCheckpoint(disk.dir, [4096]);
  index.chunks[0].fileName = "../etc/passwd";
  await t.throwsAsync(loadCheckpoint({ pool, index, folder: disk.dir }), { instanceOf: RangeError });
  whole(t);
});

test.serial("a region released while a load reads into it is not handed out again until the load ends", async (t) => {
  const { dir, cleanup } = tempDir();
  t.teardown(cleanup);
  randomFile(dir, "big.bin", 32 * MiB);
  const region = pool.allocate(32 * MiB);
  let replacement: ReturnType<PinnedPool["allocate"]> | undefined;
  let during: ReturnType<PinnedPool["stats"]> | undefined;
  // One thread, 4096-byte pieces: the read is still running when the first progress report comes.
  const read = readFiles(pool, [{ path: path.join(dir, "big.bin") }], {
    region,
    threads: 1,
    pieceBytes: 4096,
    io: "buffered",
    progressIntervalMs: 1,
    onProgress: (p) => {
      if (replacement !== undefined || p.readBytes === 0 || p.readBytes === p.totalBytes) return;
      region.release(); // a careless caller: the load is in flight
      replacement = pool.allocate(32 * MiB);
      replacement.bytes().fill(0xab);
      during = pool.stats();
    },
  });
  await read;
  t.truthy(replacement, "the release happened while the read was running");
  t.not(replacement!.offset, region.offset, "the busy region was not handed out again");
  t.deepEqual([during!.regions, during!.releasing, during!.used], [1, 1, 64 * MiB]);
  t.true(replacement!.bytes().every((b) => b === 0xab), "nothing the load read landed in the new region");
  const after = pool.stats();
  t.deepEqual([after.regions, after.releasing, after.used], [1, 0, 32 * MiB], "the released region came back when the load ended");
  replacement!.release();
  whole(t);
});
