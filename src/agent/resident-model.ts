// A model resident in an engine worker, as the agent sees it: what it holds of its device's budget
// (weights plus a KV floor), when it last served, and the Infer streams running on it. A model that
// is leaving (being unloaded or evicted) starts no new stream; one lost with its worker ends every
// stream with the worker's error. A LoadModel may announce a use (infer_follows): the scheduler sends
// the request's Infer right after it, so until that stream opens (or USE_EXPECTED_MS pass) the model is busy for
// eviction — else another model's load could evict it in between, and two models sharing too little
// room would evict each other forever. (Only the agent's own decisions see the announcement; the
// scheduler knows its requests itself, and heartbeats report streams.)
import type { CheckpointRef } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";

export interface ResidentModelInit {
  key: string;
  ref: CheckpointRef;
  /** Bytes of its weights on the device. */
  weightBytes: number;
  /** KV cache bytes guaranteed to it (LoadWeightsRequest.kv_cache_bytes), held in the budget too. */
  floorBytes: number;
  /** Gives back what the engine holds of other tiers (the DRAM region a CPU engine maps). */
  release: () => void;
}

/** How long a LoadModel's announced use keeps the model from being evicted before its stream opens. */
export const USE_EXPECTED_MS = 10_000;

export class ResidentModel {
  readonly key: string;
  readonly ref: CheckpointRef;
  readonly weightBytes: number;
  readonly floorBytes: number;
  /** performance.now() of its last use: monotonic and finer than a millisecond, so LRU order is exact. */
  private lastUsedAt = performance.now();
  private readonly streams = new Set<AbortController>();
  private leavingNow = false;
  /** performance.now() until which a use announced by LoadModel holds the model (0: none). */
  private expectedUntil = 0;
  private released = false;
  private readonly releaseHold: () => void;

  constructor(init: ResidentModelInit) {
    this.key = init.key;
    this.ref = init.ref;
    this.weightBytes = init.weightBytes;
    this.floorBytes = init.floorBytes;
    this.releaseHold = init.release;
  }

  /** Bytes it holds in its device's budget. */
  get bytes(): number {
    return this.weightBytes + this.floorBytes;
  }

  /** Infer streams running on it. */
  get running(): number {
    return this.streams.size;
  }

  /** A use announced by LoadModel has not begun yet (and has not lapsed). */
  get useAnnounced(): boolean {
    return this.expectedUntil > 0 && performance.now() < this.expectedUntil;
  }

  /** Not to be evicted: streams run on it, or its announced use has not begun. */
  get busy(): boolean {
    return this.streams.size > 0 || this.useAnnounced;
  }

  get lastUsed(): number {
    return this.lastUsedAt;
  }

  /** Being unloaded or evicted: no new stream starts on it. */
  get leaving(): boolean {
    return this.leavingNow;
  }

  /** Milliseconds since it last served (0 while a stream runs). */
  idleMs(): number {
    return this.streams.size > 0 ? 0 : Math.max(0, Math.round(performance.now() - this.lastUsedAt));
  }

  /** Counts a use (a LoadModel that found it resident). */
  touch(): void {
    this.lastUsedAt = performance.now();
  }

  /** Counts a use and holds the model for the stream that follows (LoadModelRequest.infer_follows). */
  expectUse(): void {
    this.lastUsedAt = performance.now();
    this.expectedUntil = this.lastUsedAt + USE_EXPECTED_MS;
  }

  /** Registers a stream; false when the model is leaving. */
  openStream(controller: AbortController): boolean {
    if (this.leavingNow) return false;
    this.streams.add(controller);
    this.lastUsedAt = performance.now();
    this.expectedUntil = 0; // the announced use has begun
    return true;
  }

  closeStream(controller: AbortController): void {
    this.streams.delete(controller);
    this.lastUsedAt = performance.now();
  }

  /** From now on no stream starts on it. */
  markLeaving(): void {
    this.leavingNow = true;
  }

  /** It has left its worker: running streams end with `error` (when given), other tiers' holds are given back. */
  close(error?: Error): void {
    this.leavingNow = true;
    if (error !== undefined) for (const stream of this.streams) stream.abort(error);
    this.streams.clear();
    if (!this.released) {
      this.released = true;
      this.releaseHold();
    }
  }
}
