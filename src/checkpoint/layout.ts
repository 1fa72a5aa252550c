// Where each tensor goes: chunks filled in order, every tensor at an aligned offset, a tensor never
// split across chunks, a tensor larger than the target alone in its chunk, chunks padded.
import { ALIGNMENT, alignUp } from "./format.js";

/** A tensor's place in the checkpoint. */
export interface Placement {
  chunk: number;
  offset: number;
}

/** The result of planLayout: one placement per input length, and each chunk's padded length. */
export interface Layout {
  placements: Placement[];
  chunkLengths: number[];
}

/** Lays out tensors of the given byte lengths, in order, into chunks of about `chunkSize` bytes. */
export function planLayout(byteLengths: readonly number[], chunkSize: number, alignment = ALIGNMENT): Layout {
  if (!Number.isSafeInteger(chunkSize) || chunkSize < alignment) {
    throw new RangeError(`chunk size must be an integer of at least ${alignment} bytes, got ${chunkSize}`);
  }
  const placements: Placement[] = [];
  const chunkLengths: number[] = [];
  let end = 0; // bytes used in the current (last) chunk
  let full = false; // the current chunk holds an oversized tensor and takes nothing more
  for (const length of byteLengths) {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid tensor length ${length}`);
    if (chunkLengths.length === 0) chunkLengths.push(0);
    let offset = alignUp(end, alignment);
    if (length > 0 && end > 0 && (full || offset + length > chunkSize)) {
      chunkLengths.push(0);
      end = 0;
      offset = 0;
      full = false;
    }
    const chunk = chunkLengths.length - 1;
    placements.push({ chunk, offset });
    end = Math.max(end, offset + length);
    chunkLengths[chunk] = alignUp(end, alignment);
    if (length > chunkSize) full = true;
  }
  return { placements, chunkLengths };
}
