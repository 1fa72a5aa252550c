// Admission: a bound on sequences in flight per agent, and one bounded FIFO of requests waiting
// to be placed. When the queue is full a request is refused at once with RESOURCE_EXHAUSTED and a
// retry-after hint (the edge turns it into 429 + Retry-After).
//
// Waiting requests differ in what they can use (another model, agents it already failed on, room
// on a GPU), so a request that can be placed now never waits behind one that cannot: whenever
// something changes (slots released, an agent appeared, the periodic sweep) every waiter, oldest
// first, tries again, and each takes what it can. An earlier waiter always tries before a later
// one, and a newcomer tries only after every waiter has had its turn.
import { Code, ConnectError } from "@connectrpc/connect";

export interface AdmissionOptions {
  /** Sequences (choices) in flight per agent before requests queue. */
  maxInflightPerAgent: number;
  /** Requests that may wait; one more is refused. */
  maxQueue: number;
}

/**
 * One try at placing a request: the placement (having taken its slots with `tryAcquire`), or
 * undefined to keep waiting. Synchronous, so no other request can take the slots between the look
 * and the take. Throwing ends the wait with that error.
 */
export type Attempt<T> = () => T | undefined;

interface Waiter {
  /** Tries once; true when the waiter is done (placed or failed) and leaves the queue. */
  attempt: () => boolean;
  /** Waiters of one kind (see admit): once one of them must wait in a pass, the later ones must too. */
  kind: string | undefined;
}

export class Admission {
  private readonly inflightByAgent = new Map<string, number>();
  private readonly queue: Waiter[] = [];
  /** Recent request durations (EWMA, ms) for the retry-after estimate. */
  private averageMs = 1000;
  private retrying = false;
  private retryAgain = false;

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

  /** Gives slots back and lets the waiting requests try again. */
  release(agentId: string, count: number, durationMs?: number): void {
    const left = this.inflight(agentId) - count;
    if (left > 0) this.inflightByAgent.set(agentId, left);
    else this.inflightByAgent.delete(agentId);
    if (durationMs !== undefined) this.averageMs = 0.9 * this.averageMs + 0.1 * durationMs;
    this.retryWaiting();
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
   * Admits a request: after every waiting request has tried again, runs `attempt`; while it returns
   * undefined the request waits (FIFO) and `attempt` runs again on every change. Resolves with the
   * placement; rejects with `full()` when the queue is full, with what `attempt` threw, or with the
   * signal's reason. `kind`: requests of one kind (same model, slots and constraints, arrived in
   * order) succeed or wait alike, so a pass skips the rest of a kind once one of it had to wait — a
   * pass only takes slots, never frees them, and a long queue then costs one try per kind.
   */
  async admit<T>(attempt: Attempt<T>, signal: AbortSignal, kind?: string): Promise<T> {
    signal.throwIfAborted();
    if (this.queue.length > 0) this.retryWaiting();
    const now = attempt();
    if (now !== undefined) return now;
    if (this.queue.length >= this.options.maxQueue) throw this.full();
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const leave = () => {
        settled = true;
        const i = this.queue.indexOf(waiter);
        if (i >= 0) this.queue.splice(i, 1);
        signal.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        leave();
        reject(signal.reason);
      };
      const waiter: Waiter = {
        kind,
        attempt: () => {
          if (settled) return true;
          let placed: T | undefined;
          try {
            placed = attempt();
          } catch (err) {
            leave();
            reject(err);
            return true;
          }
          if (placed === undefined) return false;
          leave();
          resolve(placed);
          return true;
        },
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.queue.push(waiter);
    });
  }

  /** Every waiter, oldest first, tries again (something changed: slots, agents, memory). */
  retryWaiting(): void {
    if (this.retrying) {
      this.retryAgain = true; // a waiter's try released something: go round once more after this pass
      return;
    }
    this.retrying = true;
    try {
      do {
        this.retryAgain = false;
        const waiting = new Set<string>();
        for (const waiter of [...this.queue]) {
          if (waiter.kind !== undefined && waiting.has(waiter.kind)) continue;
          if (!waiter.attempt() && waiter.kind !== undefined) waiting.add(waiter.kind);
        }
      } while (this.retryAgain);
    } finally {
      this.retrying = false;
    }
  }
}
