// Pool → GPU: copies a region (a model already in the DRAM tier) into device memory with
// cudaMemcpyAsync on several streams.
import { nativeBinding } from "./binding.js";
import type { DeviceMemory } from "./cuda.js";
import { requireCuda } from "./cuda.js";
import { type JobOptions, type LoadStats, checkJobOptions, runJob } from "./load-job.js";
import type { PoolRegion } from "./pinned-pool.js";
import { checkOptionalInt, checkUint } from "./validate.js";

export interface CopyToDeviceOptions extends JobOptions {
  /** Start inside the region (default 0). */
  regionOffset?: number;
  /** Start inside the device memory (default 0). */
  deviceOffset?: number;
  /** Bytes to copy (default: the rest of the region). */
  length?: number;
  /** CUDA streams (default 4). */
  streams?: number;
  /** Bytes per cudaMemcpyAsync (default 64 MiB). */
  pieceBytes?: number;
}

export const DEFAULT_COPY_PIECE_BYTES = 64 << 20;

/** Copies region bytes to device memory; resolves once every copy has finished on the GPU. */
export async function copyToDevice(region: PoolRegion, device: DeviceMemory, options: CopyToDeviceOptions = {}): Promise<LoadStats> {
  checkJobOptions(options);
  if (region.released) throw new RangeError("the region has been released");
  if (device.disposed) throw new RangeError("the device memory has been disposed");
  const regionOffset = options.regionOffset === undefined ? 0 : checkUint(options.regionOffset, "regionOffset");
  const deviceOffset = options.deviceOffset === undefined ? 0 : checkUint(options.deviceOffset, "deviceOffset");
  const length = options.length === undefined ? region.length - regionOffset : checkUint(options.length, "length");
  if (regionOffset + length > region.length) throw new RangeError("range exceeds the region");
  if (deviceOffset + length > device.bytes) throw new RangeError(`range exceeds the ${device.bytes}-byte device memory`);
  const streams = checkOptionalInt(options.streams, "streams", 1, 64) ?? 4;
  const pieceBytes = checkOptionalInt(options.pieceBytes, "pieceBytes", 4096, 2 ** 31) ?? DEFAULT_COPY_PIECE_BYTES;
  await requireCuda();
  return runJob(
    () =>
      nativeBinding().startLoad(
        region.pool.nativePool(),
        device.nativeDevice(),
        [{ length, poolOffset: region.offset + regionOffset, deviceOffset }],
        { streams, pieceBytes },
      ),
    options,
  );
}
