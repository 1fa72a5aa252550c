// GPU check of the native loader (run on the GPU machine; see test/gpu/run-native.sh):
// a separate Python process allocates GPU memory and exports a CUDA IPC handle, as the engine
// worker does; the native module opens it and loads a checkpoint into it (disk → pinned pool →
// GPU, streaming), then again from the DRAM tier; the worker checks every chunk on the GPU
// against a checksum of the file computed on the host, and that nothing landed out of place.
//
//   node native-ipc-load.mjs [--dir DIR] [--python python3]
import { spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { CheckpointIndexSchema, ChecksumAlgorithm } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { crc32c } from "../../src/native/checksum.js";
import { copyToDevice } from "../../src/native/copier.js";
import { DeviceMemory, cudaInfo, deviceMemory } from "../../src/native/cuda.js";
import { loadCheckpoint } from "../../src/native/load-checkpoint.js";
import { PinnedPool } from "../../src/native/pinned-pool.js";

const argv = process.argv.slice(2);
const opt = (name: string, fallback: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : fallback;
};
const dir = opt("dir", "/tmp/thaw-ipc-test");
const python = opt("python", "python3");
const workerScript = opt("worker", path.resolve("test/gpu/native_ipc_worker.py"));
const MiB = 1 << 20;
let failures = 0;
function check(ok: boolean, what: string): void {
  console.log(`${ok ? "ok" : "FAIL"} - ${what}`);
  if (!ok) failures++;
}

class Worker {
  private readonly proc = spawn(python, [workerScript], { stdio: ["pipe", "pipe", "inherit"] });
  private readonly lines = createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
  async next(): Promise<Record<string, unknown>> {
    const { value, done } = await this.lines.next();
    if (done) throw new Error("the worker exited");
    return JSON.parse(value);
  }
  async call(msg: object): Promise<Record<string, unknown>> {
    this.proc.stdin.write(JSON.stringify(msg) + "\n");
    return this.next();
  }
  close(): void {
    this.proc.stdin.write(JSON.stringify({ op: "exit" }) + "\n");
  }
}

async function main(): Promise<void> {
  const info = await cudaInfo();
  console.log(`CUDA: available=${info.available} ${info.reason} ${info.library} driver ${info.driverVersion} runtime ${info.runtimeVersion}`);
  console.log(`devices: ${JSON.stringify(info.devices)}`);
  check(info.available && info.devices.length > 0, "CUDA available with at least one device");
  console.log(`device 0 memory: ${JSON.stringify(await deviceMemory(0))}`);

  // A checkpoint with chunks of awkward sizes (all multiples of 4096, as the format says).
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const lengths = [256 * MiB, 4096, 100 * MiB + 3 * 4096, 1024 * MiB, 8192, 37 * MiB];
  const chunks = [];
  for (const [i, length] of lengths.entries()) {
    const data = Buffer.allocUnsafe(length);
    for (let at = 0; at < length; at += 64 * MiB) randomFillSync(data, at, Math.min(64 * MiB, length - at));
    const fileName = `chunk-${String(i).padStart(5, "0")}.bin`;
    writeFileSync(path.join(dir, fileName), data);
    chunks.push({ fileName, byteLength: BigInt(length), checksum: { algorithm: ChecksumAlgorithm.CRC32C, value: BigInt(await crc32c(data)) } });
  }
  const total = lengths.reduce((a, b) => a + b, 0);
  const index = create(CheckpointIndexSchema, {
    formatVersion: 1,
    modelKey: "gpu-test@main",
    alignment: 4096n,
    chunkSize: BigInt(256 * MiB),
    chunks,
    totalBytes: BigInt(total),
  });

  const worker = new Worker();
  const ready = await worker.next();
  console.log(`worker: ${JSON.stringify(ready)}`);
  const deviceOffset = 1 * MiB;
  const alloc = await worker.call({ op: "alloc", bytes: total + 2 * MiB });
  const device = await DeviceMemory.openIpc(Buffer.from(alloc.handle as string, "hex"), { device: 0, bytes: alloc.bytes as number });
  console.log(`opened IPC memory: ${device.bytes} bytes at 0x${device.pointer.toString(16)} (the exporter's pointer: 0x${(alloc.ptr as number).toString(16)})`);

  const pool = await PinnedPool.create({ bytes: 2 * total });
  console.log(`pool: ${pool.bytes} bytes, pinning ${pool.pinning} (${pool.pinningDetail}), pre-fault ${pool.prefaultSeconds.toFixed(2)} s, register ${pool.pinSeconds.toFixed(2)} s, huge pages ${pool.hugePages}`);
  check(pool.pinning === "cuda", "the pool is registered with CUDA");

  const verify = async (label: string, chunkOffsets: number[]): Promise<void> => {
    const r = await worker.call({
      op: "verify",
      chunks: lengths.map((length, i) => ({ path: path.join(dir, `chunk-${String(i).padStart(5, "0")}.bin`), offset: deviceOffset + chunkOffsets[i], length })),
    });
    const results = r.chunks as { match: boolean; gpu: string; host: string }[];
    results.forEach((c, i) => check(c.match, `${label}: chunk ${i} (${lengths[i]} bytes): GPU checksum ${c.gpu} = host checksum ${c.host}`));
    check(r.poison_ok === true, `${label}: bytes outside the checkpoint untouched`);
  };

  for (const io of ["direct", "buffered"] as const) {
    await worker.call({ op: "poison" });
    const loaded = await loadCheckpoint({ pool, index, folder: dir, device, deviceOffset, io });
    const s = loaded.stats;
    console.log(
      `disk → GPU (${io}): ${(total / 1e9).toFixed(2)} GB in ${s.seconds.toFixed(3)} s; read ${s.read?.gbPerSecond.toFixed(2)} GB/s, copy ${s.copy?.gbPerSecond.toFixed(2)} GB/s on ${s.streams} streams; io ${[...new Set(s.chunks.map((c) => c.io))].join("/")}`,
    );
    check(s.chunks.every((c) => c.verified) && s.copy?.bytes === total, `${io}: every chunk verified on the host and copied`);
    await verify(`${io} load`, loaded.chunkOffsets);
    // DRAM tier: the region is in the pool; poison the GPU and copy again.
    await worker.call({ op: "poison" });
    const st = await copyToDevice(loaded.region, device, { deviceOffset, length: loaded.totalBytes });
    console.log(`pool → GPU: ${st.copy?.bytes} bytes in ${st.copy?.seconds.toFixed(4)} s = ${st.copy?.gbPerSecond.toFixed(2)} GB/s (call ${st.seconds.toFixed(4)} s)`);
    await verify(`${io} then pool → GPU`, loaded.chunkOffsets);
    const head = new Uint8Array(4096);
    await device.copyToHost(deviceOffset, head);
    check(Buffer.from(head).equals(Buffer.from(loaded.region.bytes(0, 4096))), "copyToHost reads back what was loaded");
    loaded.region.release();
  }

  // Cancellation with real copies in flight.
  const controller = new AbortController();
  let aborted = false;
  let t0 = 0;
  try {
    await loadCheckpoint({
      pool, index, folder: dir, device, deviceOffset, io: "direct", signal: controller.signal, progressIntervalMs: 1,
      onProgress: (p) => {
        if (t0 === 0 && p.readBytes > 0) {
          t0 = performance.now();
          controller.abort();
        }
      },
    });
  } catch (err) {
    aborted = (err as Error).name === "AbortError";
  }
  check(aborted, `an aborted load rejects with AbortError ${(performance.now() - t0).toFixed(0)} ms after the abort`);
  const stats = pool.stats();
  check(stats.used === 0 && stats.freeExtents === 1, "the pool is whole after the abort");

  device.dispose();
  worker.close();
  pool.dispose();
  rmSync(dir, { recursive: true, force: true });
  console.log(failures === 0 ? "PASS native-ipc-load" : `FAIL native-ipc-load: ${failures} checks failed`);
  process.exitCode = failures === 0 ? 0 : 1;
}

await main();
