// A simulated agent: the AgentService calls the scheduler makes (LoadModel, Infer, UnloadModel,
// DownloadChunks, GetStatus), answered in virtual time from the hardware figures, with the real
// agent's rules for the GPU tier (README, "The GPU tier"): one device with a byte budget, each
// resident model holding its weights plus a KV floor; room made by evicting the least recently
// used idle models down to DRAM (never one with a request running, nor one just loaded for the
// Infer that follows); a load that finds only busy models waits for room; Infer on a model that
// is not resident answers FAILED_PRECONDITION "not loaded". Tiers are inclusive: the pinned DRAM
// pool holds every resident model and LRU others, the disk holds what the pool does and more.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { AgentStatusSchema, Tier, type AgentStatus } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import type { CheckpointRef } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { FinishReason } from "../../src/gen/thaw/engine/v1/engine_pb.js";
import { keyOf } from "../../src/orchestrator/scheduler/model-refs.js";
import { speedOf, type AgentHardware } from "./hardware.js";
import type { VirtualClock } from "./virtual-clock.js";

/** What every simulated agent knows of the models (the store's index, in effect). */
export interface Catalog {
  ref(key: string): CheckpointRef;
  bytes(key: string): number;
}

/** The token counts of a request, looked up by its request id (the simulator's side channel). */
export type RequestShape = (requestId: string) => { promptTokens: number; outputTokens: number };

export interface AgentTally {
  coldStarts: Record<"dram" | "disk" | "remote", number>;
  /** Seconds the GPU held at least one model. */
  gpuSeconds: number;
  /** Byte-seconds of the GPU budget in use. */
  gpuByteSeconds: number;
  evictions: number;
}

const DEVICE = "cuda:0";
/** How long a model loaded for the Infer that follows is held against other loads (the agent's 10 s). */
const HOLD_MS = 10_000;
/** A load waiting for room reports this often, so the scheduler's progress timeout sees it alive. */
const WAIT_REPORT_MS = 20_000;

interface Resident {
  key: string;
  bytes: number;
  running: number;
  lastUseMs: number;
  holdUntilMs: number;
  loading: boolean;
}

interface Sequence {
  key: string;
  remaining: number;
  done: () => void;
}

export class SimAgent {
  readonly address: string;
  readonly tally: AgentTally = { coldStarts: { dram: 0, disk: 0, remote: 0 }, gpuSeconds: 0, gpuByteSeconds: 0, evictions: 0 };
  private readonly gpu = new Map<string, Resident>();
  private gpuUsed = 0;
  /** LRU: the first key is the least recently used. */
  private readonly dram = new Map<string, number>();
  private dramUsed = 0;
  private readonly disk = new Map<string, number>();
  private diskUsed = 0;
  private readonly loading = new Map<string, Promise<void>>();
  /** Loads waiting for room: woken when a request ends or a model leaves. */
  private roomWaiters: (() => void)[] = [];
  private accountedAt: number;
  private heartbeatDue = false;
  /** Requests running on the agent (prefill or decode). */
  private active = 0;
  // Decode: sequences step together; each round is one step of every model with sequences.
  private readonly decoding = new Set<Sequence>();
  private readonly batch = new Map<string, number>();
  private advancedAt: number;
  private prefillFreeAt = 0;
  private nextFinish: { cancel(): void } | undefined;

  constructor(
    readonly id: string,
    private readonly hw: AgentHardware,
    private readonly clock: VirtualClock,
    private readonly catalog: Catalog,
    private readonly shape: RequestShape,
    /** Delivers a heartbeat to the scheduler. */
    private readonly send: (status: AgentStatus) => void,
    /** Offset of this agent's heartbeat ticks within the second, ms. */
    private readonly phaseMs: number,
    /** Agents by address, for peers. */
    private readonly peers: (address: string) => SimAgent | undefined,
  ) {
    this.address = `${id}.sim:50071`;
    this.accountedAt = clock.now();
    this.advancedAt = clock.now();
  }

  /** Puts a model on the disk tier before the run (what an operator's prefetch would do). */
  seedDisk(key: string): void {
    this.toDisk(key, this.catalog.bytes(key));
  }

  holdsOnDisk(key: string): boolean {
    return this.disk.has(key);
  }

  // ─── AgentService ──────────────────────────────────────────────────────────────────────────────

  async *loadModel(req: { ref?: CheckpointRef; peers: string[]; inferFollows: boolean }): AsyncGenerator<object> {
    const key = keyOf(req.ref!);
    const bytes = this.catalog.bytes(key);
    const floor = this.hw.kvFloorBytes;
    const budget = this.hw.gpuBudgetBytes;
    if (bytes + floor > budget || bytes > this.hw.dramBytes) {
      throw new ConnectError(`model ${key} needs ${bytes} B, more than this agent can hold`, Code.FailedPrecondition);
    }
    for (;;) {
      const running = this.loading.get(key);
      if (running === undefined) break;
      await running;
    }
    const resident = this.gpu.get(key);
    if (resident !== undefined) {
      this.touch(resident, req.inferFollows);
      yield this.loadDone(key, bytes, Tier.GPU, 0, []);
      return;
    }
    let finish!: () => void;
    this.loading.set(key, new Promise<void>((r) => (finish = r)));
    try {
      const evicted: CheckpointRef[] = [];
      // Room: evict idle models, least recently used first; wait while only busy ones are left.
      for (;;) {
        while (budget - this.gpuUsed < bytes + floor) {
          const victim = this.lruIdle();
          if (victim === undefined) break;
          this.evict(victim);
          evicted.push(this.catalog.ref(victim.key));
        }
        if (budget - this.gpuUsed >= bytes + floor) break;
        await this.roomChanged(WAIT_REPORT_MS);
        yield { tier: Tier.UNSPECIFIED, ready: false, evicted: [], timings: [] };
      }
      const startTier = this.dram.has(key) ? Tier.DRAM : this.disk.has(key) ? Tier.DISK : Tier.REMOTE;
      const entry: Resident = { key, bytes, running: 0, lastUseMs: this.clock.now(), holdUntilMs: 0, loading: true };
      this.account();
      this.gpu.set(key, entry);
      this.gpuUsed += bytes + floor;
      const seconds = this.hw.loadOverheadSeconds + bytes / this.rate(startTier, key, req.peers);
      await this.sleep(seconds * 1000);
      entry.loading = false;
      this.touch(entry, req.inferFollows);
      this.toDram(key, bytes);
      this.toDisk(key, bytes);
      const tier = startTier === Tier.DRAM ? "dram" : startTier === Tier.DISK ? "disk" : "remote";
      this.tally.coldStarts[tier]++;
      this.heartbeatSoon();
      yield this.loadDone(key, bytes, startTier, seconds, evicted);
    } finally {
      this.loading.delete(key);
      finish();
    }
  }

  async *infer(req: { ref?: CheckpointRef; requestId?: string }, options?: { signal?: AbortSignal }): AsyncGenerator<object> {
    const signal = options?.signal;
    const key = keyOf(req.ref!);
    const entry = this.gpu.get(key);
    if (entry === undefined || entry.loading) {
      throw new ConnectError(`model ${key} is not loaded on this agent (LoadModel first)`, Code.FailedPrecondition);
    }
    const { promptTokens, outputTokens } = this.shape(req.requestId ?? "");
    entry.running++;
    entry.holdUntilMs = 0;
    // The queue the heartbeat reports: the scheduler asks idle agents (queue 0) to help download.
    if (this.active++ === 0) this.heartbeatSoon();
    const seq: Sequence = { key, remaining: Math.max(0, outputTokens - 1), done: () => {} };
    try {
      // Prefills run one after another on the device; the first token comes one decode round later.
      const now = this.clock.now();
      const start = Math.max(now, this.prefillFreeAt);
      const prefill = speedOf(entry.bytes).prefillSeconds(promptTokens) * 1000;
      this.prefillFreeAt = start + prefill;
      const firstAt = this.prefillFreeAt + this.roundSeconds(key) * 1000;
      await this.sleep(firstAt - now, signal);
      yield { tokens: [{ tokenId: 0, text: "x" }], text: "x", finishReason: FinishReason.UNSPECIFIED };
      if (seq.remaining > 0) {
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(signal!.reason);
          seq.done = () => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
          };
          signal?.addEventListener("abort", onAbort, { once: true });
          this.joinDecode(seq);
        });
      }
      yield {
        tokens: [{ tokenId: 0, text: "x" }],
        text: "x",
        finishReason: FinishReason.LENGTH,
        usage: { promptTokens, completionTokens: outputTokens, totalTokens: promptTokens + outputTokens },
      };
    } finally {
      this.leaveDecode(seq);
      entry.running--;
      if (--this.active === 0) this.heartbeatSoon();
      entry.lastUseMs = this.clock.now();
      this.wakeRoomWaiters();
    }
  }

  async unloadModel(req: { ref?: CheckpointRef }): Promise<object> {
    const entry = this.gpu.get(keyOf(req.ref!));
    if (entry !== undefined && !entry.loading && entry.running === 0) {
      this.evict(entry);
      this.tally.evictions--; // an unload, not an eviction
    }
    return {};
  }

  async *downloadChunks(req: { ref?: CheckpointRef; fileNames: string[] }): AsyncGenerator<object> {
    // A helper fetching its share of a model's chunks from the store (spread downloads).
    const key = keyOf(req.ref!);
    const share = this.catalog.bytes(key) * (req.fileNames.length / Math.max(1, chunkCount(this.catalog.bytes(key))));
    await this.sleep((share / this.hw.storeToGpu) * 1000);
    yield { complete: true };
  }

  async getStatus(): Promise<{ status: AgentStatus }> {
    return { status: this.status() };
  }

  /** The status a heartbeat carries. */
  status(): AgentStatus {
    const now = this.clock.now();
    const floor = this.hw.kvFloorBytes;
    const models = new Map<string, { tier: Tier; bytes: number }>();
    for (const [key, bytes] of this.disk) models.set(key, { tier: Tier.DISK, bytes });
    for (const [key, bytes] of this.dram) models.set(key, { tier: Tier.DRAM, bytes });
    for (const [key, r] of this.gpu) if (!r.loading) models.set(key, { tier: Tier.GPU, bytes: r.bytes });
    const resident = [...this.gpu.values()].filter((r) => !r.loading);
    return create(AgentStatusSchema, {
      agentId: this.id,
      address: this.address,
      models: [...models].map(([key, m]) => {
        const r = this.gpu.get(key);
        return {
          ref: this.catalog.ref(key),
          tier: m.tier,
          bytes: BigInt(Math.round(m.bytes)),
          queueLength: r?.running ?? 0,
          idleMs: BigInt(r === undefined || r.running > 0 ? 0 : Math.round(now - r.lastUseMs)),
          device: m.tier === Tier.GPU ? DEVICE : "",
        };
      }),
      tiers: [
        { tier: Tier.DRAM, totalBytes: big(this.hw.dramBytes), freeBytes: big(this.hw.dramBytes - this.dramUsed), bandwidthBytesPerSecond: this.hw.dramToGpu },
        { tier: Tier.DISK, totalBytes: big(this.hw.diskBytes), freeBytes: big(this.hw.diskBytes - this.diskUsed), bandwidthBytesPerSecond: this.hw.diskToGpu },
        { tier: Tier.REMOTE, bandwidthBytesPerSecond: this.hw.storeToGpu },
      ],
      queueLength: this.active,
      gpuCount: 1,
      devices: [
        {
          device: DEVICE,
          budgetBytes: big(this.hw.gpuBudgetBytes),
          usedBytes: big(this.gpuUsed),
          freeBytes: big(this.hw.gpuBudgetBytes - this.gpuUsed),
          maxModelBytes: big(this.hw.gpuBudgetBytes - floor),
          resident: resident.map((r) => ({
            ref: this.catalog.ref(r.key),
            bytes: big(r.bytes + floor),
            running: r.running,
            idleMs: BigInt(r.running > 0 ? 0 : Math.round(now - r.lastUseMs)),
          })),
        },
      ],
      dramPoolBytes: big(this.hw.dramBytes),
    });
  }

  /** Closes the books at the end of the run. */
  finish(): void {
    this.account();
  }

  // ─── tiers ─────────────────────────────────────────────────────────────────────────────────────

  private rate(tier: Tier, key: string, peers: string[]): number {
    if (tier === Tier.DRAM) return this.hw.dramToGpu;
    if (tier === Tier.DISK) return this.hw.diskToGpu;
    // Remote: from the peers the scheduler named that hold it (or helped download it), else the store.
    const holders = peers.map((a) => this.peers(a)).filter((p) => p !== undefined).length;
    return holders === 0 ? this.hw.storeToGpu : Math.max(this.hw.storeToGpu, Math.min(this.hw.networkBytes, holders * this.hw.peerRead));
  }

  private lruIdle(): Resident | undefined {
    const now = this.clock.now();
    let best: Resident | undefined;
    for (const r of this.gpu.values()) {
      if (r.loading || r.running > 0 || r.holdUntilMs > now) continue;
      if (best === undefined || r.lastUseMs < best.lastUseMs) best = r;
    }
    return best;
  }

  private evict(r: Resident): void {
    this.account();
    this.gpu.delete(r.key);
    this.gpuUsed -= r.bytes + this.hw.kvFloorBytes;
    this.tally.evictions++;
    this.heartbeatSoon();
    this.wakeRoomWaiters();
  }

  private touch(r: Resident, hold: boolean): void {
    r.lastUseMs = this.clock.now();
    if (hold) r.holdUntilMs = this.clock.now() + HOLD_MS;
    const bytes = this.dram.get(r.key);
    if (bytes !== undefined) {
      this.dram.delete(r.key);
      this.dram.set(r.key, bytes);
    }
  }

  private toDram(key: string, bytes: number): void {
    if (this.dram.has(key)) this.dram.delete(key);
    else this.dramUsed += bytes;
    this.dram.set(key, bytes);
    for (const [k, b] of this.dram) {
      if (this.dramUsed <= this.hw.dramBytes) break;
      if (this.gpu.has(k)) continue; // the pool keeps what the GPU holds
      this.dram.delete(k);
      this.dramUsed -= b;
    }
  }

  private toDisk(key: string, bytes: number): void {
    if (this.disk.has(key)) this.disk.delete(key);
    else this.diskUsed += bytes;
    this.disk.set(key, bytes);
    for (const [k, b] of this.disk) {
      if (this.diskUsed <= this.hw.diskBytes) break;
      if (this.dram.has(k)) continue;
      this.disk.delete(k);
      this.diskUsed -= b;
    }
  }

  /** GPU time and byte-seconds up to now. */
  private account(): void {
    const now = this.clock.now();
    const dt = (now - this.accountedAt) / 1000;
    if (this.gpu.size > 0) this.tally.gpuSeconds += dt;
    this.tally.gpuByteSeconds += dt * this.gpuUsed;
    this.accountedAt = now;
  }

  private roomChanged(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.after(ms, resolve);
      this.roomWaiters.push(() => {
        timer.cancel();
        resolve();
      });
    });
  }

  private wakeRoomWaiters(): void {
    if (this.roomWaiters.length === 0) return;
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const w of waiters) w();
  }

  /** The scheduler hears of a change at this agent's next heartbeat tick (agents beat every second). */
  private heartbeatSoon(): void {
    if (this.heartbeatDue) return;
    this.heartbeatDue = true;
    const now = this.clock.now();
    const next = Math.floor((now - this.phaseMs) / 1000) * 1000 + 1000 + this.phaseMs;
    this.clock.at(next, () => {
      this.heartbeatDue = false;
      this.send(this.status());
    });
  }

  // ─── decode ────────────────────────────────────────────────────────────────────────────────────

  /** One round's length with a sequence of `extra` added, s. */
  private roundSeconds(extra?: string): number {
    let s = 0;
    let seen = false;
    for (const [key, b] of this.batch) {
      const add = key === extra ? 1 : 0;
      if (add) seen = true;
      s += speedOf(this.catalog.bytes(key)).stepSeconds(b + add);
    }
    if (extra !== undefined && !seen) s += speedOf(this.catalog.bytes(extra)).stepSeconds(1);
    return s;
  }

  /** Moves every decoding sequence on by the rounds run since the last change. */
  private advance(): void {
    const now = this.clock.now();
    if (this.decoding.size > 0) {
      const tokens = (now - this.advancedAt) / 1000 / this.roundSeconds();
      for (const s of this.decoding) s.remaining -= tokens;
    }
    this.advancedAt = now;
  }

  private joinDecode(seq: Sequence): void {
    this.advance();
    this.decoding.add(seq);
    this.batch.set(seq.key, (this.batch.get(seq.key) ?? 0) + 1);
    this.reschedule();
  }

  private leaveDecode(seq: Sequence): void {
    if (!this.decoding.has(seq)) return;
    this.advance();
    this.decoding.delete(seq);
    const b = (this.batch.get(seq.key) ?? 1) - 1;
    if (b > 0) this.batch.set(seq.key, b);
    else this.batch.delete(seq.key);
    this.reschedule();
  }

  private reschedule(): void {
    this.nextFinish?.cancel();
    this.nextFinish = undefined;
    if (this.decoding.size === 0) return;
    let least = Infinity;
    for (const s of this.decoding) least = Math.min(least, s.remaining);
    const ms = Math.max(0, least) * this.roundSeconds() * 1000;
    this.nextFinish = this.clock.after(ms, () => {
      this.nextFinish = undefined;
      this.advance();
      const finished = [...this.decoding].filter((s) => s.remaining <= 1e-6);
      for (const s of finished) {
        this.leaveDecode(s);
        s.done();
      }
      if (finished.length === 0) this.reschedule();
    });
  }

  private sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        t.cancel();
        reject(signal!.reason);
      };
      const t = this.clock.after(ms, () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private loadDone(key: string, bytes: number, startTier: Tier, seconds: number, evicted: CheckpointRef[]): object {
    return {
      tier: Tier.GPU,
      ready: true,
      startTier,
      seconds,
      device: DEVICE,
      bytesDone: big(bytes),
      bytesTotal: big(bytes),
      evicted,
      timings: startTier === Tier.GPU ? [] : [{ tier: startTier, bytes: big(bytes), seconds }],
    };
  }
}

/** Chunks of a checkpoint of `bytes` at the converter's 256 MiB target. */
export function chunkCount(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / (256 * 2 ** 20)));
}

function big(n: number): bigint {
  return BigInt(Math.max(0, Math.round(n)));
}
