// CRC-32C of chunk bytes, computed natively (SSE4.2 when present).
import { nativeBinding } from "./binding.js";

/** Below this size the call is cheaper than a trip to the thread pool. */
const SYNC_LIMIT = 1 << 20;

/** Extends `crc` (0 to start) over `data`, off the main thread for large inputs. */
export async function crc32c(data: Uint8Array, crc = 0): Promise<number> {
  checkCrc(crc);
  const native = nativeBinding();
  return data.byteLength <= SYNC_LIMIT ? native.crc32cSync(data, crc) : native.crc32c(data, crc);
}

/** Synchronous variant for small inputs (headers, tests). */
export function crc32cSync(data: Uint8Array, crc = 0): number {
  checkCrc(crc);
  return nativeBinding().crc32cSync(data, crc);
}

function checkCrc(crc: number): void {
  if (!Number.isInteger(crc) || crc < 0 || crc > 0xffffffff) {
    throw new RangeError(`crc must be an unsigned 32-bit integer, got ${crc}`);
  }
}

/** The CRC-32C of A followed by B, from crc32c(A), crc32c(B) and B's length (pieces checksummed apart). */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  checkCrc(crcA);
  checkCrc(crcB);
  if (!Number.isSafeInteger(lengthB) || lengthB < 0) throw new RangeError(`lengthB must be a non-negative safe integer, got ${lengthB}`);
  return nativeBinding().crc32cCombine(crcA, crcB, lengthB);
}
