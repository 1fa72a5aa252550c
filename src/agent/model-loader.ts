// The load path of DESIGN.md §4 through the agent's tiers:
//   remote ──download──► disk ──native read (verified)──► pinned pool ──► engine
// A load starts at the fastest tier that holds the model and moves it up, timing each tier;
// concurrent loads of the same model share one flight. On CPU the engine maps the pool region
// (zero copy); on a GPU the worker allocates device memory, exports a CUDA IPC handle and the
// native module copies into it (straight from disk through the pool when the model is not in DRAM).
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
import type { DramTier } from "./dram-tier.js";
import type { EngineSupervisor } from "./engine-supervisor.js";
import type { EngineWorker } from "./engine-worker.js";
import { ExternalRuntime } from "./external-runtime.js";
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
  startTier: Tier;
  timings: TierTime[];
  seconds: number;
}

export interface LoadOptions {
  peers?: readonly string[];
  maxModelLen?: number;
  /** An external OpenAI-compatible runtime to start for the model (LoadModelRequest.launch_command). */
  launchCommand?: readonly string[];
}

export interface LoaderDeps {
  disk: DiskTier;
  dram: DramTier;
  engines: EngineSupervisor;
  downloader: ChunkDownloader;
  /** Sources to fetch from, peers first. */
  sources(peers: readonly string[]): ChunkSource[];
  metrics: AgentMetrics;
  bandwidth: BandwidthMeter;
  /** Models served by an external OpenAI-compatible runtime, by model key. */
  external: Map<string, ExternalRuntime>;
  /** Bytes of KV cache per engine load (0: the worker's default). */
  kvCacheBytes?: number;
  /** LoadModel may name a command to start (an external runtime); off unless the operator allows it. */
  allowLaunch?: boolean;
  log: (line: string) => void;
}

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
  private readonly flights = new SharedFlights<LoadProgress, LoadResult>();
  /** What a load needs beyond the chunks, kept in memory (the disk copy may be evicted later). */
  private readonly meta = new Map<string, { index: CheckpointIndex; config: string; text: ModelText }>();
  private readonly refs = new Map<string, CheckpointRef>();

  constructor(private readonly deps: LoaderDeps) {}

  /** The fastest tier that holds all of `key` (REMOTE when none does). */
  tierOf(key: string): Tier {
    const ext = this.deps.external.get(key);
    if (ext !== undefined) return ext.running ? Tier.GPU : Tier.REMOTE;
    if (this.deps.engines.find(key) !== undefined) return Tier.GPU;
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

  /** A load of `ref` is running. */
  loading(key: string): boolean {
    return this.flights.has(key);
  }

  /** Loads `ref` onto an engine (sharing a running load of the same model). */
  load(given: CheckpointRef, options: LoadOptions, onProgress?: (p: LoadProgress) => void, signal?: AbortSignal): Promise<LoadResult> {
    const key = refKey(given);
    const ref = normalRef(given);
    if (options.launchCommand !== undefined && options.launchCommand.length > 0) this.registerExternal(ref, key, options.launchCommand);
    const resident = this.residentResult(key);
    this.deps.metrics.lookup(resident !== undefined);
    if (resident !== undefined) return Promise.resolve(resident);
    return this.flights.run(key, (report) => this.doLoad(key, ref, options, report), onProgress, signal);
  }

  /** Serves `key` with an external runtime started with `command` (the first time it is named). */
  private registerExternal(ref: CheckpointRef, key: string, command: readonly string[]): void {
    if (!this.deps.allowLaunch) {
      throw new ConnectError("this agent does not start external runtimes (start it with --allow-launch)", Code.PermissionDenied);
    }
    const existing = this.deps.external.get(key);
    if (existing !== undefined) {
      if (existing.config.command.join("\0") !== command.join("\0")) {
        throw new ConnectError(`${key} already runs with another launch command; unload it first`, Code.FailedPrecondition);
      }
      return;
    }
    this.deps.external.set(key, new ExternalRuntime({ modelId: ref.modelId, revision: ref.revision, command: [...command] }, this.deps.log));
  }

  private residentResult(key: string): LoadResult | undefined {
    const ext = this.deps.external.get(key);
    if (ext !== undefined) {
      return ext.running ? { key, bytes: 0, engineId: ext.id, startTier: Tier.GPU, timings: [], seconds: 0 } : undefined;
    }
    const worker = this.deps.engines.find(key);
    if (worker === undefined || worker.model === undefined) return undefined;
    worker.model.lastUsed = Date.now();
    return { key, bytes: worker.model.bytes, engineId: worker.id, startTier: Tier.GPU, timings: [], seconds: 0 };
  }

  private async doLoad(key: string, ref: CheckpointRef, options: LoadOptions, report: (p: LoadProgress) => void): Promise<LoadResult> {
    const started = performance.now();
    const startTier = this.tierOf(key);
    const timings: TierTime[] = [];
    const progress = (tier: Tier, bytesDone: number, bytesTotal: number): void =>
      report({ tier, bytesDone, bytesTotal, timings: [...timings], startTier, seconds: (performance.now() - started) / 1000 });
    const finish = (engineId: string, bytes: number): LoadResult => {
      const seconds = (performance.now() - started) / 1000;
      const label = TIER_LABEL[startTier];
      this.deps.metrics.modelLoadSeconds.observe({ tier: label }, seconds);
      this.deps.metrics.coldStarts.inc({ tier: label });
      return { key, bytes, engineId, startTier, timings, seconds };
    };

    const ext = this.deps.external.get(key);
    if (ext !== undefined) {
      progress(Tier.REMOTE, 0, 0);
      const t = performance.now();
      await ext.start();
      timings.push({ tier: Tier.REMOTE, bytes: 0, seconds: (performance.now() - t) / 1000 });
      return finish(ext.id, 0);
    }
    const resident = this.residentResult(key);
    if (resident !== undefined) return resident;

    const { disk, dram } = this.deps;
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

      // Remote → disk.
      if (dram.get(key) === undefined) await this.fetchMissing(ref, key, sources, timings, progress);

      // → engine (through the pool).
      const worker = await this.deps.engines.acquire();
      try {
        if (worker.device === "cpu" || dram.pool === undefined) {
          if (dram.get(key) === undefined && dram.pool !== undefined) {
            await this.diskToDram(ref, key, index, sources, timings, progress);
          }
          progress(Tier.DRAM, 0, total);
          const t = performance.now();
          const release = await this.loadOnCpu(worker, key, index, config, options);
          const seconds = (performance.now() - t) / 1000;
          timings.push({ tier: Tier.DRAM, bytes: total, seconds });
          this.record(Tier.DRAM, total, seconds);
          this.deps.engines.serve(worker, { key, ref, bytes: total, loadedAt: Date.now(), lastUsed: Date.now(), release });
        } else {
          await this.loadOnGpu(worker, ref, key, index, config, options, sources, timings, progress);
          this.deps.engines.serve(worker, { key, ref, bytes: total, loadedAt: Date.now(), lastUsed: Date.now(), release: () => {} });
        }
        progress(Tier.GPU, total, total);
        disk.touch(key);
        dram.touch(key);
        return finish(worker.id, total);
      } catch (err) {
        await this.deps.engines.giveBack(worker);
        throw err;
      }
    } finally {
      unpinDisk();
    }
  }

  private record(tier: Tier, bytes: number, seconds: number): void {
    this.deps.bandwidth.record(tier, bytes, seconds);
    this.deps.metrics.loadBytes.inc({ tier: TIER_LABEL[tier] }, bytes);
  }

  /** Fetches missing chunks into the disk tier. */
  private async fetchMissing(
    ref: CheckpointRef,
    key: string,
    sources: ChunkSource[],
    timings: TierTime[],
    progress: (tier: Tier, done: number, total: number) => void,
  ): Promise<void> {
    const missing = this.deps.disk.missingChunks(key);
    if (missing.length === 0) return;
    const total = missing.reduce((s, c) => s + Number(c.byteLength), 0);
    const done = new Map<string, number>();
    let last = 0;
    progress(Tier.REMOTE, 0, total);
    const result = await this.deps.downloader.fetchChunks(ref, key, missing, sources, (p: ChunkProgress) => {
      done.set(p.fileName, p.bytesDone);
      const now = performance.now();
      if (now - last >= 100 || p.complete) {
        last = now;
        progress(Tier.REMOTE, [...done.values()].reduce((a, b) => a + b, 0), total);
      }
    });
    timings.push({ tier: Tier.REMOTE, bytes: result.bytes, seconds: result.seconds });
    this.record(Tier.REMOTE, result.bytes, result.seconds);
  }

  /**
   * Runs a native read of the model's chunks off disk; a chunk that fails its checksum is deleted,
   * fetched again and the read repeated (twice at most).
   */
  private async withRefetch<T>(
    ref: CheckpointRef,
    key: string,
    sources: ChunkSource[],
    timings: TierTime[],
    progress: (tier: Tier, done: number, total: number) => void,
    read: () => Promise<T>,
  ): Promise<T> {
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

  /** Disk → pinned pool, verified. */
  private async diskToDram(
    ref: CheckpointRef,
    key: string,
    index: CheckpointIndex,
    sources: ChunkSource[],
    timings: TierTime[],
    progress: (tier: Tier, done: number, total: number) => void,
  ): Promise<void> {
    const { disk, dram } = this.deps;
    const layout = checkpointLayout(index);
    const region = await dram.allocate(layout.totalBytes);
    try {
      const loaded = await this.withRefetch(ref, key, sources, timings, progress, () =>
        loadCheckpoint({
          pool: dram.pool!,
          index,
          folder: disk.modelDir(key),
          region,
          verify: true,
          onProgress: (p) => progress(Tier.DISK, p.readBytes, p.totalBytes),
        }),
      );
      const read = loaded.stats.read ?? { bytes: loaded.stats.bytes, seconds: loaded.stats.seconds };
      timings.push({ tier: Tier.DISK, bytes: read.bytes, seconds: read.seconds });
      this.record(Tier.DISK, read.bytes, read.seconds);
      dram.put(key, region, loaded.chunkOffsets, Number(index.totalBytes));
    } catch (err) {
      dram.abandon(region);
      throw err;
    }
  }

  /** CPU engine: it maps the pool region (no copy); the region stays in use while it serves. */
  private async loadOnCpu(worker: EngineWorker, key: string, index: CheckpointIndex, config: string, options: LoadOptions): Promise<() => void> {
    const { dram } = this.deps;
    const entry = dram.get(key);
    const common = { index, configJson: config, maxModelLen: options.maxModelLen ?? 0, kvCacheBytes: BigInt(this.deps.kvCacheBytes ?? 0) };
    if (entry === undefined) {
      // No pool: the worker reads (and verifies) the checkpoint folder itself.
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
    sources: ChunkSource[],
    timings: TierTime[],
    progress: (tier: Tier, done: number, total: number) => void,
  ): Promise<void> {
    const { dram, disk } = this.deps;
    const layout = checkpointLayout(index);
    const alloc = await worker.client.allocateWeights({ bytes: BigInt(layout.totalBytes) });
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
        const region: PoolRegion = await dram.allocate(layout.totalBytes);
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
          const copy = loaded.stats.copy ?? { bytes: loaded.stats.bytes, seconds: loaded.stats.seconds };
          timings.push({ tier: Tier.DISK, bytes: read.bytes, seconds: read.seconds });
          timings.push({ tier: Tier.DRAM, bytes: copy.bytes, seconds: copy.seconds });
          this.record(Tier.DISK, read.bytes, read.seconds);
          this.record(Tier.DRAM, copy.bytes, copy.seconds);
          dram.put(key, region, loaded.chunkOffsets, Number(index.totalBytes));
          chunkOffsets = loaded.chunkOffsets;
        } catch (err) {
          dram.abandon(region);
          throw err;
        }
      }
    } finally {
      device.dispose(); // closes this process's IPC mapping; the worker owns the memory
    }
    await worker.client.loadWeights({
      index,
      configJson: config,
      maxModelLen: options.maxModelLen ?? 0,
      kvCacheBytes: BigInt(this.deps.kvCacheBytes ?? 0),
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

  /** UnloadModel: drops the model from the engine, and down to DRAM or disk as asked. */
  async unload(ref: CheckpointRef, downTo: Tier): Promise<boolean> {
    const key = refKey(ref);
    if (this.flights.has(key)) throw new ConnectError(`${key} is loading`, Code.FailedPrecondition);
    let unloaded = false;
    const ext = this.deps.external.get(key);
    if (ext !== undefined) return ext.stop();
    unloaded = (await this.deps.engines.unload(key)) || unloaded;
    const to = downTo === Tier.UNSPECIFIED ? Tier.GPU : downTo;
    if (to >= Tier.DRAM) unloaded = this.deps.dram.evict(key) || unloaded;
    if (to >= Tier.DISK) {
      unloaded = (await this.deps.disk.dropModel(key)) > 0 || unloaded;
      this.meta.delete(key);
    }
    return unloaded;
  }

  /** Frees pool space a CPU engine holds, for the DRAM tier's reclaim. */
  reclaimPool(): Promise<boolean> {
    return this.deps.engines.reclaim((model) => this.deps.dram.get(model.key) !== undefined && this.deps.dram.get(model.key)!.uses > 0);
  }
}
