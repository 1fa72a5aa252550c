// The load path of DESIGN.md §4 through the agent's tiers:
//   remote ──download──► disk ──native read (verified)──► pinned pool ──► engine
// A load starts at the fastest tier that holds the model and moves it up, timing each tier;
// concurrent loads of the same model share one flight. Room on a device comes from the GPU tier
// (which may evict idle models for it); a model that can never fit (the pinned pool, or any
// device's budget) is refused before anything moves. On CPU the engine maps the pool region (zero
// copy); on a GPU the worker allocates device memory, exports a CUDA IPC handle and the native
// module copies into it (straight from disk through the pool when the model is not in DRAM).
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { type CheckpointIndex, type CheckpointRef, CheckpointRefSchema, type ChunkEntry } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { Tier } from "../gen/thaw/agent/v1/agent_pb.js";
import { modelKey } from "../checkpoint/model-key.js";
import { DeviceMemory, NativeError, type PoolRegion, checkpointLayout, copyToDevice, loadCheckpoint } from "../native/index.js";
import type { AgentMetrics, TierLabel } from "./agent-metrics.js";
import type { BandwidthMeter } from "./bandwidth.js";
import type { ChunkDownloader, ChunkProgress } from "./chunk-download.js";
import type { ChunkSource } from "./chunk-sources.js";
import type { DiskTier } from "./disk-tier.js";
import { type DramTier, tooLargeForPool } from "./dram-tier.js";
import type { EngineWorker } from "./engine-worker.js";
import type { GpuTier, Residence } from "./gpu-tier.js";
import { ModelText } from "./model-text.js";
import { SharedFlights } from "../shared/shared-flight.js";

export interface TierTime {
  tier: Tier;
  bytes: number;
  seconds: number;
}

/** Progress of a load (the fields of LoadModelResponse). */
export interface LoadProgress {
  tier: Tier;
  bytesDone: number;
  bytesTotal: number;
  timings: TierTime[];
  startTier: Tier;
  seconds: number;
}

export interface LoadResult {
  key: string;
  /** Bytes of the checkpoint (0 for an external runtime). */
  bytes: number;
  engineId: string;
  /** Device it is resident on ("cuda:0", "cpu", "external"). */
  device: string;
  startTier: Tier;
  timings: TierTime[];
  /** Models evicted from the device to make room for it. */
  evicted: CheckpointRef[];
  seconds: number;
}

export interface LoadOptions {
  peers?: readonly string[];
  maxModelLen?: number;
  /** An Infer follows at once (LoadModelRequest.infer_follows): hold the model for it. */
  inferFollows?: boolean;
}

export interface LoaderDeps {
  disk: DiskTier;
  dram: DramTier;
  gpu: GpuTier;
  downloader: ChunkDownloader;
  /** Sources to fetch from, peers first. */
  sources(peers: readonly string[]): ChunkSource[];
  metrics: AgentMetrics;
  bandwidth: BandwidthMeter;
  log: (line: string) => void;
}

type Progress = (tier: Tier, done: number, total: number) => void;

export const TIER_LABEL: Record<Tier, TierLabel> = {
  [Tier.UNSPECIFIED]: "remote",
  [Tier.GPU]: "gpu",
  [Tier.DRAM]: "dram",
  [Tier.DISK]: "disk",
  [Tier.REMOTE]: "remote",
};

/** Side files Infer needs, read from disk at load time (the disk copy may be evicted later). */
const TEXT_FILES = ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"] as const;

export function refKey(ref: CheckpointRef | undefined): string {
  if (ref === undefined || ref.modelId === "") throw new ConnectError("ref.model_id is required", Code.InvalidArgument);
  return modelKey(ref.modelId, ref.revision);
}

/** The ref with its revision filled in. */
export function normalRef(ref: CheckpointRef): CheckpointRef {
  return ref.revision ? ref : create(CheckpointRefSchema, { modelId: ref.modelId, revision: "main" });
}

export class ModelLoader {
  // An abandoned load stops if it is still waiting for room on a device; downloads and copies finish
  // (they leave the lower tiers warm, and a newcomer may have joined a chunk transfer).
  private readonly flights = new SharedFlights<LoadProgress, LoadResult>("abort");
  /** What a load needs beyond the chunks, kept in memory (the disk copy may be evicted later). */
  private readonly meta = new Map<string, { index: CheckpointIndex; config: string; text: ModelText }>();
  private readonly refs = new Map<string, CheckpointRef>();

  constructor(private readonly deps: LoaderDeps) {}

  /** The fastest tier that holds all of `key` (REMOTE when none does). */
  tierOf(key: string): Tier {
    if (this.deps.gpu.find(key) !== undefined) return Tier.GPU;
    if (this.deps.dram.get(key) !== undefined) return Tier.DRAM;
    if (this.deps.disk.complete(key)) return Tier.DISK;
    return Tier.REMOTE;
  }

  /** The ref a key was last loaded under (for status). */
  ref(key: string): CheckpointRef | undefined {
    return this.refs.get(key);
  }

  /** Text handling of a loaded model (tokenizer, chat template, eos ids). */
  text(key: string): ModelText | undefined {
    return this.meta.get(key)?.text;
  }

  /** A load of `key` is running. */
  loading(key: string): boolean {
    return this.flights.has(key) || this.deps.gpu.loading(key);
  }

  /** Loads `ref` onto an engine (sharing a running load of the same model). */
  load(given: CheckpointRef, options: LoadOptions, onProgress?: (p: LoadProgress) => void, signal?: AbortSignal): Promise<LoadResult> {
    const key = refKey(given);
    const ref = normalRef(given);
    const resident = this.deps.gpu.find(key);
    this.deps.metrics.lookup(resident !== undefined);
    if (resident !== undefined) return Promise.resolve(residentResult(key, resident, options));
    const loaded = this.flights.run(key, (report, abandoned) => this.doLoad(key, ref, options, report, abandoned), onProgress, signal);
    // A caller that joined another's load announces its own Infer.
    return options.inferFollows ? loaded.then((r) => (this.deps.gpu.find(key)?.model.expectUse(), r)) : loaded;
  }

  private async doLoad(key: string, ref: CheckpointRef, options: LoadOptions, report: (p: LoadProgress) => void, abandoned: AbortSignal): Promise<LoadResult> {
    const started = performance.now();
    const startTier = this.tierOf(key);
    const timings: TierTime[] = [];
    const progress: Progress = (tier, bytesDone, bytesTotal) =>
      report({ tier, bytesDone, bytesTotal, timings: [...timings], startTier, seconds: (performance.now() - started) / 1000 });

    const { disk, dram, gpu } = this.deps;
    const unpinDisk = disk.pin(key);
    try {
      const sources = this.deps.sources(options.peers ?? []);
      let meta = this.meta.get(key);
      if (meta === undefined || dram.get(key) === undefined) {
        const index = await this.deps.downloader.ensureIndex(ref, key, sources);
        if (meta?.index !== index) {
          meta = { index, config: await this.configJson(key), text: await this.readText(key) };
          this.meta.set(key, meta);
        }
      }
      this.refs.set(key, ref);
      const { index, config } = meta;
      const total = Number(index.totalBytes);

      // A model that can never be loaded here is refused before anything moves or leaves.
      const poolBytes = dram.pool?.bytes;
      if (poolBytes !== undefined && checkpointLayout(index).totalBytes > poolBytes) throw tooLargeForPool(checkpointLayout(index).totalBytes, poolBytes, key);
      gpu.checkFits(key, total);

      // Remote → disk.
      if (dram.get(key) === undefined) await this.fetchMissing(ref, key, sources, timings, progress);

      // Room on a device (evicting idle models if needed), then → engine through the pool.
      const room = await gpu.reserve(key, total, abandoned);
      if ("model" in room) return residentResult(key, room, options); // another load made it resident meanwhile
      const worker = room.worker;
      try {
        let release = (): void => {};
        if (worker.device === "cpu" || dram.pool === undefined) {
          if (dram.get(key) === undefined && dram.pool !== undefined) await this.diskToPool(ref, key, index, sources, timings, progress);
          progress(Tier.DRAM, 0, total);
          const t = performance.now();
          release = await this.loadFromHost(worker, key, index, config, options, room.floorBytes);
          const seconds = (performance.now() - t) / 1000;
          timings.push({ tier: Tier.DRAM, bytes: total, seconds });
          this.record(Tier.DRAM, total, seconds);
        } else {
          await this.loadOnGpu(worker, ref, key, index, config, options, room.floorBytes, sources, timings, progress);
        }
        const model = room.commit(ref, release);
        if (options.inferFollows) model.expectUse();
      } catch (err) {
        room.cancel();
        // Frees what the worker holds for the model (an allocation whose LoadWeights never came).
        if (worker.alive) await worker.client.unload({ model: key }, { timeoutMs: 60_000 }).catch(() => {});
        throw err;
      }
      progress(Tier.GPU, total, total);
      disk.touch(key);
      dram.touch(key);
      const seconds = (performance.now() - started) / 1000;
      const label = TIER_LABEL[startTier];
      this.deps.metrics.modelLoadSeconds.observe({ tier: label }, seconds);
      this.deps.metrics.coldStarts.inc({ tier: label });
      return { key, bytes: total, engineId: worker.id, device: worker.device, startTier, timings, evicted: [...room.evicted], seconds };
    } finally {
      unpinDisk();
    }
  }

  private record(tier: Tier, bytes: number, seconds: number): void {
    this.deps.bandwidth.record(tier, bytes, seconds);
    this.deps.metrics.loadBytes.inc({ tier: TIER_LABEL[tier] }, bytes);
  }

  /** Fetches missing chunks into the disk tier. */
  private async fetchMissing(ref: CheckpointRef, key: string, sources: ChunkSource[], timings: TierTime[], progress: Progress): Promise<void> {
    const missing = this.deps.disk.missingChunks(key);
    if (missing.length === 0) return;
    const total = missing.reduce((s, c) => s + Number(c.byteLength), 0);
    const done = new Map<string, number>();
    let last = 0;
    progress(Tier.REMOTE, 0, total);
    const result = await this.deps.downloader.fetchChunks(
      ref,
      key,
      missing,
      sources,
      (p: ChunkProgress) => {
        done.set(p.fileName, p.bytesDone);
        const now = performance.now();
        if (now - last >= 100 || p.complete) {
          last = now;
          progress(Tier.REMOTE, [...done.values()].reduce((a, b) => a + b, 0), total);
        }
      },
    );
    timings.push({ tier: Tier.REMOTE, bytes: result.bytes, seconds: result.seconds });
    this.record(Tier.REMOTE, result.bytes, result.seconds);
  }

  /**
   * Runs a native read of the model's chunks off disk; a chunk that fails its checksum is deleted,
   * fetched again and the read repeated (twice at most).
   */
  private async withRefetch<T>(ref: CheckpointRef, key: string, sources: ChunkSource[], timings: TierTime[], progress: Progress, read: () => Promise<T>): Promise<T> {
    const index = this.deps.disk.index(key)!;
    for (let attempt = 0; ; attempt++) {
      try {
        return await read();
      } catch (err) {
        if (!(err instanceof NativeError) || (err.kind !== "checksum" && err.kind !== "io") || attempt >= 2) throw err;
        const bad = err.chunk !== undefined ? [index.chunks[err.chunk]] : index.chunks;
        for (const chunk of bad) {
          if (chunk === undefined) continue;
          if (err.chunk !== undefined) await this.deps.disk.removeChunk(key, chunk.fileName);
          else await this.deps.disk.verifyChunk(key, chunk);
        }
        this.deps.log(`${key}: ${err.message}; fetching the bad chunk again`);
        await this.fetchMissing(ref, key, sources, timings, progress);
      }
    }
  }

  /**
   * Disk → pinned pool, verified, and on to `device` in the same pipelined pass when one is given.
   * The pool keeps the DRAM copy; returns where each chunk lies in it.
   */
  private async diskToPool(
    ref: CheckpointRef,
    key: string,
    index: CheckpointIndex,
    sources: ChunkSource[],
    timings: TierTime[],
    progress: Progress,
    device?: DeviceMemory,
  ): Promise<number[]> {
    const { disk, dram } = this.deps;
    const region: PoolRegion = await dram.allocate(checkpointLayout(index).totalBytes);
    try {
      const loaded = await this.withRefetch(ref, key, sources, timings, progress, () =>
        loadCheckpoint({
          pool: dram.pool!,
          index,
          folder: disk.modelDir(key),
          region,
          device,
          verify: true,
          onProgress: (p) => progress(Tier.DISK, p.readBytes, p.totalBytes),
        }),
      );
      const read = loaded.stats.read ?? { bytes: loaded.stats.bytes, seconds: loaded.stats.seconds };
      timings.push({ tier: Tier.DISK, bytes: read.bytes, seconds: read.seconds });
      this.record(Tier.DISK, read.bytes, read.seconds);
      if (device !== undefined) {
        const copy = loaded.stats.copy ?? { bytes: loaded.stats.bytes, seconds: loaded.stats.seconds };
        timings.push({ tier: Tier.DRAM, bytes: copy.bytes, seconds: copy.seconds });
        this.record(Tier.DRAM, copy.bytes, copy.seconds);
      }
      dram.put(key, region, loaded.chunkOffsets, Number(index.totalBytes));
      return loaded.chunkOffsets;
    } catch (err) {
      dram.abandon(region);
      throw err;
    }
  }

  /**
   * CPU engine (or no pool): the worker maps the pool region (no copy) or reads the checkpoint
   * folder itself. Returns what gives the pool region back once the model leaves.
   */
  private async loadFromHost(worker: EngineWorker, key: string, index: CheckpointIndex, config: string, options: LoadOptions, floorBytes: number): Promise<() => void> {
    const { dram } = this.deps;
    const entry = dram.get(key);
    const common = { model: key, index, configJson: config, maxModelLen: options.maxModelLen ?? 0, kvCacheBytes: BigInt(floorBytes) };
    if (entry === undefined) {
      await worker.client.loadWeights({ ...common, memory: { location: { case: "folder", value: { path: this.deps.disk.modelDir(key) } } } });
      return () => {};
    }
    const release = dram.use(key);
    try {
      const host = entry.region.hostMemory(0, entry.region.length);
      await worker.client.loadWeights({
        ...common,
        memory: {
          location: { case: "host", value: { path: host.path, offset: BigInt(host.offset), length: BigInt(host.length) } },
          chunkOffsets: entry.chunkOffsets.map(BigInt),
        },
      });
      return release;
    } catch (err) {
      release();
      throw err;
    }
  }

  /** GPU engine: AllocateWeights → the native module fills the IPC allocation → LoadWeights. */
  private async loadOnGpu(
    worker: EngineWorker,
    ref: CheckpointRef,
    key: string,
    index: CheckpointIndex,
    config: string,
    options: LoadOptions,
    floorBytes: number,
    sources: ChunkSource[],
    timings: TierTime[],
    progress: Progress,
  ): Promise<void> {
    const { dram } = this.deps;
    const layout = checkpointLayout(index);
    const alloc = await worker.client.allocateWeights({ bytes: BigInt(layout.totalBytes), model: key });
    const device = await DeviceMemory.openIpc(alloc.ipcHandle, { device: alloc.deviceIndex, bytes: Number(alloc.bytes) });
    let chunkOffsets: number[];
    try {
      const entry = dram.get(key);
      if (entry !== undefined) {
        const release = dram.use(key);
        try {
          progress(Tier.DRAM, 0, layout.totalBytes);
          const stats = await copyToDevice(entry.region, device, {
            length: layout.totalBytes,
            onProgress: (p) => progress(Tier.DRAM, p.copiedBytes, layout.totalBytes),
          });
          const copy = stats.copy ?? { bytes: stats.bytes, seconds: stats.seconds };
          timings.push({ tier: Tier.DRAM, bytes: copy.bytes, seconds: copy.seconds });
          this.record(Tier.DRAM, copy.bytes, copy.seconds);
        } finally {
          release();
        }
        chunkOffsets = entry.chunkOffsets;
      } else {
        // Disk → pool → GPU in one pipelined pass; the pool keeps the DRAM copy.
        chunkOffsets = await this.diskToPool(ref, key, index, sources, timings, progress, device);
      }
    } finally {
      device.dispose(); // closes this process's IPC mapping; the worker owns the memory
    }
    await worker.client.loadWeights({
      model: key,
      index,
      configJson: config,
      maxModelLen: options.maxModelLen ?? 0,
      kvCacheBytes: BigInt(floorBytes),
      memory: { location: { case: "device", value: { allocationId: alloc.allocationId } }, chunkOffsets: chunkOffsets.map(BigInt) },
    });
  }

  private async configJson(key: string): Promise<string> {
    const bytes = await this.deps.disk.readFile(key, "config.json");
    if (bytes === undefined) throw new ConnectError(`${key} has no config.json on disk (the source did not provide it)`, Code.FailedPrecondition);
    return Buffer.from(bytes).toString("utf8");
  }

  private async readText(key: string): Promise<ModelText> {
    const [tokenizerJson, tokenizerConfigJson, generationConfigJson, configJson] = await Promise.all(
      TEXT_FILES.map((name) => this.deps.disk.readFile(key, name)),
    );
    return new ModelText({ tokenizerJson, tokenizerConfigJson, generationConfigJson, configJson });
  }

  /** DownloadChunks: fetches chunks (all when `fileNames` is empty) into the disk tier. */
  async downloadChunks(
    given: CheckpointRef,
    fileNames: readonly string[],
    peers: readonly string[],
    onProgress: (p: ChunkProgress) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    const key = refKey(given);
    const ref = normalRef(given);
    const unpin = this.deps.disk.pin(key);
    try {
      const sources = this.deps.sources(peers);
      const index = await this.deps.downloader.ensureIndex(ref, key, sources, signal);
      this.refs.set(key, ref);
      const wanted = fileNames.length === 0 ? index.chunks : fileNames.map((name) => {
        const chunk = index.chunks.find((c) => c.fileName === name);
        if (chunk === undefined) throw new ConnectError(`${key} has no chunk named ${JSON.stringify(name)}`, Code.NotFound);
        return chunk;
      });
      const result = await this.deps.downloader.fetchChunks(ref, key, wanted, sources, onProgress, signal);
      this.record(Tier.REMOTE, result.bytes, result.seconds);
    } finally {
      unpin();
    }
  }

  /** Fetches one chunk again (after the copy on disk was found corrupt). */
  async refetchChunk(ref: CheckpointRef, key: string, chunk: ChunkEntry, signal?: AbortSignal): Promise<void> {
    await this.deps.downloader.fetchChunk(ref, key, chunk, this.deps.sources([]), () => {}, signal);
  }

  /** UnloadModel: drops the model from its device, and down to DRAM or disk as asked. */
  async unload(ref: CheckpointRef, downTo: Tier): Promise<boolean> {
    const key = refKey(ref);
    if (this.loading(key)) throw new ConnectError(`${key} is loading`, Code.FailedPrecondition);
    let unloaded = await this.deps.gpu.unload(key);
    const to = downTo === Tier.UNSPECIFIED ? Tier.GPU : downTo;
    if (to >= Tier.DRAM) unloaded = this.deps.dram.evict(key) || unloaded;
    if (to >= Tier.DISK) {
      unloaded = (await this.deps.disk.dropModel(key)) > 0 || unloaded;
      this.meta.delete(key);
    }
    return unloaded;
  }
}

function residentResult(key: string, { worker, model }: Residence, options: LoadOptions): LoadResult {
  if (options.inferFollows) model.expectUse();
  else model.touch();
  return { key, bytes: model.weightBytes, engineId: worker.id, device: worker.device, startTier: Tier.GPU, timings: [], evicted: [], seconds: 0 };
}
