// Reads files into a pool region with many threads, large aligned reads, O_DIRECT where the file
// system takes it (buffered otherwise), checksumming each piece as it lands.
import { stat } from "node:fs/promises";
import { nativeBinding, type NativeChunkPlan } from "./binding.js";
import { type JobOptions, type LoadStats, checkJobOptions, runJob } from "./load-job.js";
import type { PinnedPool, PoolRegion } from "./pinned-pool.js";
import { alignUp, checkChoice, checkOptionalInt, checkString, checkUint } from "./validate.js";

export type IoMode = "auto" | "direct" | "buffered";

/** Tuning shared by reads and loads. */
export interface ReadTuning {
  /** Reader threads (default: one per core, at least 4, at most 32). */
  threads?: number;
  /** Bytes per read and per GPU copy, a multiple of 4096 (default 16 MiB). */
  pieceBytes?: number;
  /**
   * "auto" (default): O_DIRECT unless most of the file is already in the page cache;
   * "direct": O_DIRECT wherever the file system takes it; "buffered": the page cache.
   * Where O_DIRECT is refused (tmpfs) reads fall back to buffered; stats.chunks[i].io says which.
   */
  io?: IoMode;
}

/** One file (or part of one) to read. */
export interface FileToRead {
  path: string;
  /** First byte to read (default 0). */
  offset?: number;
  /** Bytes to read (default: to the end of the file). */
  length?: number;
  /** Expected CRC-32C of those bytes; the read fails with a NativeError of kind "checksum" if it differs. */
  crc32c?: number;
}

/** Where a file landed. */
export interface Placement {
  path: string;
  fileOffset: number;
  length: number;
  /** Offset inside the region (a multiple of 4096). */
  regionOffset: number;
}

export interface ReadFilesOptions extends JobOptions, ReadTuning {
  /** Region to read into (default: one allocated here, released again if the read fails). */
  region?: PoolRegion;
  /** Compute every file's CRC-32C (stats.chunks[i].crc32c) even where none is given to check. */
  checksum?: boolean;
}

export interface ReadFilesResult {
  region: PoolRegion;
  placements: Placement[];
  stats: LoadStats;
}

export const DEFAULT_PIECE_BYTES = 16 << 20;

export function checkTuning(t: ReadTuning): void {
  checkOptionalInt(t.threads, "threads", 0, 256);
  if (t.pieceBytes !== undefined) {
    checkOptionalInt(t.pieceBytes, "pieceBytes", 4096, 2 ** 30);
    if (t.pieceBytes % 4096 !== 0) throw new RangeError("pieceBytes must be a multiple of 4096");
  }
  if (t.io !== undefined) checkChoice(t.io, "io", ["auto", "direct", "buffered"] as const);
}

export function checkRegion(region: PoolRegion, pool: PinnedPool, bytes: number): void {
  if (region.pool !== pool) throw new RangeError("the region belongs to another pool");
  if (region.released) throw new RangeError("the region has been released");
  if (region.length < bytes) throw new RangeError(`the region holds ${region.length} bytes, ${bytes} are needed`);
}

/** Reads `files` into one region of `pool`, each at a 4096-aligned offset, in order. */
export async function readFiles(pool: PinnedPool, files: readonly FileToRead[], options: ReadFilesOptions = {}): Promise<ReadFilesResult> {
  if (!Array.isArray(files)) throw new TypeError("files must be an array");
  checkJobOptions(options);
  checkTuning(options);
  const placements: Placement[] = [];
  let end = 0;
  for (const [i, f] of files.entries()) {
    if (typeof f !== "object" || f === null) throw new TypeError(`files[${i}] must be an object`);
    checkString(f.path, `files[${i}].path`);
    const offset = f.offset === undefined ? 0 : checkUint(f.offset, `files[${i}].offset`);
    if (f.crc32c !== undefined) {
      checkUint(f.crc32c, `files[${i}].crc32c`);
      if (f.crc32c > 0xffffffff) throw new RangeError(`files[${i}].crc32c must fit in 32 bits`);
    }
    let length = f.length;
    if (length === undefined) {
      const size = (await stat(f.path)).size;
      if (offset > size) throw new RangeError(`files[${i}].offset ${offset} lies past the end of ${f.path} (${size} bytes)`);
      length = size - offset;
    } else {
      checkUint(length, `files[${i}].length`);
    }
    placements.push({ path: f.path, fileOffset: offset, length, regionOffset: end });
    end += alignUp(length);
  }
  const total = Math.max(end, 4096);
  if (options.region !== undefined) checkRegion(options.region, pool, total);
  const region = options.region ?? pool.allocate(total);
  try {
    const chunks: NativeChunkPlan[] = placements.map((p, i) => ({
      path: p.path,
      fileOffset: p.fileOffset,
      length: p.length,
      poolOffset: region.offset + p.regionOffset,
      crc32c: files[i].crc32c,
    }));
    const stats = await runJob(
      () =>
        nativeBinding().startLoad(pool.nativePool(), null, chunks, {
          threads: options.threads ?? 0,
          pieceBytes: options.pieceBytes ?? DEFAULT_PIECE_BYTES,
          io: options.io ?? "auto",
          checksum: options.checksum ?? false,
        }),
      options,
    );
    return { region, placements, stats };
  } catch (err) {
    if (options.region === undefined) region.release();
    throw err;
  }
}
