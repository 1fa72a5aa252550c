// The load path of DESIGN.md §4 in one call: index + folder → pool region → GPU memory,
// streaming (a chunk goes to the GPU while the next is read), verified chunk by chunk.
import path from "node:path";
import type { CheckpointIndex } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { nativeBinding, type NativeChunkPlan } from "./binding.js";
import { checkpointLayout } from "./checkpoint-layout.js";
import { DeviceMemory, requireCuda } from "./cuda.js";
import { type JobOptions, type LoadStats, checkJobOptions, runJob } from "./load-job.js";
import type { PinnedPool, PoolRegion } from "./pinned-pool.js";
import { DEFAULT_PIECE_BYTES, type ReadTuning, checkRegion, checkTuning } from "./reader.js";
import { checkOptionalInt, checkString, checkUint } from "./validate.js";

export interface LoadCheckpointOptions extends JobOptions, ReadTuning {
  pool: PinnedPool;
  index: CheckpointIndex;
  /** The checkpoint's folder (holds the chunk files). */
  folder: string;
  /** Region to fill (default: one allocated here, released again if the load fails). */
  region?: PoolRegion;
  /**
   * Where the weights go on the GPU: memory the engine worker exported (DeviceMemory.openIpc),
   * or a device index to allocate on here. Absent: the load stops in the pool (DRAM tier).
   */
  device?: DeviceMemory | number;
  /** Offset of the checkpoint inside the device memory (default 0). */
  deviceOffset?: number;
  /** CUDA streams for the copies (default 4). */
  streams?: number;
  /** Check every chunk's CRC-32C against the index (default true). */
  verify?: boolean;
}

export interface LoadedCheckpoint {
  region: PoolRegion;
  /** Chunk i lies at region.offset + chunkOffsets[i] in the pool, deviceOffset + chunkOffsets[i] on the GPU. */
  chunkOffsets: number[];
  totalBytes: number;
  /** The device memory filled (the one given, or allocated here: export it with exportIpcHandle()). */
  device?: DeviceMemory;
  deviceOffset: number;
  stats: LoadStats;
}

/** Reads a checkpoint's chunks into the pool and, when a device is named, on into GPU memory. */
export async function loadCheckpoint(options: LoadCheckpointOptions): Promise<LoadedCheckpoint> {
  if (typeof options !== "object" || options === null) throw new TypeError("options must be an object");
  checkJobOptions(options);
  checkTuning(options);
  const { pool, index } = options;
  const folder = checkString(options.folder, "folder");
  const layout = checkpointLayout(index, options.verify ?? true);
  const deviceOffset = options.deviceOffset === undefined ? 0 : checkUint(options.deviceOffset, "deviceOffset");
  const streams = checkOptionalInt(options.streams, "streams", 1, 64) ?? 4;
  if (options.region !== undefined) checkRegion(options.region, pool, layout.totalBytes);
  let device: DeviceMemory | undefined;
  let ownDevice = false;
  if (typeof options.device === "number") {
    checkOptionalInt(options.device, "device", 0, 1023);
    await requireCuda();
    device = await DeviceMemory.allocate(options.device, deviceOffset + layout.totalBytes);
    ownDevice = true;
  } else if (options.device !== undefined) {
    if (!(options.device instanceof DeviceMemory)) throw new TypeError("device must be a DeviceMemory or a device index");
    device = options.device;
    if (device.disposed) throw new RangeError("the device memory has been disposed");
    if (deviceOffset + layout.totalBytes > device.bytes) {
      throw new RangeError(`the checkpoint needs ${layout.totalBytes} bytes at device offset ${deviceOffset}; the device memory has ${device.bytes}`);
    }
  }
  let region: PoolRegion | undefined;
  try {
    region = options.region ?? pool.allocate(layout.totalBytes);
    const base = region.offset;
    const chunks: NativeChunkPlan[] = layout.slots.map((s) => ({
      path: path.join(folder, s.fileName),
      length: s.length,
      poolOffset: base + s.offset,
      deviceOffset: deviceOffset + s.offset,
      crc32c: s.crc32c,
    }));
    const stats = await runJob(
      () =>
        nativeBinding().startLoad(pool.nativePool(), device?.nativeDevice() ?? null, chunks, {
          threads: options.threads ?? 0,
          pieceBytes: options.pieceBytes ?? DEFAULT_PIECE_BYTES,
          io: options.io ?? "auto",
          streams,
        }),
      options,
    );
    return { region, chunkOffsets: layout.chunkOffsets, totalBytes: layout.totalBytes, device, deviceOffset, stats };
  } catch (err) {
    if (options.region === undefined) region?.release();
    if (ownDevice) device?.dispose();
    throw err;
  }
}
