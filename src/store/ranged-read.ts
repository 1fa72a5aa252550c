// Ranged reads of one object: a dropped connection resumes from the last byte received, and a
// large range is fetched as several concurrent ranged GETs whose bytes are yielded in order.
import type { ObjectBackend } from "./object-backend.js";
import { backoffDelay, isTransientError } from "./retry.js";
import type { TransferOptions } from "./transfer-options.js";
import { setTimeout as sleep } from "node:timers/promises";

/** The server ended a response before the bytes it promised; retried like a dropped connection. */
class ShortReadError extends Error {
  override readonly name = "ShortRead";
}

/**
 * Streams bytes [start, end) of `key` over one connection at a time, re-requesting from the
 * last byte received when it drops. `end` undefined reads to the end of the object.
 * Attempts are counted per stall: a retry that made progress resets the count.
 */
export async function* streamWithResume(
  backend: ObjectBackend,
  key: string,
  start: number,
  end: number | undefined,
  options: TransferOptions,
  signal?: AbortSignal,
): AsyncGenerator<Uint8Array> {
  let position = start;
  let failures = 0;
  while (end === undefined || position < end) {
    const before = position;
    try {
      const body = await backend.get(key, position, end, signal);
      end ??= body.objectSize;
      for await (const chunk of body.chunks) {
        signal?.throwIfAborted(); // also for bodies that do not watch the signal themselves
        // A server that ignores Range (or sends more) must not push bytes past the range.
        const piece = chunk.byteLength > end - position ? chunk.subarray(0, end - position) : chunk;
        if (piece.byteLength === 0) continue;
        position += piece.byteLength;
        yield piece;
        if (position >= end) break;
      }
      if (position < end) throw new ShortReadError(`${backend.location}: ${key} ended at byte ${position} of ${end}`);
    } catch (error) {
      signal?.throwIfAborted(); // the caller's abort, not whatever the torn-down stream said
      if (!isTransientError(error)) throw error;
      failures = position > before ? 1 : failures + 1;
      if (failures >= options.attempts) throw error;
      await sleep(backoffDelay(failures, options), undefined, { signal });
    }
  }
}

/** Reads [start, end) fully into one buffer, resuming as streamWithResume does. */
export async function readFully(
  backend: ObjectBackend,
  key: string,
  start: number,
  end: number | undefined,
  options: TransferOptions,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const parts = await collectChunks(streamWithResume(backend, key, start, end, options, signal));
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/**
 * Yields bytes [start, end) of `key` in order. Ranges longer than one rangeSize are split and
 * up to readConcurrency pieces are fetched at once (each held until its turn); the first piece is
 * streamed as it arrives so the caller sees bytes early.
 */
export async function* readObjectRange(
  backend: ObjectBackend,
  key: string,
  start: number,
  end: number,
  options: TransferOptions,
  signal?: AbortSignal,
  /** The object's size when known: a read of all of it then goes as a plain GET (some servers copy for a Range). */
  objectSize?: number,
): AsyncGenerator<Uint8Array> {
  if (end <= start) return;
  if (end - start <= options.rangeSize || options.readConcurrency <= 1) {
    yield* streamWithResume(backend, key, start, start === 0 && end === objectSize ? undefined : end, options, signal);
    return;
  }
  // Our own controller: stops prefetches when the caller stops early or one piece fails.
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  const pieces: Promise<Uint8Array[]>[] = [];
  let next = start + options.rangeSize; // the first piece is streamed, not prefetched
  let limit = options.readConcurrency - 1; // the streamed first piece holds one slot
  const prefetch = () => {
    while (next < end && pieces.length < limit) {
      const pieceEnd = Math.min(end, next + options.rangeSize);
      const piece = collectChunks(streamWithResume(backend, key, next, pieceEnd, options, controller.signal));
      piece.catch(() => {}); // observed when its turn comes; avoids an unhandled rejection meanwhile
      pieces.push(piece);
      next = pieceEnd;
    }
  };
  try {
    prefetch();
    yield* streamWithResume(backend, key, start, start + options.rangeSize, options, controller.signal);
    limit = options.readConcurrency;
    while (pieces.length > 0) {
      const chunks = await pieces.shift()!;
      prefetch();
      yield* chunks; // as received: no copy into one buffer
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    controller.abort(new Error("range read stopped"));
  }
}

async function collectChunks(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const chunk of chunks) out.push(chunk);
  return out;
}
