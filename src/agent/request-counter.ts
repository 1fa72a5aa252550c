// Requests running or waiting, per model: the queue lengths of heartbeats, GetStatus and metrics.

export class RequestCounter {
  private readonly counts = new Map<string, number>();
  private total_ = 0;

  /** Counts a request for `key` until the returned function is called. */
  begin(key: string): () => void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.total_++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.counts.get(key) ?? 1) - 1;
      if (n <= 0) this.counts.delete(key);
      else this.counts.set(key, n);
      this.total_--;
    };
  }

  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  get total(): number {
    return this.total_;
  }

  all(): Map<string, number> {
    return new Map(this.counts);
  }
}
