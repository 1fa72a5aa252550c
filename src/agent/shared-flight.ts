// One piece of work per key, watched by any number of callers: the first caller starts it, later
// callers join and see the latest progress, then every new report, then the result. The work runs
// to its end even when every caller has gone (a finished load leaves the cache warm).

interface Flight<P, R> {
  done: Promise<R>;
  last: P | undefined;
  watchers: Set<(progress: P) => void>;
}

export class SharedFlights<P, R> {
  private readonly flights = new Map<string, Flight<P, R>>();

  has(key: string): boolean {
    return this.flights.has(key);
  }

  /** Starts (or joins) the work of `key` and returns its result, reporting progress to `onProgress`. */
  run(key: string, start: (report: (progress: P) => void) => Promise<R>, onProgress?: (progress: P) => void, signal?: AbortSignal): Promise<R> {
    let flight = this.flights.get(key);
    if (flight === undefined) {
      const created: Flight<P, R> = { done: undefined as unknown as Promise<R>, last: undefined, watchers: new Set() };
      created.done = Promise.resolve()
        .then(() =>
          start((progress) => {
            created.last = progress;
            for (const watch of created.watchers) watch(progress);
          }),
        )
        .finally(() => {
          if (this.flights.get(key) === created) this.flights.delete(key);
        });
      created.done.catch(() => {});
      this.flights.set(key, created);
      flight = created;
    }
    const joined = flight;
    if (onProgress !== undefined) {
      if (joined.last !== undefined) onProgress(joined.last);
      joined.watchers.add(onProgress);
    }
    const detach = (): void => {
      if (onProgress !== undefined) joined.watchers.delete(onProgress);
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
}
