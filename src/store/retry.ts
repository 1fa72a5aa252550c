// Retries of single requests against an object store. Only failures that a second try can fix
// (dropped connections, timeouts, 5xx, throttling) are retried; the rest surface at once.
import { setTimeout as sleep } from "node:timers/promises";
import type { TransferOptions } from "./transfer-options.js";

/** Error codes of Node's sockets, undici and the SDKs that mean "the connection went away". */
const TRANSIENT_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ERR_STREAM_PREMATURE_CLOSE",
  "UND_ERR_SOCKET",
  "REQUEST_SEND_ERROR",
  "RequestTimeout",
  "RequestTimeoutException",
  "SlowDown",
  "InternalError",
  "ServiceUnavailable",
  "ServerBusy",
  "OperationTimedOut",
  "ShortRead",
]);

/** Whether an error is worth another try: network trouble, timeouts, throttling or a 5xx. */
export function isTransientError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === "AbortError") return false;
  const e = error as Error & { code?: unknown; statusCode?: unknown; $metadata?: { httpStatusCode?: number }; cause?: unknown };
  const status = typeof e.statusCode === "number" ? e.statusCode : e.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429 || status === 408)) return true;
  if (typeof e.code === "string" && TRANSIENT_CODES.has(e.code)) return true;
  if (TRANSIENT_CODES.has(e.name) || e.name === "TimeoutError") return true;
  if (/socket hang up|aborted|premature close|other side closed/i.test(e.message)) return true;
  return e.cause !== undefined && e.cause !== error && isTransientError(e.cause);
}

/** Back-off before attempt `attempt` (1 = first retry): exponential with full jitter. */
export function backoffDelay(attempt: number, options: Pick<TransferOptions, "baseDelayMs" | "maxDelayMs">): number {
  const cap = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
  return cap / 2 + Math.random() * (cap / 2);
}

/** Runs `operation`, retrying transient failures with back-off; the last error is rethrown. */
export async function withRetry<T>(
  operation: (attempt: number) => Promise<T>,
  options: Pick<TransferOptions, "attempts" | "baseDelayMs" | "maxDelayMs">,
  signal?: AbortSignal,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt);
    } catch (error) {
      signal?.throwIfAborted();
      if (attempt >= options.attempts || !isTransientError(error)) throw error;
      await sleep(backoffDelay(attempt, options), undefined, { signal });
    }
  }
}
