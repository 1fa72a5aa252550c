// Converts a Hugging Face safetensors model (a Hub repository or a local folder) into a thaw
// checkpoint in a store. Progress has the shape of ConvertResponse; every failure is a
// ConnectError; a conversion that fails or is killed half-way publishes nothing.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { writeCheckpoint } from "../checkpoint/checkpoint-writer.js";
import { DEFAULT_CHUNK_SIZE } from "../checkpoint/format.js";
import { DEFAULT_REVISION, checkModelId, checkRevision, modelKey } from "../checkpoint/model-key.js";
import { readIndex } from "../checkpoint/read-index.js";
import type { CheckpointIndex } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { ConvertPhase } from "../gen/thaw/converter/v1/converter_service_pb.js";
import { type CheckpointStore, NotFoundError } from "../store/store.js";
import { toConvertError } from "./convert-error.js";
import type { HubSettings } from "./sources/hub-client.js";
import { resolveHubSource } from "./sources/hub-source.js";
import { resolveLocalFolder } from "./sources/local-folder-source.js";
import type { TensorInput } from "../checkpoint/tensor-input.js";
import { checkModelConfig, ModelConfigError } from "./model-config.js";
import { describeQuantization } from "./quantization.js";
import { expertOrder } from "./expert-order.js";
import { CONFIG_FILE } from "./sources/repo-files.js";
import type { ResolvedSource } from "./sources/resolved-source.js";
import { openWeightFiles } from "./sources/weight-files.js";

/**
 * Progress of a conversion: the fields of ConvertResponse. The DONE message is the caller's to
 * send, with the index convertModel returns; the last report here is PUBLISHING at 100% (or
 * RESOLVING "already converted" when an existing checkpoint is returned).
 */
export interface ConvertProgress {
  phase: ConvertPhase;
  filesDone: number;
  filesTotal: number;
  bytesDone: bigint;
  bytesTotal: bigint;
  tensorsDone: number;
  tensorsTotal: number;
  message: string;
}

/** Options of convertModel. */
export interface ConvertOptions {
  /** A Hub repo id ("org/name") or a local folder (absolute, or starting with "./" or "../"). */
  source: string;
  /** Hub revision (branch, tag, commit); for a folder, the revision recorded. Empty: "main". */
  revision?: string;
  /** Model id to store under; empty: the repo id, or the folder's name. */
  modelId?: string;
  /** Target chunk size in bytes; 0 or absent: 256 MiB. */
  chunkSize?: number;
  /** Convert again even if the checkpoint exists (otherwise its index is returned). */
  overwrite?: boolean;
  store: CheckpointStore;
  /** Local sources must resolve (through links) inside one of these; undefined allows any folder. */
  localRoots?: readonly string[];
  hub?: HubSettings;
  /** Keep Hub downloads in the cache after a successful conversion (default: remove them). */
  keepDownloads?: boolean;
  /** Compute SHA-256 of local weight files for the index's provenance (costs a read of every byte; default false). */
  hashLocalFiles?: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: ConvertProgress) => void;
  /** Copy tuning: buffer size and count (see writeCheckpoint). */
  blockSize?: number;
  buffers?: number;
  /** Minimum time between two progress reports within a phase (default 100 ms). */
  progressIntervalMs?: number;
}

/** True when `source` names a local folder rather than a Hub repository. */
export function isLocalSource(source: string): boolean {
  return source.startsWith("/") || source.startsWith("./") || source.startsWith("../") || source === "." || source === ".." || source.startsWith("file://");
}

/** The model id a source is stored under when none is given: the repo id, or the folder's name. */
export function defaultModelId(source: string): string {
  return isLocalSource(source) ? path.basename(path.resolve(source.replace(/^file:\/\//, ""))) : source;
}

/** Converts `options.source` into `options.store` and returns the published index. */
export async function convertModel(options: ConvertOptions): Promise<CheckpointIndex> {
  const { signal } = options;
  const source = options.source.trim();
  const report = new Reporter(options.onProgress, options.progressIntervalMs ?? 100);
  let what = source;
  try {
    signal?.throwIfAborted();
    if (source === "") throw new ConnectError("source is empty: give a Hugging Face repo id or a local folder", Code.InvalidArgument);
    if (source.includes("\0")) throw new ConnectError("source contains a NUL byte", Code.InvalidArgument);
    const local = isLocalSource(source);
    const folder = local ? path.resolve(source.replace(/^file:\/\//, "")) : "";
    const revision = options.revision || DEFAULT_REVISION;
    checkRevision(revision);
    if (!local) checkModelId(source);
    const modelId = options.modelId || defaultModelId(source);
    const key = modelKey(modelId, revision);
    what = key;
    const chunkSize = options.chunkSize || DEFAULT_CHUNK_SIZE;
    if (!Number.isSafeInteger(chunkSize) || chunkSize < 4096) {
      throw new ConnectError(`chunk size ${chunkSize} is too small: at least 4096 bytes`, Code.InvalidArgument);
    }

    report.emit({ phase: ConvertPhase.RESOLVING, message: `resolving ${source}` }, true);
    if (!options.overwrite) {
      const existing = await existingIndex(options.store, key);
      if (existing !== undefined) {
        report.emit({ phase: ConvertPhase.RESOLVING, message: `${key} is already converted` }, true);
        return existing;
      }
    }

    let resolved: ResolvedSource;
    let cacheFolder: string | undefined;
    if (local) {
      resolved = await resolveLocalFolder(folder, options.localRoots, revision);
    } else {
      const hub = await resolveHubSource(source, revision, {
        hub: options.hub,
        signal,
        onListed: (filesTotal, bytesTotal) =>
          report.emit({ phase: ConvertPhase.DOWNLOADING, filesTotal, bytesTotal: BigInt(bytesTotal), message: `downloading ${source}` }, true),
        onProgress: (p) =>
          report.emit({
            phase: ConvertPhase.DOWNLOADING,
            filesDone: p.filesDone,
            filesTotal: p.filesTotal,
            bytesDone: BigInt(p.bytesDone),
            bytesTotal: BigInt(p.bytesTotal),
            message: p.file,
          }),
      });
      resolved = hub;
      cacheFolder = hub.cacheFolder;
    }
    signal?.throwIfAborted();

    const { architecture, config } = await readConfig(resolved);
    if (local && options.hashLocalFiles) {
      for (const f of resolved.weightFiles) f.sha256 = await sha256File(f.path, signal);
    }
    const weights = await openWeightFiles(resolved.weightFiles, resolved.shardIndex);
    let index: CheckpointIndex;
    try {
      if (weights.tensors.length === 0) throw new ConnectError(`${source} has no tensors`, Code.InvalidArgument);
      const quantization = quantizationOrRefusal(config, weights.tensors, resolved.location);
      // Files are done once their last tensor is: tensors arrive file by file.
      const order = expertOrder(weights.tensors.map((t, i) => ({ name: t.name, i })));
      const tensors = order.map((o) => weights.tensors[o.i]);
      const lastOfFile = resolved.weightFiles.map((_, f) => order.map((o) => weights.fileOf[o.i]).lastIndexOf(f));
      const filesTotal = resolved.weightFiles.length;
      const tensorsTotal = weights.tensors.length;
      report.emit({ phase: ConvertPhase.WRITING, filesTotal, tensorsTotal, message: `writing ${key}` }, true);
      index = await writeCheckpoint(options.store, tensors, {
        modelId,
        revision,
        chunkSize,
        sideFiles: resolved.sideFiles.map((f) => ({ name: f.name, path: f.path })),
        source: {
          modelId: local ? modelId : source,
          revision: resolved.revision,
          location: resolved.location,
          files: resolved.weightFiles.map((f) => ({ name: f.name, size: BigInt(f.size), sha256: f.sha256 })),
        },
        architecture,
        quantization,
        metadata: weights.metadata,
        signal,
        blockSize: options.blockSize,
        buffers: options.buffers,
        onProgress: (p) => {
          const filesDone = lastOfFile.filter((last) => last < p.tensorsDone).length;
          const publishing = p.stage === "publishing";
          report.emit(
            {
              phase: publishing ? ConvertPhase.PUBLISHING : ConvertPhase.WRITING,
              filesDone,
              filesTotal,
              bytesDone: BigInt(p.bytesDone),
              bytesTotal: BigInt(p.bytesTotal),
              tensorsDone: p.tensorsDone,
              tensorsTotal,
              message: publishing ? `publishing ${key}` : `writing ${key}`,
            },
            publishing,
          );
        },
      });
    } finally {
      await weights.close();
    }
    if (cacheFolder !== undefined && !options.keepDownloads) await rm(cacheFolder, { recursive: true, force: true });
    report.emit(
      {
        phase: ConvertPhase.PUBLISHING,
        filesDone: resolved.weightFiles.length,
        filesTotal: resolved.weightFiles.length,
        bytesDone: index.totalBytes,
        bytesTotal: index.totalBytes,
        tensorsDone: weights.tensors.length,
        tensorsTotal: weights.tensors.length,
        message: `published ${key}`,
      },
      true,
    );
    return index;
  } catch (err) {
    throw toConvertError(err, what, signal);
  }
}

async function existingIndex(store: CheckpointStore, key: string): Promise<CheckpointIndex | undefined> {
  try {
    return await readIndex(store, key);
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    // A corrupt index is replaced by converting again.
    if (err instanceof ConnectError && err.code === Code.DataLoss) return undefined;
    throw err;
  }
}

/** config.json and the architecture it names; InvalidArgument when it is not JSON, names impossible sizes or an architecture the engine does not serve. */
async function readConfig(source: ResolvedSource): Promise<{ architecture: string; config: Record<string, unknown> }> {
  const config = source.sideFiles.find((f) => f.name === CONFIG_FILE);
  if (config === undefined) throw new ConnectError(`${source.location} has no ${CONFIG_FILE}`, Code.FailedPrecondition);
  let json: { architectures?: unknown };
  try {
    json = JSON.parse(await readFile(config.path, "utf8"));
  } catch (err) {
    throw new ConnectError(`${source.location}/${CONFIG_FILE} is not valid JSON: ${(err as Error).message}`, Code.InvalidArgument);
  }
  try {
    checkModelConfig(json);
  } catch (err) {
    if (!(err instanceof ModelConfigError)) throw err;
    throw new ConnectError(`${source.location}/${CONFIG_FILE}: ${err.message}`, Code.InvalidArgument);
  }
  const arch = Array.isArray(json?.architectures) ? json.architectures[0] : undefined;
  return { architecture: typeof arch === "string" ? arch : "", config: json as Record<string, unknown> };
}

/** The index's record of FP8 weights; InvalidArgument when the tensors do not match config.json's quantization_config. */
function quantizationOrRefusal(config: Record<string, unknown>, tensors: readonly TensorInput[], location: string): ReturnType<typeof describeQuantization> {
  try {
    return describeQuantization(config, tensors);
  } catch (err) {
    if (!(err instanceof ModelConfigError)) throw err;
    throw new ConnectError(`${location}: ${err.message}`, Code.InvalidArgument);
  }
}

async function sha256File(file: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  for await (const piece of createReadStream(file, { highWaterMark: 4 << 20, signal })) hash.update(piece as Buffer);
  return hash.digest("hex");
}

/** Emits progress, at most one report per interval within a phase unless forced. */
class Reporter {
  private last = 0;
  private state: ConvertProgress = {
    phase: ConvertPhase.UNSPECIFIED,
    filesDone: 0,
    filesTotal: 0,
    bytesDone: 0n,
    bytesTotal: 0n,
    tensorsDone: 0,
    tensorsTotal: 0,
    message: "",
  };

  constructor(
    private readonly sink: ((progress: ConvertProgress) => void) | undefined,
    private readonly intervalMs: number,
  ) {}

  emit(update: Partial<ConvertProgress> & { phase: ConvertPhase }, force = false): void {
    if (this.sink === undefined) return;
    const phaseChanged = update.phase !== this.state.phase;
    const fileFinished = update.filesDone !== undefined && update.filesDone !== this.state.filesDone;
    this.state = phaseChanged ? { ...this.state, filesDone: 0, filesTotal: 0, bytesDone: 0n, bytesTotal: 0n, tensorsDone: 0, tensorsTotal: 0, ...update } : { ...this.state, ...update };
    const now = performance.now();
    if (!force && !phaseChanged && !fileFinished && now - this.last < this.intervalMs) return;
    this.last = now;
    this.sink({ ...this.state });
  }
}
