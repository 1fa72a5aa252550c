// The DRAM tier (DESIGN.md §4, cache level 1): models held in the native pinned pool, one region
// per model, least recently used model evicted first. A model is never evicted while it is in use
// (a CPU engine serves it straight from the pool, or a copy to the GPU reads it) or while it is
// loading (its region is not in the table until the load finishes).
import { Code, ConnectError } from "@connectrpc/connect";
import type { PinnedPool, PoolRegion } from "../native/index.js";

export interface DramEntry {
  key: string;
  region: PoolRegion;
  /** MemoryDescriptor.chunk_offsets: chunk i lies at region offset chunkOffsets[i]. */
  chunkOffsets: number[];
  /** Bytes of the checkpoint (the region may be a little larger). */
  bytes: number;
  /** Order of last use (larger: more recent). */
  lastUsed: number;
  uses: number;
}

export interface DramTierOptions {
  /**
   * Frees pool space held by something else (a CPU engine serving a model straight from the pool):
   * `inUse(key)` tells which models hold their region; true if it freed any.
   */
  reclaim?: (inUse: (key: string) => boolean) => Promise<boolean>;
  onEvict?: (key: string, bytes: number) => void;
}

/** FAILED_PRECONDITION for a model that can never pass through the pool. */
export function tooLargeForPool(bytes: number, poolBytes: number, key = "the model"): ConnectError {
  return new ConnectError(
    `${key} needs ${bytes} bytes of the pinned pool, which holds ${poolBytes} bytes (--dram-bytes); it cannot be loaded on this agent`,
    Code.FailedPrecondition,
  );
}

export class DramTier {
  private readonly entries = new Map<string, DramEntry>();
  /** Regions handed out and not yet put (loads in progress). */
  private loadingBytes = 0;
  private clock = 0;

  constructor(
    readonly pool: PinnedPool | undefined,
    private readonly options: DramTierOptions = {},
  ) {}

  get(key: string): DramEntry | undefined {
    return this.entries.get(key);
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  touch(key: string): void {
    const e = this.entries.get(key);
    if (e !== undefined) e.lastUsed = ++this.clock;
  }

  /**
   * A region for `bytes`, evicting least recently used models that are not in use; when that is
   * not enough, asks `reclaim` (engines give back models they serve from the pool) and tries again.
   */
  async allocate(bytes: number): Promise<PoolRegion> {
    const pool = this.requirePool();
    // Never fits, whatever leaves: a clear refusal (not "busy, retry"), before anything is evicted.
    if (bytes > pool.bytes) throw tooLargeForPool(bytes, pool.bytes);
    for (;;) {
      const region = pool.tryAllocate(bytes);
      if (region !== undefined) {
        this.loadingBytes += region.length;
        return region;
      }
      if (this.evictOne()) continue;
      if (this.options.reclaim !== undefined && (await this.options.reclaim((key) => (this.entries.get(key)?.uses ?? 0) > 0))) continue;
      const stats = pool.stats();
      throw new ConnectError(
        `the pinned pool has no room for ${bytes} bytes (largest free extent ${stats.largestFree} of ${stats.bytes}); every model in it is in use`,
        Code.ResourceExhausted,
      );
    }
  }

  /**
   * Records a loaded region (allocated with allocate) as the DRAM copy of `key`. A copy it replaces
   * is released now, or, while something still uses it, when the last use ends.
   */
  put(key: string, region: PoolRegion, chunkOffsets: number[], bytes: number): DramEntry {
    this.loadingBytes -= region.length;
    const old = this.entries.get(key);
    if (old !== undefined && old.uses === 0) this.drop(old);
    const entry: DramEntry = { key, region, chunkOffsets, bytes, lastUsed: ++this.clock, uses: 0 };
    this.entries.set(key, entry);
    return entry;
  }

  /** Gives back a region whose load failed. */
  abandon(region: PoolRegion): void {
    this.loadingBytes -= region.length;
    region.release();
  }

  /** Marks the model in use until the returned function is called. */
  use(key: string): () => void {
    const entry = this.entries.get(key);
    if (entry === undefined) throw new Error(`${key} is not in the DRAM tier`);
    entry.uses++;
    entry.lastUsed = ++this.clock;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      entry.uses--;
      entry.lastUsed = ++this.clock;
      // A copy replaced while in use (put) leaves the pool with its last use.
      if (entry.uses === 0 && this.entries.get(entry.key) !== entry) entry.region.release();
    };
  }

  /** Drops a model from the pool; false when absent; FAILED_PRECONDITION when in use. */
  evict(key: string): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined) return false;
    if (entry.uses > 0) throw new ConnectError(`${key} is in use in the DRAM tier`, Code.FailedPrecondition);
    this.drop(entry);
    this.options.onEvict?.(key, entry.bytes);
    return true;
  }

  private evictOne(): boolean {
    let victim: DramEntry | undefined;
    for (const e of this.entries.values()) {
      if (e.uses > 0) continue;
      if (victim === undefined || e.lastUsed < victim.lastUsed) victim = e;
    }
    if (victim === undefined) return false;
    this.drop(victim);
    this.options.onEvict?.(victim.key, victim.bytes);
    return true;
  }

  private drop(entry: DramEntry): void {
    this.entries.delete(entry.key);
    entry.region.release();
  }

  /** Bytes of the pool: in all, holding models, being loaded, free. */
  stats(): { totalBytes: number; usedBytes: number; loadingBytes: number; freeBytes: number } {
    if (this.pool === undefined || this.pool.disposed) return { totalBytes: 0, usedBytes: 0, loadingBytes: 0, freeBytes: 0 };
    const s = this.pool.stats();
    return { totalBytes: s.bytes, usedBytes: s.used - this.loadingBytes, loadingBytes: this.loadingBytes, freeBytes: s.free };
  }

  private requirePool(): PinnedPool {
    if (this.pool === undefined || this.pool.disposed) {
      throw new ConnectError("this agent has no pinned pool (--dram-bytes 0)", Code.FailedPrecondition);
    }
    return this.pool;
  }
}
