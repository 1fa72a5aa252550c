// Stop strings: generation ends before the first occurrence of any of them. Text that could still
// turn out to be the start of a stop string is held back until the next token decides it, so a
// client never sees part of a stop string it should not have seen.

export interface StopResult {
  /** Text safe to emit now. */
  text: string;
  /** The stop string that matched; the sequence is over. */
  stopped?: string;
}

export class StopStringMatcher {
  private readonly stops: string[];
  private readonly longest: number;
  private pending = "";
  private done = false;

  constructor(
    stops: readonly string[],
    private readonly includeStopInOutput = false,
  ) {
    this.stops = stops.filter((s) => s.length > 0);
    this.longest = Math.max(0, ...this.stops.map((s) => s.length));
  }

  /** True when there is nothing to match (every text passes straight through). */
  get empty(): boolean {
    return this.stops.length === 0;
  }

  /** Feeds newly decoded text. */
  push(text: string): StopResult {
    if (this.done) return { text: "" };
    if (this.stops.length === 0) return { text };
    const buffer = this.pending + text;
    let at = -1;
    let which = "";
    for (const stop of this.stops) {
      const i = buffer.indexOf(stop);
      if (i !== -1 && (at === -1 || i < at || (i === at && stop.length > which.length))) {
        at = i;
        which = stop;
      }
    }
    if (at !== -1) {
      this.done = true;
      this.pending = "";
      return { text: buffer.slice(0, this.includeStopInOutput ? at + which.length : at), stopped: which };
    }
    const hold = this.heldSuffix(buffer);
    this.pending = buffer.slice(buffer.length - hold);
    return { text: buffer.slice(0, buffer.length - hold) };
  }

  /** At the end of the sequence (no stop string matched): the text held back. */
  flush(): string {
    const rest = this.pending;
    this.pending = "";
    return rest;
  }

  /** Length of the longest suffix of `buffer` that is a proper prefix of some stop string. */
  private heldSuffix(buffer: string): number {
    for (let k = Math.min(this.longest - 1, buffer.length); k > 0; k--) {
      const tail = buffer.slice(buffer.length - k);
      if (this.stops.some((s) => s.startsWith(tail))) return k;
    }
    return 0;
  }
}
