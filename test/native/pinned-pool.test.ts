import test from "ava";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { PinnedPool } from "../../src/native/pinned-pool.js";
import { PoolExhaustedError } from "../../src/native/native-error.js";

const MiB = 1 << 20;

test("a pool is a pre-faulted memfd with a /proc path, pinned as well as this machine allows", async (t) => {
  const pool = await PinnedPool.create({ bytes: 32 * MiB + 1, prefaultThreads: 2 });
  t.teardown(() => pool.dispose());
  t.is(pool.bytes, 32 * MiB + 4096);
  t.is(pool.path, `/proc/${process.pid}/fd/${pool.fd}`);
  t.true(existsSync(pool.path));
  t.true(["cuda", "mlock", "none"].includes(pool.pinning));
  t.not(pool.pinning, "cuda", "no GPU here");
  t.regex(pool.pinningDetail, /CUDA is not available|not requested/);
  t.true(pool.prefaultSeconds >= 0);
  t.deepEqual(pool.stats(), { bytes: pool.bytes, used: 0, free: pool.bytes, largestFree: pool.bytes, regions: 0, releasing: 0, freeExtents: 1 });
});

test("pin: none is honoured; pin: cuda fails clearly without a GPU", async (t) => {
  const pool = await PinnedPool.create({ bytes: MiB, pin: "none" });
  t.is(pool.pinning, "none");
  pool.dispose();
  const err = await t.throwsAsync(PinnedPool.create({ bytes: MiB, pin: "cuda" }));
  t.regex(err!.message, /CUDA/);
});

test("arguments are checked in TypeScript", async (t) => {
  await t.throwsAsync(PinnedPool.create({ bytes: 0 }), { instanceOf: RangeError });
  await t.throwsAsync(PinnedPool.create({ bytes: "1" as unknown as number }), { instanceOf: TypeError });
  await t.throwsAsync(PinnedPool.create({ bytes: 1.5 }), { instanceOf: RangeError });
  await t.throwsAsync(PinnedPool.create({ bytes: MiB, pin: "always" as "auto" }), { instanceOf: RangeError });
  const pool = await PinnedPool.create({ bytes: MiB });
  t.teardown(() => pool.dispose());
  t.throws(() => pool.allocate(-1), { instanceOf: RangeError });
  t.throws(() => pool.allocate(0), { instanceOf: RangeError });
});

test("first fit over 4096-aligned extents, coalesced on release; exhaustion is a clear error", async (t) => {
  const pool = await PinnedPool.create({ bytes: 64 * 4096 });
  t.teardown(() => pool.dispose());
  const a = pool.allocate(1);
  const b = pool.allocate(4097);
  const c = pool.allocate(4096 * 10);
  t.deepEqual([a.offset, a.length, b.offset, b.length, c.offset, c.length], [0, 4096, 4096, 8192, 12288, 40960]);
  b.release();
  t.is(pool.allocate(4096).offset, 4096, "first fit reuses the hole");
  t.throws(() => pool.allocate(64 * 4096), { instanceOf: PoolExhaustedError });
  t.is(pool.tryAllocate(64 * 4096), undefined);
  for (const r of pool.regions()) r.release();
  t.deepEqual(pool.stats().freeExtents, 1);
  t.is(pool.allocate(64 * 4096).length, 64 * 4096, "everything coalesced back into one extent");
});

test("1,000 random allocate/release cycles end with the pool whole", async (t) => {
  const pool = await PinnedPool.create({ bytes: 64 * MiB });
  t.teardown(() => pool.dispose());
  const live = [];
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let i = 0; i < 1000; i++) {
    if (live.length > 0 && rand(3) === 0) live.splice(rand(live.length), 1)[0].release();
    const r = pool.tryAllocate(1 + rand(4 * MiB));
    if (r !== undefined) live.push(r);
    else if (live.length > 0) live.splice(rand(live.length), 1)[0].release();
    const s = pool.stats();
    t.is(s.used + s.free, s.bytes);
  }
  t.true(pool.stats().regions > 0);
  for (const r of live) r.release();
  t.deepEqual(pool.stats(), { bytes: 64 * MiB, used: 0, free: 64 * MiB, largestFree: 64 * MiB, regions: 0, releasing: 0, freeExtents: 1 });
});

test("regions reach JS as external ArrayBuffers over the pool's pages (no copy), emptied on release", async (t) => {
  const pool = await PinnedPool.create({ bytes: 4 * MiB });
  t.teardown(() => pool.dispose());
  const r = pool.allocate(MiB);
  const view1 = r.bytes();
  const view2 = new Uint8Array(pool.viewOf(r.offset, r.length)); // a second external view of the same pages
  view1.fill(0x5a, 100, 200);
  t.is(view2[150], 0x5a, "both views see the same memory");
  t.is(r.buffer, r.buffer, "the buffer is made once");
  r.release();
  t.is(view1.byteLength, 0, "views are detached when the region is returned");
  t.is(view2.byteLength, 0);
  t.throws(() => r.bytes(), { message: /released/ });
  const again = pool.allocate(MiB);
  t.is(again.offset, r.offset);
  pool.dispose();
  t.true(again.released);
  t.throws(() => pool.allocate(1), { message: /disposed/ });
  pool.dispose(); // twice is fine
});

test("a second process maps a region by path (/proc/<pid>/fd/<n>) and sees the same bytes", async (t) => {
  const pool = await PinnedPool.create({ bytes: 8 * MiB });
  t.teardown(() => pool.dispose());
  pool.allocate(12288); // so the region does not start at 0
  const r = pool.allocate(3 * MiB + 100);
  const data = randomBytes(3 * MiB + 100);
  r.bytes().set(data);
  const host = r.hostMemory(4096, 2 * MiB);
  t.is(host.offset, r.offset + 4096);
  const py = `
import hashlib, mmap, os, sys
path, offset, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
m = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=offset)
print(hashlib.sha256(m[:length]).hexdigest())
`;
  const out = execFileSync("/usr/bin/python3", ["-c", py, host.path, String(host.offset), String(host.length)], { encoding: "utf8" });
  const expected = createHash("sha256").update(data.subarray(4096, 4096 + 2 * MiB)).digest("hex");
  t.is(out.trim(), expected);
  t.throws(() => r.hostMemory(100), { instanceOf: RangeError });
});
