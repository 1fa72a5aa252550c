// A server stream that must keep reporting: every message restarts a timer, and silence for longer
// than the limit aborts the call (LoadModel and DownloadChunks can take minutes for a large model,
// so a total deadline would be wrong; a call that stops reporting is hung).
import { Code, ConnectError } from "@connectrpc/connect";

/** The call said nothing for too long and was aborted. */
export class NoProgressError extends ConnectError {
  constructor(what: string, ms: number) {
    super(`${what}: no progress for ${(ms / 1000).toFixed(ms < 1000 ? 3 : 0)} s; aborted`, Code.DeadlineExceeded);
    this.name = "NoProgressError";
  }
}

/**
 * Iterates the stream `call` opens, aborting it (through the signal it is given) with a
 * NoProgressError when no message arrives for `ms`. `signal` aborts it too, with its own reason.
 */
export async function* withProgressTimeout<T>(
  call: (signal: AbortSignal) => AsyncIterable<T>,
  options: { ms: number; what: string; signal?: AbortSignal },
): AsyncGenerator<T> {
  const { ms, what, signal } = options;
  signal?.throwIfAborted();
  const ctl = new AbortController();
  const onAbort = () => ctl.abort(signal!.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  let silent: NoProgressError | undefined;
  const timer = setTimeout(() => {
    silent = new NoProgressError(what, ms);
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
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}
