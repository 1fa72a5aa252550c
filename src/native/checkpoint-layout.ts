// Where each chunk of a checkpoint goes in a pool region, and in GPU memory: back to back, each
// at a 4096-aligned offset, the same layout in both (so the DRAM → GPU copy is one range).
// These offsets are MemoryDescriptor.chunk_offsets for the engine worker.
import path from "node:path";
import { ChecksumAlgorithm, type CheckpointIndex } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { alignUp, safeNumber } from "./validate.js";

export interface ChunkSlot {
  fileName: string;
  length: number;
  /** Offset inside the region / device buffer. */
  offset: number;
  /** The index's CRC-32C, when it gives one. */
  crc32c?: number;
}

export interface CheckpointLayout {
  slots: ChunkSlot[];
  /** Offsets only, in index order (MemoryDescriptor.chunk_offsets). */
  chunkOffsets: number[];
  /** Bytes the region (and the device buffer) needs. */
  totalBytes: number;
}

/** Lays out the chunks of `index`; with `verify`, every chunk must carry a CRC-32C. */
export function checkpointLayout(index: CheckpointIndex, verify = true): CheckpointLayout {
  if (typeof index !== "object" || index === null || !Array.isArray(index.chunks)) {
    throw new TypeError("index must be a thaw.checkpoint.v1.CheckpointIndex");
  }
  const slots: ChunkSlot[] = [];
  let end = 0;
  for (const [i, chunk] of index.chunks.entries()) {
    const name = chunk.fileName;
    if (typeof name !== "string" || name === "" || name !== path.basename(name) || name === "." || name === "..") {
      throw new RangeError(`chunk ${i} has an unsafe file name: ${JSON.stringify(name)}`);
    }
    const length = safeNumber(chunk.byteLength, `chunks[${i}].byteLength`);
    let crc32c: number | undefined;
    if (verify) {
      if (chunk.checksum?.algorithm !== ChecksumAlgorithm.CRC32C) {
        throw new RangeError(
          `chunk ${i} (${name}) has no CRC-32C checksum (algorithm ${chunk.checksum?.algorithm ?? "none"}); ` +
            "the native loader verifies CRC-32C only: pass verify: false to load without checking",
        );
      }
      crc32c = safeNumber(chunk.checksum.value, `chunks[${i}].checksum`);
      if (crc32c > 0xffffffff) throw new RangeError(`chunks[${i}].checksum does not fit in 32 bits`);
    }
    slots.push({ fileName: name, length, offset: end, crc32c });
    end += alignUp(length);
  }
  return { slots, chunkOffsets: slots.map((s) => s.offset), totalBytes: Math.max(end, 4096) };
}
