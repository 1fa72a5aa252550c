// One piece of work per key, watched by any number of callers: the first caller starts it, later
// callers join and see the latest progress, then every new report, then the result. A caller that
// leaves (its signal aborts) stops watching; when the last one has left, the work either runs to
// its end (a finished model load leaves the cache warm) or is aborted (a conversion nobody waits
// for), as the owner chose.

interface Flight<P, R> {
  controller: AbortController;
  done: Promise<R>;
  last: P | undefined;
  watchers: Set<(progress: P) => void>;
  callers: number;
}

/** What happens to work whose callers have all left. */
export type WhenAbandoned = "finish" | "abort";

export type StartWork<P, R> = (report: (progress: P) => void, signal: AbortSignal) => Promise<R>;

export class SharedFlights<P, R> {
  private readonly flights = new Map<string, Flight<P, R>>();

  constructor(private readonly whenAbandoned: WhenAbandoned = "finish") {}

  has(key: string): boolean {
    return this.flights.has(key);
  }

  /** Number of keys with work running. */
  get size(): number {
    return this.flights.size;
  }

  /** Starts (or joins) the work of `key` and returns its result, reporting progress to `onProgress`. */
  run(key: string, start: StartWork<P, R>, onProgress?: (progress: P) => void, signal?: AbortSignal): Promise<R> {
    const running = this.flights.get(key);
    // Work aborted because everyone left is winding down; a newcomer starts afresh.
    const joined = running !== undefined && !running.controller.signal.aborted ? running : this.begin(key, start);
    joined.callers++;
    if (onProgress !== undefined) {
      if (joined.last !== undefined) onProgress(joined.last);
      joined.watchers.add(onProgress);
    }
    let attached = true;
    const detach = (): void => {
      if (!attached) return;
      attached = false;
      if (onProgress !== undefined) joined.watchers.delete(onProgress);
      if (--joined.callers === 0 && this.whenAbandoned === "abort") joined.controller.abort();
    };
    if (signal === undefined) return joined.done.finally(detach);
    return new Promise<R>((resolve, reject) => {
      const onAbort = (): void => {
        detach();
        reject(signal.reason);
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      joined.done.then(
        (r) => {
          signal.removeEventListener("abort", onAbort);
          detach();
          resolve(r);
        },
        (e: unknown) => {
          signal.removeEventListener("abort", onAbort);
          detach();
          reject(e);
        },
      );
    });
  }

  private begin(key: string, start: StartWork<P, R>): Flight<P, R> {
    const created: Flight<P, R> = {
      controller: new AbortController(),
      done: undefined as unknown as Promise<R>,
      last: undefined,
      watchers: new Set(),
      callers: 0,
    };
    created.done = Promise.resolve()
      .then(() =>
        start((progress) => {
          created.last = progress;
          for (const watch of created.watchers) watch(progress);
        }, created.controller.signal),
      )
      .finally(() => {
        if (this.flights.get(key) === created) this.flights.delete(key);
      });
    created.done.catch(() => {}); // observed by every caller; never an unhandled rejection
    this.flights.set(key, created);
    return created;
  }
}
