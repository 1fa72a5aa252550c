// A small unbounded async queue: producers push, one consumer iterates; `close` ends the
// iteration, `fail` ends it with an error. Used to merge the n choices of a request into one stream.
export class Channel<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: ((r: IteratorResult<T>) => void) | undefined;
  private failWaiting: ((err: unknown) => void) | undefined;
  private done = false;
  private error: { err: unknown } | undefined;

  push(item: T): void {
    if (this.done) return;
    const w = this.waiting;
    if (w !== undefined) {
      this.waiting = this.failWaiting = undefined;
      w({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    const w = this.waiting;
    this.waiting = this.failWaiting = undefined;
    w?.({ value: undefined, done: true });
  }

  fail(err: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = { err };
    const f = this.failWaiting;
    this.waiting = this.failWaiting = undefined;
    f?.(err);
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.items.length > 0) return Promise.resolve({ value: this.items.shift() as T, done: false });
        if (this.error !== undefined) return Promise.reject(this.error.err);
        if (this.done) return Promise.resolve({ value: undefined, done: true });
        return new Promise<IteratorResult<T>>((resolve, reject) => {
          this.waiting = resolve;
          this.failWaiting = reject;
        });
      },
      return: () => {
        this.done = true;
        this.items.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
