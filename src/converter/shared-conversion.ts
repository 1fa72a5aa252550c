// Concurrent requests for the same checkpoint share one conversion: the first caller starts it,
// later callers join and see the same progress and result. The conversion is aborted only when
// every caller has gone away.

/** A conversion in flight, observed by one or more callers. */
interface Flight<P, R> {
  controller: AbortController;
  done: Promise<R>;
  last: P | undefined;
  watchers: Set<(progress: P) => void>;
}

export type StartConversion<P, R> = (signal: AbortSignal, onProgress: (progress: P) => void) => Promise<R>;

export class SharedConversions<P, R> {
  private readonly flights = new Map<string, Flight<P, R>>();

  /** Number of conversions running. */
  get size(): number {
    return this.flights.size;
  }

  /**
   * Yields progress of the conversion of `key` (starting it with `start` if none is running) and
   * returns its result. `signal` detaches this caller; the last one to detach aborts the work.
   */
  async *join(key: string, start: StartConversion<P, R>, signal?: AbortSignal): AsyncGenerator<P, R> {
    const running = this.flights.get(key);
    // A flight whose callers all left is winding down; a newcomer starts afresh.
    const flight = running && !running.controller.signal.aborted ? running : this.begin(key, start);
    const queue: P[] = [];
    let wake: (() => void) | undefined;
    const watcher = (progress: P): void => {
      queue.push(progress);
      wake?.();
    };
    flight.watchers.add(watcher);
    if (flight.last !== undefined) queue.push(flight.last); // a late joiner starts from the latest state
    let settled = false;
    const finished = flight.done.then(
      () => void (settled = true),
      () => void (settled = true),
    );
    const onAbort = (): void => wake?.();
    signal?.addEventListener("abort", onAbort);
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (settled) return await flight.done;
        signal?.throwIfAborted();
        await Promise.race([finished, new Promise<void>((resolve) => (wake = resolve))]);
        wake = undefined;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      flight.watchers.delete(watcher);
      if (flight.watchers.size === 0 && this.flights.get(key) === flight) flight.controller.abort();
    }
  }

  private begin(key: string, start: StartConversion<P, R>): Flight<P, R> {
    const controller = new AbortController();
    const flight: Flight<P, R> = { controller, done: undefined as unknown as Promise<R>, last: undefined, watchers: new Set() };
    flight.done = start(controller.signal, (progress) => {
      flight.last = progress;
      for (const watch of flight.watchers) watch(progress);
    }).finally(() => {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    });
    flight.done.catch(() => {}); // observed by every joiner; never an unhandled rejection
    this.flights.set(key, flight);
    return flight;
  }
}
