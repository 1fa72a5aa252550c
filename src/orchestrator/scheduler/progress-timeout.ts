// A server stream that must keep reporting: every message restarts a timer, and silence for longer
// than the limit aborts the call (LoadModel and DownloadChunks can take minutes for a large model,
// so a total deadline would be wrong; a call that stops reporting is hung).
import { Code, ConnectError } from "@connectrpc/connect";
import { realTimers, type Timers } from "./timers.js";

// Errors this module made. (Not a ConnectError subclass: ConnectError's instanceof checks the
// error's name, so a subclass could not be told apart from any other ConnectError.)
const silences = new WeakSet<object>();

/** The call said nothing for too long and was aborted (DEADLINE_EXCEEDED). */
function noProgress(what: string, ms: number): ConnectError {
  const err = new ConnectError(`${what}: no progress for ${(ms / 1000).toFixed(ms < 1000 ? 3 : 0)} s; aborted`, Code.DeadlineExceeded);
  silences.add(err);
  return err;
}

/** True for the error of a call aborted by withProgressTimeout. */
export function isNoProgress(err: unknown): err is ConnectError {
  return typeof err === "object" && err !== null && silences.has(err);
}

/**
 * Iterates the stream `call` opens, aborting it (through the signal it is given) with a
 * DEADLINE_EXCEEDED error (see isNoProgress) when no message arrives for `ms`. `signal` aborts it
 * too, with its own reason.
 */
export async function* withProgressTimeout<T>(
  call: (signal: AbortSignal) => AsyncIterable<T>,
  options: { ms: number; what: string; signal?: AbortSignal; timers?: Timers },
): AsyncGenerator<T> {
  const { ms, what, signal, timers = realTimers } = options;
  signal?.throwIfAborted();
  const ctl = new AbortController();
  const onAbort = () => ctl.abort(signal!.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  let silent: ConnectError | undefined;
  const timer = timers.setTimeout(() => {
    silent = noProgress(what, ms);
    ctl.abort(silent);
  }, ms);
  try {
    for await (const message of call(ctl.signal)) {
      timer.refresh();
      yield message;
    }
  } catch (err) {
    throw silent ?? err;
  } finally {
    timers.clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}
