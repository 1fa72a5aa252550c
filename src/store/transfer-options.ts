// How an object store moves bytes: part sizes, parallelism and retries. Defaults suit 256 MiB
// chunks on a fast network; tests shrink them to exercise multipart paths with small data.

/** Tuning of uploads, downloads and retries of an object store. */
export interface TransferOptions {
  /** Bytes per multipart part / block; objects up to this size go up in one request. */
  partSize: number;
  /** Parts of one object in flight at once (each holds one part in memory). */
  uploadConcurrency: number;
  /** Bytes per ranged GET when a large range is split across several streams. */
  rangeSize: number;
  /** Ranged GETs of one readRange in flight at once (each buffers one range). */
  readConcurrency: number;
  /** Attempts per request, counting the first, before a transient failure is given up on. */
  attempts: number;
  /** First back-off delay in milliseconds; doubles per attempt up to maxDelayMs (with jitter). */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_TRANSFER_OPTIONS: Readonly<TransferOptions> = {
  partSize: 16 << 20,
  uploadConcurrency: 4,
  rangeSize: 16 << 20,
  readConcurrency: 4,
  attempts: 6,
  baseDelayMs: 100,
  maxDelayMs: 5_000,
};

/** Fills in defaults and rejects values that cannot work. */
export function resolveTransferOptions(options: Partial<TransferOptions> = {}): TransferOptions {
  const resolved = { ...DEFAULT_TRANSFER_OPTIONS, ...stripUndefined(options) };
  for (const [name, value] of Object.entries(resolved)) {
    if (!Number.isSafeInteger(value) || value < (name === "baseDelayMs" || name === "maxDelayMs" ? 0 : 1)) {
      throw new RangeError(`transfer option ${name} must be a positive integer, got ${value}`);
    }
  }
  return resolved;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
