// The agent's pinned host pool (DESIGN.md §4): one memfd mapping, pre-faulted once at start,
// registered with CUDA when a GPU is present (mlock'ed otherwise), handed out in 4096-aligned
// regions, one per model. The engine worker maps a region through `hostMemory()`.
import { nativeBinding, type NativePool, type NativePoolStats } from "./binding.js";
import { PoolExhaustedError, fromNative } from "./native-error.js";
import { ALIGNMENT, checkChoice, checkOptionalInt, checkPositive, checkString, checkUint } from "./validate.js";

/** How the pool's pages are kept resident: asked for ... */
export type PinRequest = "auto" | "cuda" | "mlock" | "none";
/** ... and what was achieved. */
export type Pinning = "cuda" | "mlock" | "none";

export interface PinnedPoolOptions {
  /** Size in bytes (rounded up to 4096). */
  bytes: number;
  /** Threads that pre-fault the pages (default: one per core, at most 32). */
  prefaultThreads?: number;
  /**
   * "auto" (default): cudaHostRegister when CUDA is available, else mlock, else nothing;
   * "cuda": fail unless the pool can be registered; "mlock"; "none".
   */
  pin?: PinRequest;
  /** CUDA device made current while registering (default 0). */
  device?: number;
  /** memfd name, visible in /proc/<pid>/fd (default "thaw-pool"). */
  name?: string;
}

export type PoolStats = NativePoolStats;

/** What the engine worker needs to map a region (thaw.engine.v1.HostMemory). */
export interface HostMemoryRef {
  path: string;
  offset: number;
  length: number;
}

const registry = new FinalizationRegistry<{ pool: PinnedPool; offset: number }>((held) => {
  held.pool.releaseAt(held.offset); // a region nobody can reach any more goes back to the pool
});

/** A pinned, shareable host pool. Call dispose() when done; a finalizer is only a safety net. */
export class PinnedPool {
  readonly bytes: number;
  /** The memfd, and a path another process of the same user can open to map it. */
  readonly fd: number;
  readonly path: string;
  readonly pinning: Pinning;
  /** Why the pinning is what it is (CUDA missing, mlock limit, ...). */
  readonly pinningDetail: string;
  readonly hugePages: boolean;
  readonly prefaultSeconds: number;
  readonly prefaultThreads: number;
  readonly pinSeconds: number;
  private native: NativePool | undefined;
  private readonly live = new Map<number, WeakRef<PoolRegion>>();

  private constructor(native: NativePool) {
    this.native = native;
    const info = native.info();
    this.bytes = info.bytes;
    this.fd = info.fd;
    this.path = info.path;
    this.pinning = info.pinning;
    this.pinningDetail = info.pinningDetail;
    this.hugePages = info.hugePages;
    this.prefaultSeconds = info.prefaultSeconds;
    this.prefaultThreads = info.prefaultThreads;
    this.pinSeconds = info.pinSeconds;
  }

  /** Allocates, pre-faults and pins the pool (seconds for many GiB; off the main thread). */
  static async create(options: PinnedPoolOptions): Promise<PinnedPool> {
    if (typeof options !== "object" || options === null) throw new TypeError("options must be an object");
    checkPositive(options.bytes, "bytes");
    checkOptionalInt(options.prefaultThreads, "prefaultThreads", 0, 1024);
    checkOptionalInt(options.device, "device", 0, 1023);
    const pin = options.pin === undefined ? "auto" : checkChoice(options.pin, "pin", ["auto", "cuda", "mlock", "none"] as const);
    const name = options.name === undefined ? "thaw-pool" : checkString(options.name, "name");
    try {
      const native = await nativeBinding().createPool({
        bytes: options.bytes,
        prefaultThreads: options.prefaultThreads ?? 0,
        pin,
        device: options.device ?? 0,
        name,
      });
      return new PinnedPool(native);
    } catch (err) {
      throw fromNative(err);
    }
  }

  get disposed(): boolean {
    return this.native === undefined;
  }

  /** A region of at least `bytes` (rounded up to 4096); throws PoolExhaustedError when none fits. */
  allocate(bytes: number): PoolRegion {
    const region = this.tryAllocate(bytes);
    if (region === undefined) throw new PoolExhaustedError(bytes, this.stats().largestFree);
    return region;
  }

  /** Like allocate, but undefined when no free extent is large enough (evict, then retry). */
  tryAllocate(bytes: number): PoolRegion | undefined {
    checkPositive(bytes, "bytes");
    const got = this.live_().allocate(bytes);
    if (got === null) return undefined;
    const region = new PoolRegion(this, got.offset, got.length);
    this.live.set(got.offset, new WeakRef(region));
    registry.register(region, { pool: this, offset: got.offset }, region);
    return region;
  }

  stats(): PoolStats {
    return this.live_().stats();
  }

  /** The live regions, by offset. */
  regions(): PoolRegion[] {
    const out: PoolRegion[] = [];
    for (const ref of this.live.values()) {
      const r = ref.deref();
      if (r !== undefined) out.push(r);
    }
    return out.sort((a, b) => a.offset - b.offset);
  }

  /** Unmaps the pool (once no load still runs in it); every region's views become empty. */
  dispose(): void {
    if (this.native === undefined) return;
    for (const ref of this.live.values()) ref.deref()?.markReleased();
    this.live.clear();
    this.native.dispose();
    this.native = undefined;
  }

  /** @internal */
  nativePool(): NativePool {
    return this.live_();
  }

  /** @internal Returns a region (PoolRegion.release and the finalizer call this). */
  releaseAt(offset: number): void {
    if (this.native === undefined || !this.live.has(offset)) return;
    this.live.delete(offset);
    this.native.release(offset);
  }

  /** @internal */
  viewOf(offset: number, length: number): ArrayBuffer {
    return this.live_().buffer(offset, length);
  }

  private live_(): NativePool {
    if (this.native === undefined) throw new Error("the pinned pool has been disposed");
    return this.native;
  }
}

/** A region of the pool: where one model's chunks live. */
export class PoolRegion {
  private released_ = false;
  private buffer_: ArrayBuffer | undefined;

  /** @internal Made by PinnedPool.allocate. */
  constructor(
    readonly pool: PinnedPool,
    /** Offset inside the pool (and inside the memfd), a multiple of 4096. */
    readonly offset: number,
    /** Length in bytes, a multiple of 4096. */
    readonly length: number,
  ) {}

  get released(): boolean {
    return this.released_ || this.pool.disposed;
  }

  /** The region's memory as an external ArrayBuffer (no copy). Detached once the region is released. */
  get buffer(): ArrayBuffer {
    this.check();
    this.buffer_ ??= this.pool.viewOf(this.offset, this.length);
    return this.buffer_;
  }

  /** A Uint8Array view of [offset, offset + length) inside the region (no copy). */
  bytes(offset = 0, length = this.length - offset): Uint8Array {
    checkUint(offset, "offset");
    checkUint(length, "length");
    if (offset + length > this.length) throw new RangeError(`range [${offset}, ${offset + length}) exceeds the region's ${this.length} bytes`);
    return new Uint8Array(this.buffer, offset, length);
  }

  /** Where another process maps this region (thaw.engine.v1.HostMemory), `offset` bytes in. */
  hostMemory(offset = 0, length = this.length - offset): HostMemoryRef {
    this.check();
    checkUint(offset, "offset");
    checkUint(length, "length");
    if (offset % ALIGNMENT !== 0) throw new RangeError("a mapped offset must be a multiple of 4096");
    if (offset + length > this.length) throw new RangeError("range exceeds the region");
    return { path: this.pool.path, offset: this.offset + offset, length };
  }

  /**
   * Returns the region to the pool; its views become empty at once. Safe to call twice. While a
   * load still reads into the region (or copies out of it), the pool takes it back only when that
   * load ends: native threads never write into memory that has been handed out again.
   */
  release(): void {
    if (this.released_) return;
    this.released_ = true;
    this.buffer_ = undefined;
    registry.unregister(this);
    this.pool.releaseAt(this.offset);
  }

  dispose(): void {
    this.release();
  }

  /** @internal */
  markReleased(): void {
    this.released_ = true;
    this.buffer_ = undefined;
    registry.unregister(this);
  }

  private check(): void {
    if (this.released) throw new Error(`pool region at ${this.offset} has been released`);
  }
}
