// Loads the compiled addon (native/build/Release/thaw_native.node) once.
// Only this folder talks to it; everything else uses the typed facades beside this file.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

/** Where the pool's pages are and how they are pinned, as the native pool reports it. */
export interface NativePoolInfo {
  bytes: number;
  fd: number;
  path: string;
  pinning: "cuda" | "mlock" | "none";
  pinningDetail: string;
  hugePages: boolean;
  prefaultSeconds: number;
  prefaultThreads: number;
  pinSeconds: number;
}

/** Allocator figures of a pool. */
export interface NativePoolStats {
  bytes: number;
  /** Bytes of allocated regions, and of released ones a load still holds. */
  used: number;
  free: number;
  largestFree: number;
  /** Allocated regions (not released). */
  regions: number;
  /** Regions released while a load still read into them: they return to the free extents when it ends. */
  releasing: number;
  freeExtents: number;
}

/** The pinned pool as the addon exposes it (wrapped by PinnedPool). */
export interface NativePool {
  allocate(bytes: number): { offset: number; length: number } | null;
  release(offset: number): number;
  buffer(offset: number, length: number): ArrayBuffer;
  stats(): NativePoolStats;
  info(): NativePoolInfo;
  dispose(): void;
}

/** A chunk of a load as the addon takes it; offsets are absolute in the pool / device buffer. */
export interface NativeChunkPlan {
  path?: string;
  fileOffset?: number;
  length: number;
  poolOffset: number;
  deviceOffset?: number;
  crc32c?: number;
}

export interface NativeLoadOptions {
  threads?: number;
  pieceBytes?: number;
  io?: "auto" | "direct" | "buffered";
  streams?: number;
  checksum?: boolean;
}

export interface NativeProgress {
  totalBytes: number;
  readBytes: number;
  copiedBytes: number;
  chunksTotal: number;
  chunksDone: number;
}

export interface NativeLoadResult {
  bytes: number;
  seconds: number;
  readBytes: number;
  readSeconds: number;
  copyBytes: number;
  copySeconds: number;
  threads: number;
  streams: number;
  chunks: { io: "direct" | "buffered" | "memory"; crc32c: number; verified: boolean }[];
}

export interface NativeJob {
  readonly promise: Promise<NativeLoadResult>;
  progress(): NativeProgress;
  cancel(): void;
}

export interface NativeCudaInfo {
  available: boolean;
  reason: string;
  library: string;
  driverVersion: number;
  runtimeVersion: number;
  devices: { index: number; name: string; totalBytes: number; computeCapability: string; pciBusId: number }[];
  errors: string[];
}

export interface NativeDevice {
  info(): { pointer: bigint; bytes: number; device: number; owned: boolean };
  exportIpc(): Uint8Array;
  copyToHost(offset: number, target: Uint8Array): Promise<void>;
  dispose(): void;
}

/** The raw functions the addon exports. Validate arguments before calling these. */
export interface NativeBinding {
  crc32c(data: Uint8Array, crc: number): Promise<number>;
  crc32cSync(data: Uint8Array, crc: number): number;
  crc32cCombine(crcA: number, crcB: number, lengthB: number): number;
  crc32cHardware: boolean;
  createPool(options: {
    bytes: number;
    prefaultThreads?: number;
    pin?: "auto" | "cuda" | "mlock" | "none";
    device?: number;
    name?: string;
  }): Promise<NativePool>;
  startLoad(pool: NativePool, device: NativeDevice | null, chunks: NativeChunkPlan[], options: NativeLoadOptions): NativeJob;
  cudaInfo(): Promise<NativeCudaInfo>;
  openIpc(handle: Uint8Array, device: number, bytes: number): Promise<NativeDevice>;
  allocateDevice(device: number, bytes: number): Promise<NativeDevice>;
  deviceMemory(device: number): Promise<{ free: number; total: number }>;
}

const addonPath = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../native/build/Release/thaw_native.node",
);

let binding: NativeBinding | undefined;

export function nativeBinding(): NativeBinding {
  if (binding === undefined) {
    // THAW_NATIVE_ADDON names the addon file where the source tree is not beside it (bundles).
    const file = process.env.THAW_NATIVE_ADDON || addonPath;
    try {
      binding = createRequire(import.meta.url)(file) as NativeBinding;
    } catch (err) {
      throw new Error(
        `thaw's native module is not built (${file}); run \`npm ci\` or \`npx node-gyp rebuild --directory=native\`: ${String(err)}`,
      );
    }
  }
  return binding;
}
