// Admission: a bound on sequences in flight per agent, and one bounded FIFO of requests waiting
// for a slot. When the queue is full a request is refused at once with RESOURCE_EXHAUSTED and a
// retry-after hint (the edge turns it into 429 + Retry-After).
import { Code, ConnectError } from "@connectrpc/connect";

export interface AdmissionOptions {
  /** Sequences (choices) in flight per agent before requests queue. */
  maxInflightPerAgent: number;
  /** Requests that may wait for a slot; one more is refused. */
  maxQueue: number;
}

interface Waiter {
  wake: () => void;
}

export class Admission {
  private readonly inflightByAgent = new Map<string, number>();
  private readonly queue: Waiter[] = [];
  /** Recent request durations (EWMA, ms) for the retry-after estimate. */
  private averageMs = 1000;

  constructor(readonly options: AdmissionOptions) {}

  inflight(agentId: string): number {
    return this.inflightByAgent.get(agentId) ?? 0;
  }

  hasRoom(agentId: string, count: number): boolean {
    return this.inflight(agentId) + count <= Math.max(this.options.maxInflightPerAgent, count);
  }

  /** Takes `count` slots on the agent if they are free. */
  tryAcquire(agentId: string, count: number): boolean {
    if (!this.hasRoom(agentId, count)) return false;
    this.inflightByAgent.set(agentId, this.inflight(agentId) + count);
    return true;
  }

  /** Gives slots back and lets the longest-waiting request look again. */
  release(agentId: string, count: number, durationMs?: number): void {
    const left = this.inflight(agentId) - count;
    if (left > 0) this.inflightByAgent.set(agentId, left);
    else this.inflightByAgent.delete(agentId);
    if (durationMs !== undefined) this.averageMs = 0.9 * this.averageMs + 0.1 * durationMs;
    this.wakeOne();
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Seconds a refused client should wait: the queue's drain time at the recent pace, 1–60 s. */
  retryAfterSeconds(): number {
    const capacity = Math.max(1, this.options.maxInflightPerAgent);
    const estimate = ((this.queue.length + 1) * this.averageMs) / capacity / 1000;
    return Math.min(60, Math.max(1, Math.ceil(estimate)));
  }

  /** The error for a full queue (or a queue of size 0 and no slot). */
  full(): ConnectError {
    const after = this.retryAfterSeconds();
    return new ConnectError(
      `server is at capacity: ${this.queue.length} requests already waiting; retry after ${after}s`,
      Code.ResourceExhausted,
      { "retry-after": String(after) },
    );
  }

  /**
   * Waits (FIFO) until a slot is released somewhere or `wakeAll` is called, then returns so the
   * caller can place again. Throws `full()` when the queue is full, or the signal's reason.
   * `front`: a request that was woken but found no slot goes back to the head, keeping its turn.
   */
  async wait(signal: AbortSignal, front = false): Promise<void> {
    if (!front && this.queue.length >= this.options.maxQueue) throw this.full();
    signal.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        wake: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        const i = this.queue.indexOf(waiter);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      if (front) this.queue.unshift(waiter);
      else this.queue.push(waiter);
    });
  }

  /** Wakes the head of the queue. */
  wakeOne(): void {
    this.queue.shift()?.wake();
  }

  /** Wakes everyone (an agent appeared, or placement inputs changed). */
  wakeAll(): void {
    for (const w of this.queue.splice(0)) w.wake();
  }
}
