// What one connection may hold of a server, and for how long: the bounds every listener enforces
// (server.ts) so that no client can keep sockets open without sending requests. Streams that are
// running (a long generation, a chunk transfer) are never cut by them: they bound the time to
// *send* a request and the time a connection sits with *no* request in flight.
import { readFileSync } from "node:fs";

export interface ConnectionLimits {
  /**
   * A new connection must complete its first request's headers (HTTP/1.1; a stream opened, for
   * HTTP/2) within this, and every later HTTP/1.1 request its headers from their first byte, ms.
   */
  headersTimeoutMs: number;
  /** A request's headers and body must all arrive within this, ms (responses may stream as long as they like). */
  requestTimeoutMs: number;
  /** A connection with no request in flight (HTTP/1.1 keep-alive, an HTTP/2 session without open streams) is closed after this, ms. */
  idleTimeoutMs: number;
  /** Connections open at once in this process's listener; one more is closed as it is accepted. */
  maxConnections: number;
}

/** Files a process needs besides its client connections (store files, chunk reads, children, outgoing calls). */
const RESERVED_FILE_FRACTION = 0.25;
const DEFAULT_CONNECTION_CAP = 4096;

/** The defaults: 10 s to send headers, 60 s to send a whole request, 120 s idle, connections capped below the open-file limit. */
export function defaultConnectionLimits(): ConnectionLimits {
  return { headersTimeoutMs: 10_000, requestTimeoutMs: 60_000, idleTimeoutMs: 120_000, maxConnections: defaultMaxConnections() };
}

/** The limits with `given` applied over the defaults; RangeError for values that cannot work. */
export function connectionLimits(given: Partial<ConnectionLimits> = {}): ConnectionLimits {
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) as Partial<ConnectionLimits>;
  const limits = { ...defaultConnectionLimits(), ...defined };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  if (limits.headersTimeoutMs > limits.requestTimeoutMs) {
    throw new RangeError(`headersTimeoutMs (${limits.headersTimeoutMs}) must not exceed requestTimeoutMs (${limits.requestTimeoutMs}): headers are part of the request`);
  }
  return limits;
}

/**
 * 4096, or three quarters of the soft open-file limit when that is lower (1024 on many systems),
 * so that a flood of connections meets the cap before the process runs out of file descriptors.
 */
export function defaultMaxConnections(): number {
  const soft = softOpenFileLimit();
  return soft === undefined ? DEFAULT_CONNECTION_CAP : Math.max(16, Math.min(DEFAULT_CONNECTION_CAP, Math.floor(soft * (1 - RESERVED_FILE_FRACTION))));
}

/** RLIMIT_NOFILE's soft value (Linux /proc), or undefined when unknown or unlimited. */
function softOpenFileLimit(): number | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = Number(line?.slice("Max open files".length).trim().split(/\s+/)[0]);
    return Number.isSafeInteger(soft) && soft > 0 ? soft : undefined;
  } catch {
    return undefined;
  }
}
