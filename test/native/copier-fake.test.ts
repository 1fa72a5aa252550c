// The GPU half of the loader (copier, IPC, disk → pool → GPU pipeline) run against the fake
// libcudart of fixtures/fake-cudart.c, whose "device memory" is host memory: checks the
// plumbing, offsets and cancellation here; test/gpu/native-ipc-load.ts checks a real GPU.
import test from "ava";
import { createHash } from "node:crypto";
import { copyToDevice } from "../../src/native/copier.js";
import { DeviceMemory, cudaInfo, deviceMemory } from "../../src/native/cuda.js";
import { loadCheckpoint } from "../../src/native/load-checkpoint.js";
import { PinnedPool } from "../../src/native/pinned-pool.js";
import { fakeCudart, runAddonChild, tempDir, writeCheckpoint } from "./helpers.js";

const MiB = 1 << 20;
const dir = tempDir();
const lib = fakeCudart(dir.dir);
if (lib !== undefined) process.env.THAW_CUDART = lib; // before the first probe of this process
else process.stderr.write("copier-fake.test.ts: skipped: no C compiler (cc) to build the fake libcudart\n");
/** These tests need the fake libcudart: without a C compiler they are skipped, and counted so. */
const withFake = lib === undefined ? test.serial.skip : test.serial;
let pool: PinnedPool;

test.before(async () => {
  if (lib !== undefined) pool = await PinnedPool.create({ bytes: 128 * MiB });
});
test.after.always(() => {
  pool?.dispose();
  dir.cleanup();
});

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

withFake("the fake GPU is found and the pool registered with it", async (t) => {
  const info = await cudaInfo();
  t.true(info.available, info.reason);
  t.is(info.runtimeVersion, 13000);
  t.deepEqual(info.devices, [{ index: 0, name: "Fake CUDA Device", totalBytes: 16 * 2 ** 30, computeCapability: "9.0", pciBusId: 0 }]);
  t.is(pool.pinning, "cuda");
  t.deepEqual(await deviceMemory(0), { free: 8 * 2 ** 30, total: 16 * 2 ** 30 });
});

withFake("disk → pool → device: every byte lands at its chunk offset, verified, with per-tier figures", async (t) => {
  const ck = tempDir();
  t.teardown(ck.cleanup);
  const { index, data } = await writeCheckpoint(ck.dir, [3 * MiB, 4096, 5 * MiB + 8192]);
  const device = await DeviceMemory.allocate(0, 16 * MiB);
  t.teardown(() => device.dispose());
  const loaded = await loadCheckpoint({ pool, index, folder: ck.dir, device, deviceOffset: 8192, pieceBytes: MiB, streams: 3 });
  t.is(loaded.device, device);
  t.is(loaded.stats.copy?.bytes, loaded.stats.read?.bytes);
  t.is(loaded.stats.streams, 3);
  t.true(loaded.stats.chunks.every((c) => c.verified));
  const back = new Uint8Array(16 * MiB);
  await device.copyToHost(0, back);
  t.true(back.subarray(0, 8192).every((b) => b === 0xa5), "nothing written before deviceOffset");
  for (const [i, d] of data.entries()) {
    const at = 8192 + loaded.chunkOffsets[i];
    t.true(Buffer.from(back.subarray(at, at + d.length)).equals(d), `chunk ${i}`);
  }
  t.true(back.subarray(8192 + loaded.totalBytes).every((b) => b === 0xa5), "nothing written past the end");
  // The DRAM tier: the same region again, pool → device only.
  const again = await DeviceMemory.allocate(0, loaded.totalBytes);
  t.teardown(() => again.dispose());
  const stats = await copyToDevice(loaded.region, again, { length: loaded.totalBytes, pieceBytes: 4096 * 100 });
  t.is(stats.read, undefined);
  t.is(stats.copy?.bytes, loaded.totalBytes);
  t.deepEqual(stats.chunks.map((c) => c.io), ["memory"]);
  const back2 = new Uint8Array(loaded.totalBytes);
  await again.copyToHost(0, back2);
  t.true(Buffer.from(back2).equals(Buffer.from(loaded.region.bytes(0, loaded.totalBytes))));
  loaded.region.release();
  await t.throwsAsync(loadCheckpoint({ pool, index, folder: ck.dir, device: again, deviceOffset: 4096 }), { instanceOf: RangeError });
  t.is(pool.stats().used, 0);
});

withFake("memory allocated here is exported by IPC handle and opened by another process", async (t) => {
  const ck = tempDir();
  t.teardown(ck.cleanup);
  const { index, data } = await writeCheckpoint(ck.dir, [2 * MiB, 6 * MiB]);
  const loaded = await loadCheckpoint({ pool, index, folder: ck.dir, device: 0 });
  t.teardown(() => loaded.device?.dispose());
  t.true(loaded.device!.owned);
  const handle = loaded.device!.exportIpcHandle();
  t.is(handle.byteLength, 64);
  const hex = Buffer.from(handle).toString("hex");
  const out = runAddonChild(
    `const d = await addon.openIpc(Buffer.from(${JSON.stringify(hex)}, "hex"), 0, ${loaded.totalBytes});
     const b = new Uint8Array(${loaded.totalBytes}); await d.copyToHost(0, b); d.dispose();
     console.log(require("node:crypto").createHash("sha256").update(b).digest("hex"));`,
    { THAW_CUDART: lib! },
  );
  const expected = createHash("sha256");
  for (const [i, d] of data.entries()) {
    expected.update(d);
    const next = loaded.chunkOffsets[i + 1] ?? loaded.totalBytes;
    expected.update(new Uint8Array(next - loaded.chunkOffsets[i] - d.length));
  }
  t.is(out.trim(), expected.digest("hex"));
  loaded.region.release();
});

withFake("cancelling a copy stops promptly, waits for copies in flight and leaks nothing", async (t) => {
  const region = pool.allocate(8 * MiB);
  const device = await DeviceMemory.allocate(0, 8 * MiB);
  t.teardown(() => device.dispose());
  process.env.THAW_FAKE_CUDA_COPY_US = "2000"; // 2 ms a copy, 2048 copies: 4 s uncancelled
  t.teardown(() => delete process.env.THAW_FAKE_CUDA_COPY_US);
  const controller = new AbortController();
  const started = performance.now();
  setTimeout(() => controller.abort(), 50);
  const err = (await rejection(copyToDevice(region, device, { pieceBytes: 4096, signal: controller.signal }))) as Error;
  t.is(err.name, "AbortError");
  t.true(performance.now() - started < 1000, `took ${performance.now() - started} ms`);
  region.release();
  t.is(pool.stats().used, 0);
});

withFake("disposed and foreign objects are refused", async (t) => {
  const device = await DeviceMemory.allocate(0, MiB);
  device.dispose();
  t.true(device.disposed);
  const region = pool.allocate(MiB);
  t.teardown(() => region.release());
  await t.throwsAsync(copyToDevice(region, device), { instanceOf: RangeError });
  t.throws(() => device.exportIpcHandle(), { message: /disposed/ });
  const other = await DeviceMemory.allocate(0, MiB);
  t.teardown(() => other.dispose());
  await t.throwsAsync(copyToDevice(region, other, { length: 2 * MiB }), { instanceOf: RangeError });
});
