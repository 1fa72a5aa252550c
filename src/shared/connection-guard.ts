// One connection's bound on doing nothing: it must start its first request within one deadline,
// and every time it has no request in flight it must start another within the idle deadline, or
// it is closed. The deadlines are absolute (bytes that are not a request, such as a trickle of
// blank lines, do not extend them), and a request in flight — however long its response streams,
// however silent it is while a model loads — stops the clock.
export class ConnectionGuard {
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private draining = false;
  private closed = false;

  /** `close` ends the connection (gracefully where the protocol allows). */
  constructor(
    private readonly close: () => void,
    firstRequestWithinMs: number,
    private readonly idleMs: number,
  ) {
    this.arm(firstRequestWithinMs);
  }

  /** True once the connection may carry no more requests (it was drained, or timed out). */
  get ending(): boolean {
    return this.draining || this.closed;
  }

  /**
   * The protocol times the first request itself from its first byte (HTTP/1.1's headers timeout,
   * which answers 408): the first deadline is lifted; idle deadlines still follow each request.
   */
  firstRequestTimedByProtocol(): void {
    if (this.inFlight === 0) this.disarm();
  }

  /** A request started on the connection. */
  begin(): void {
    this.inFlight++;
    this.disarm();
  }

  /** A request ended (its response finished or was cut). */
  end(): void {
    if (--this.inFlight > 0) return;
    if (this.draining) this.finish();
    else this.arm(this.idleMs);
  }

  /** Closes the connection now if it is idle, else as soon as its requests have ended. */
  drain(): void {
    this.draining = true;
    if (this.inFlight === 0) this.finish();
  }

  /** The connection closed: nothing more to watch. */
  dispose(): void {
    this.closed = true;
    this.disarm();
  }

  private arm(ms: number): void {
    this.disarm();
    this.timer = setTimeout(() => {
      if (this.inFlight === 0) this.finish();
    }, ms);
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.disarm();
    this.close();
  }
}
