// The native loader's public surface (see each file for details).
export { crc32c, crc32cSync, crc32cCombine } from "./checksum.js";
export { PinnedPool, PoolRegion, type PinnedPoolOptions, type PinRequest, type Pinning, type PoolStats, type HostMemoryRef } from "./pinned-pool.js";
export { readFiles, type FileToRead, type Placement, type ReadFilesOptions, type ReadFilesResult, type ReadTuning, type IoMode } from "./reader.js";
export { cudaInfo, requireCuda, deviceMemory, DeviceMemory, IPC_HANDLE_BYTES, type CudaInfo } from "./cuda.js";
export { copyToDevice, type CopyToDeviceOptions } from "./copier.js";
export { loadCheckpoint, type LoadCheckpointOptions, type LoadedCheckpoint } from "./load-checkpoint.js";
export { checkpointLayout, type CheckpointLayout, type ChunkSlot } from "./checkpoint-layout.js";
export type { JobOptions, LoadProgress, LoadStats, TierStats } from "./load-job.js";
export { NativeError, CudaUnavailableError, PoolExhaustedError, type NativeErrorKind } from "./native-error.js";
