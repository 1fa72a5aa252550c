// Turns work that reports through a callback into an async generator of its reports, so a
// server-streaming handler can `yield*` it. The work's error ends the stream with that error.

export async function* pushStream<T>(run: (emit: (item: T) => void) => Promise<void>, signal?: AbortSignal): AsyncGenerator<T> {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let done = false;
  let failure: { error: unknown } | undefined;
  const work = run((item) => {
    queue.push(item);
    wake?.();
  }).then(
    () => void (done = true),
    (error: unknown) => void ((failure = { error }), (done = true)),
  );
  const onAbort = (): void => wake?.();
  signal?.addEventListener("abort", onAbort);
  try {
    for (;;) {
      while (queue.length > 0) yield queue.shift()!;
      if (done) break;
      signal?.throwIfAborted();
      await Promise.race([work, new Promise<void>((resolve) => (wake = resolve))]);
      wake = undefined;
    }
    if (failure !== undefined) throw failure.error;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}
