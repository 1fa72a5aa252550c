// The scheduler's timers behind an interface, so it can run in virtual time (bench/sim drives it
// with a simulated clock) as well as on Node's timers. Only what the scheduler uses: one-shot
// timers that can be restarted (progress timeouts) and cleared.

/** A pending timer. */
export interface Timer {
  /** Restarts the countdown from now, with the same delay. */
  refresh(): void;
}

export interface Timers {
  setTimeout(callback: () => void, ms: number): Timer;
  clearTimeout(timer: Timer | undefined): void;
}

/** Node's timers; they never keep the process alive on their own. */
export const realTimers: Timers = {
  setTimeout(callback, ms) {
    const t = setTimeout(callback, ms);
    t.unref();
    return t;
  },
  clearTimeout(timer) {
    if (timer !== undefined) clearTimeout(timer as NodeJS.Timeout);
  },
};
