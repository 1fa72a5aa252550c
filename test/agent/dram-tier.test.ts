// The DRAM tier over a real (small) pinned pool: least recently used models go first, a model in
// use or still loading never goes, and reclaim is asked when only models in use are left.
import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { PinnedPool } from "../../src/native/index.js";
import { DramTier } from "../../src/agent/dram-tier.js";

const MiB = 1 << 20;

async function tier(reclaim?: (inUse: (key: string) => boolean) => Promise<boolean>) {
  const pool = await PinnedPool.create({ bytes: 4 * MiB, pin: "none", prefaultThreads: 1 });
  const evicted: string[] = [];
  const dram = new DramTier(pool, { reclaim, onEvict: (key) => evicted.push(key) });
  const put = async (key: string, bytes = MiB + 4096) => dram.put(key, await dram.allocate(bytes), [0], bytes);
  return { pool, dram, evicted, put };
}

test("the least recently used model is evicted to make room", async (t) => {
  const { pool, dram, evicted, put } = await tier();
  t.teardown(() => pool.dispose());
  await put("a");
  await put("b");
  await put("c");
  dram.touch("a");
  await put("d"); // 4 × (1 MiB + 4 KiB) does not fit 4 MiB: b is the oldest
  t.deepEqual(evicted, ["b"]);
  t.deepEqual(dram.keys().sort(), ["a", "c", "d"]);
  const s = dram.stats();
  t.is(s.totalBytes, 4 * MiB);
  t.is(s.loadingBytes, 0);
  t.is(s.usedBytes, 3 * (MiB + 4096));
});

test("models in use and regions still loading are never evicted", async (t) => {
  const { pool, dram, evicted, put } = await tier();
  t.teardown(() => pool.dispose());
  await put("a");
  const release = dram.use("a");
  const loading = await dram.allocate(MiB + 4096); // not put yet
  await put("b");
  const err = await t.throwsAsync(dram.allocate(2 * MiB));
  t.is(ConnectError.from(err).code, Code.ResourceExhausted);
  t.deepEqual(evicted, ["b"]); // b was evictable; a (in use) and the loading region were not
  t.throws(() => dram.evict("a"), { message: /in use/ });
  release();
  t.true(dram.evict("a"));
  dram.abandon(loading);
  t.is(dram.stats().usedBytes, 0);
});

test("when only models in use are left, reclaim frees one and the allocation succeeds", async (t) => {
  let releaseA: (() => void) | undefined;
  let asked = 0;
  const { pool, dram, put } = await tier(async () => {
    asked++;
    releaseA?.();
    releaseA = undefined;
    return true;
  });
  t.teardown(() => pool.dispose());
  await put("a", 3 * MiB);
  releaseA = dram.use("a");
  const region = await dram.allocate(2 * MiB);
  t.is(asked, 1);
  t.true(region.length >= 2 * MiB);
  t.is(dram.get("a"), undefined);
});

test("a model larger than the pool is refused at once, naming both sizes, and nothing is evicted", async (t) => {
  const { pool, dram, evicted, put } = await tier();
  t.teardown(() => pool.dispose());
  await put("a");
  const err = ConnectError.from(await t.throwsAsync(dram.allocate(8 * MiB)));
  t.is(err.code, Code.FailedPrecondition);
  t.regex(err.rawMessage, new RegExp(`${8 * MiB} bytes .* holds ${4 * MiB} bytes`));
  t.deepEqual(evicted, []);
  t.deepEqual(dram.keys(), ["a"]);
});

test("reclaim is told which models hold their region", async (t) => {
  const seen: boolean[] = [];
  let releaseA: (() => void) | undefined;
  const { pool, dram, put } = await tier(async (inUse) => {
    seen.push(inUse("a"), inUse("b"));
    releaseA?.();
    releaseA = undefined;
    return true;
  });
  t.teardown(() => pool.dispose());
  await put("a", 3 * MiB);
  releaseA = dram.use("a");
  await dram.allocate(2 * MiB);
  t.deepEqual(seen, [true, false]);
});

test("a copy replaced while in use gives its region back when its last use ends", async (t) => {
  const { pool, dram, put } = await tier();
  t.teardown(() => pool.dispose());
  await put("a");
  const release = dram.use("a");
  await put("a"); // loaded again while the first copy is in use: both regions are held
  t.is(pool.stats().used, 2 * (MiB + 4096));
  release();
  t.is(pool.stats().used, MiB + 4096, "the replaced copy's region is free again");
  t.is(dram.stats().usedBytes, MiB + 4096);
  t.true(dram.evict("a"));
  t.is(pool.stats().used, 0);
});
