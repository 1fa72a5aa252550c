// Errors of the native loader: where a read, a checksum or a CUDA call failed.

/** What kind of failure a NativeError is. */
export type NativeErrorKind = "io" | "checksum" | "cancelled" | "cuda" | "invalid" | "no-memory";

/** A failure reported by the native module, with where it happened. */
export class NativeError extends Error {
  override readonly name = "NativeError";
  readonly kind: NativeErrorKind;
  /** File involved. */
  readonly path?: string;
  /** Byte offset in that file. */
  readonly offset?: number;
  /** errno of the failed system call and its name ("EIO"). */
  readonly errno?: number;
  readonly code?: string;
  readonly syscall?: string;
  /** Index of the chunk involved. */
  readonly chunk?: number;
  /** For checksum failures: the CRC-32C the index gives and the one computed. */
  readonly expected?: number;
  readonly actual?: number;
  /** cudaError_t of the failed CUDA call. */
  readonly cudaError?: number;

  constructor(message: string, fields: Partial<Omit<NativeError, "name" | "message">> & { kind: NativeErrorKind }) {
    super(message);
    this.kind = fields.kind;
    this.path = fields.path;
    this.offset = fields.offset;
    this.errno = fields.errno;
    this.code = fields.code;
    this.syscall = fields.syscall;
    this.chunk = fields.chunk;
    this.expected = fields.expected;
    this.actual = fields.actual;
    this.cudaError = fields.cudaError;
  }
}

/** CUDA is needed and this machine has none usable (no library, no driver, no device). */
export class CudaUnavailableError extends Error {
  override readonly name = "CudaUnavailableError";
}

/** The pool has no free extent large enough. */
export class PoolExhaustedError extends Error {
  override readonly name = "PoolExhaustedError";
  constructor(
    readonly requested: number,
    readonly largestFree: number,
  ) {
    super(`the pinned pool has no free extent of ${requested} bytes (largest free extent: ${largestFree} bytes)`);
  }
}

/** Turns what the addon threw into a NativeError (errors already of our own classes pass through). */
export function fromNative(err: unknown): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  const e = err as Error & Record<string, unknown>;
  if (typeof e.kind !== "string" || err instanceof NativeError) return err;
  const num = (v: unknown): number | undefined => (typeof v === "number" ? v : undefined);
  const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
  return new NativeError(err.message, {
    kind: e.kind as NativeErrorKind,
    path: str(e.path),
    offset: num(e.offset),
    errno: num(e.errno),
    code: str(e.code),
    syscall: str(e.syscall),
    chunk: num(e.chunk),
    expected: num(e.expected),
    actual: num(e.actual),
    cudaError: num(e.cudaError),
  });
}
