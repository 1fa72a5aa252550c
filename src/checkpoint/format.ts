// Constants of checkpoint format v1 (DESIGN.md §3) and the arithmetic every writer and reader shares.

/** Format version written into CheckpointIndex.format_version. */
export const FORMAT_VERSION = 1;

/** Tensor offsets and chunk lengths are multiples of this, so O_DIRECT reads and GPU copies stay aligned. */
export const ALIGNMENT = 4096;

/** Default target size of a chunk file. */
export const DEFAULT_CHUNK_SIZE = 256 * 1024 * 1024;

/** Name of chunk `i` ("chunk-00000.bin"). */
export function chunkFileName(i: number): string {
  return `chunk-${String(i).padStart(5, "0")}.bin`;
}

/** Rounds `n` up to a multiple of `alignment`. */
export function alignUp(n: number, alignment = ALIGNMENT): number {
  return Math.ceil(n / alignment) * alignment;
}
