// Virtual time for the simulator: a clock and the scheduler's Timers over one queue of events.
// `run` takes the earliest event, moves the clock to its time, runs it, and lets every promise
// it settled run to completion (the scheduler is async) before taking the next one — so a year
// of simulated time costs what its events cost, not what its seconds would.
import type { Timer, Timers } from "../../src/orchestrator/scheduler/timers.js";

interface Event {
  at: number;
  /** Order of scheduling: events at one time run in the order they were scheduled. */
  seq: number;
  run: () => void;
  cancelled: boolean;
}

export class VirtualClock {
  private time = 0;
  private seq = 0;
  private readonly heap: Event[] = [];
  /** Events run so far. */
  executed = 0;

  constructor(startMs = 0) {
    this.time = startMs;
  }

  readonly now = (): number => this.time;

  /** Runs `fn` at `at` (ms; not before now). The handle cancels it. */
  at(at: number, fn: () => void): { cancel(): void } {
    const e: Event = { at: Math.max(at, this.time), seq: this.seq++, run: fn, cancelled: false };
    this.push(e);
    return { cancel: () => void (e.cancelled = true) };
  }

  after(ms: number, fn: () => void): { cancel(): void } {
    return this.at(this.time + ms, fn);
  }

  /** The scheduler's timers on this clock. */
  readonly timers: Timers = {
    setTimeout: (callback, ms) => {
      let handle = this.after(ms, callback);
      const timer: Timer & { handle: () => { cancel(): void } } = {
        refresh: () => {
          handle.cancel();
          handle = this.after(ms, callback);
        },
        handle: () => handle,
      };
      return timer;
    },
    clearTimeout: (timer) => {
      (timer as { handle?: () => { cancel(): void } } | undefined)?.handle?.().cancel();
    },
  };

  get pending(): number {
    return this.heap.length;
  }

  /** Runs events in time order until none is left before `untilMs` (or none at all). */
  async run(untilMs = Infinity): Promise<void> {
    await settle();
    while (this.heap.length > 0 && this.heap[0].at <= untilMs) {
      const e = this.pop();
      if (e.cancelled) continue;
      this.time = e.at;
      this.executed++;
      e.run();
      await settle();
    }
    if (Number.isFinite(untilMs)) this.time = Math.max(this.time, untilMs);
  }

  private push(e: Event): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  private pop(): Event {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l], h[m])) m = l;
        if (r < h.length && before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

function before(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Resolves once every promise already settled and everything chained on them has run (nothing here does I/O). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
