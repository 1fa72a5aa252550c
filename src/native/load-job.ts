// Runs one native load job: progress polled into a callback, an AbortSignal wired to cancel(),
// native errors turned into NativeError, and the result turned into per-tier figures.
import type { NativeJob, NativeLoadResult, NativeProgress } from "./binding.js";
import { NativeError, fromNative } from "./native-error.js";
import { checkOptionalInt, checkSignal } from "./validate.js";

export type LoadProgress = NativeProgress;

/** Options every load, read and copy takes. */
export interface JobOptions {
  /** Cancels the job; it stops within one piece and the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called every progressIntervalMs while the job runs, and once at the end. */
  onProgress?: (progress: LoadProgress) => void;
  progressIntervalMs?: number;
}

/** Bytes moved through one tier and the seconds it took. */
export interface TierStats {
  bytes: number;
  seconds: number;
  /** bytes / seconds / 1e9 */
  gbPerSecond: number;
}

/** What a load did. `read` is files → pool (disk or page cache), `copy` is pool → GPU. */
export interface LoadStats {
  bytes: number;
  seconds: number;
  gbPerSecond: number;
  read?: TierStats;
  copy?: TierStats;
  threads: number;
  streams: number;
  chunks: { io: "direct" | "buffered" | "memory"; crc32c: number; verified: boolean }[];
}

export function checkJobOptions(options: JobOptions): void {
  checkSignal(options.signal);
  if (options.onProgress !== undefined && typeof options.onProgress !== "function") {
    throw new TypeError("onProgress must be a function");
  }
  checkOptionalInt(options.progressIntervalMs, "progressIntervalMs", 1, 3_600_000);
}

function tier(bytes: number, seconds: number): TierStats {
  return { bytes, seconds, gbPerSecond: seconds > 0 ? bytes / seconds / 1e9 : 0 };
}

function toStats(r: NativeLoadResult): LoadStats {
  return {
    bytes: r.bytes,
    seconds: r.seconds,
    gbPerSecond: r.seconds > 0 ? r.bytes / r.seconds / 1e9 : 0,
    read: r.readBytes > 0 ? tier(r.readBytes, r.readSeconds) : undefined,
    copy: r.copyBytes > 0 ? tier(r.copyBytes, r.copySeconds) : undefined,
    threads: r.threads,
    streams: r.streams,
    chunks: r.chunks,
  };
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The load was aborted", "AbortError");
}

/** Starts `start()` unless already aborted, and follows the job to its end. */
export async function runJob(start: () => NativeJob, options: JobOptions): Promise<LoadStats> {
  const { signal, onProgress } = options;
  if (signal?.aborted) throw abortReason(signal);
  let job: NativeJob;
  try {
    job = start();
  } catch (err) {
    throw fromNative(err);
  }
  const onAbort = (): void => job.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  const timer =
    onProgress === undefined ? undefined : setInterval(() => onProgress(job.progress()), options.progressIntervalMs ?? 100);
  try {
    const result = await job.promise;
    onProgress?.(job.progress());
    return toStats(result);
  } catch (err) {
    const e = fromNative(err);
    if (e instanceof NativeError && e.kind === "cancelled" && signal?.aborted) throw abortReason(signal);
    throw e;
  } finally {
    if (timer !== undefined) clearInterval(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}
