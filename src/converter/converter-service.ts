// ConverterService: conversion into the store (shared between concurrent callers), listing,
// deletion, and ranged chunk reads — the origin of every chunk an agent downloads.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  CheckpointSummarySchema,
  type CheckpointIndex,
  type CheckpointRef,
} from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import {
  ConvertPhase,
  type ConverterService,
  type ConvertRequest,
  type ConvertResponse,
  type ConvertResponseSchema,
  type DeleteCheckpointRequest,
  type GetCheckpointRequest,
  type ListCheckpointsRequest,
  type ReadChunkRequest,
} from "../gen/thaw/converter/v1/converter_service_pb.js";
import { INDEX_FILE, NotFoundError, type CheckpointStore } from "../store/store.js";
import { pushStream } from "../shared/push-stream.js";
import { SharedFlights } from "../shared/shared-flight.js";
import { defaultModelId } from "./convert.js";

/** Progress fields of a ConvertResponse (everything but the final index). */
export type ConvertProgress = Omit<ConvertResponse, "$typeName" | "index" | "$unknown">;

/** What a conversion needs from a request. */
export interface ConvertJob {
  source: string;
  revision: string;
  modelId: string;
  chunkSize?: number;
  overwrite: boolean;
}

/** The converter's collaborators, injected so tests can put real or controlled ones behind them. */
export interface ConverterDeps {
  store: CheckpointStore;
  /** Runs one conversion into the store; throws ConnectError on bad input. */
  convert(job: ConvertJob, signal: AbortSignal, onProgress: (progress: ConvertProgress) => void): Promise<CheckpointIndex>;
  /** The store folder of a checkpoint; throws ConnectError(InvalidArgument) for ids that could escape it. */
  modelKey(ref: CheckpointRef): string;
  /** Reads and validates a published index; throws NotFoundError when absent. */
  readIndex(store: CheckpointStore, modelKey: string): Promise<CheckpointIndex>;
}

/** Bytes per ReadChunk message: well under gRPC's default 4 MiB message limit. */
export const READ_CHUNK_PIECE = 1 << 20;

export class ConverterServiceImpl implements ServiceImpl<typeof ConverterService> {
  // Concurrent requests for one checkpoint share its conversion; the last caller to leave cancels it.
  private readonly conversions = new SharedFlights<ConvertProgress, CheckpointIndex>("abort");

  constructor(private readonly deps: ConverterDeps) {}

  async *convert(request: ConvertRequest, ctx: HandlerContext): AsyncGenerator<MessageInitShape<typeof ConvertResponseSchema>> {
    const source = request.source.trim();
    if (source === "") throw new ConnectError("source is empty: give a Hugging Face repo id or a folder", Code.InvalidArgument);
    const job: ConvertJob = {
      source,
      revision: request.revision || "main",
      modelId: request.modelId || defaultModelId(source),
      chunkSize: request.chunkSize === 0n ? undefined : Number(request.chunkSize),
      overwrite: request.overwrite,
    };
    const key = this.deps.modelKey({ $typeName: "thaw.checkpoint.v1.CheckpointRef", modelId: job.modelId, revision: job.revision });
    let index: CheckpointIndex | undefined;
    yield* pushStream<ConvertProgress>(async (emit) => {
      index = await this.conversions.run(key, (report, signal) => this.deps.convert(job, signal, report), emit, ctx.signal);
    }, ctx.signal);
    yield { phase: ConvertPhase.DONE, index, message: `published ${index!.modelKey}` };
  }

  async getCheckpoint(request: GetCheckpointRequest) {
    return { index: await this.index(request.ref) };
  }

  async listCheckpoints(request: ListCheckpointsRequest) {
    const checkpoints = [];
    for (const key of await this.deps.store.list()) {
      let index: CheckpointIndex;
      try {
        index = await this.deps.readIndex(this.deps.store, key);
      } catch (err) {
        if (err instanceof NotFoundError) continue; // deleted meanwhile
        throw err;
      }
      if (!index.ref?.modelId.startsWith(request.modelIdPrefix)) continue;
      checkpoints.push(
        create(CheckpointSummarySchema, {
          ref: index.ref,
          modelKey: index.modelKey,
          totalBytes: index.totalBytes,
          tensorCount: index.tensors.length,
          chunkCount: index.chunks.length,
          architecture: index.architecture,
          createdUnixMs: index.createdUnixMs,
        }),
      );
    }
    return { checkpoints };
  }

  async deleteCheckpoint(request: DeleteCheckpointRequest) {
    const key = this.key(request.ref);
    const freed = await this.deps.store.delete(key);
    if (freed === 0) throw new ConnectError(`no checkpoint ${key} in ${this.deps.store.location}`, Code.NotFound);
    return { bytesFreed: BigInt(freed) };
  }

  async *readChunk(request: ReadChunkRequest, ctx: HandlerContext) {
    const index = await this.index(request.ref);
    const fileLength = await this.servedFileLength(index, request.fileName);
    const offset = request.offset;
    if (offset > fileLength) {
      throw new ConnectError(`offset ${offset} is past the end of ${request.fileName} (${fileLength} bytes)`, Code.OutOfRange);
    }
    const available = fileLength - offset;
    const length = request.length === 0n || request.length > available ? available : request.length;
    let at = offset;
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    const range = this.deps.store.readRange(index.modelKey, request.fileName, Number(offset), Number(length), ctx.signal);
    for await (const data of range) {
      pending.push(data);
      pendingBytes += data.byteLength;
      while (pendingBytes >= READ_CHUNK_PIECE) {
        const piece = takeBytes(pending, READ_CHUNK_PIECE);
        pendingBytes -= piece.byteLength;
        yield { offset: at, data: piece, fileLength };
        at += BigInt(piece.byteLength);
      }
    }
    if (pendingBytes > 0) yield { offset: at, data: takeBytes(pending, pendingBytes), fileLength };
    pending = [];
  }

  /**
   * Length of a file ReadChunk may serve: a chunk or side file the index lists, or the index itself
   * (so an agent whose only origin is the converter gets everything a load needs). No other name
   * reaches the store, so no path from a request can leave the checkpoint.
   */
  private async servedFileLength(index: CheckpointIndex, fileName: string): Promise<bigint> {
    const chunk = index.chunks.find((c) => c.fileName === fileName);
    if (chunk !== undefined) return chunk.byteLength;
    const extra = index.extraFiles.find((f) => f.name === fileName);
    if (extra !== undefined) return extra.size;
    if (fileName === INDEX_FILE) {
      const info = await this.deps.store.stat(index.modelKey, INDEX_FILE);
      if (info !== undefined) return BigInt(info.size);
    }
    throw new ConnectError(`${index.modelKey} has no file named ${JSON.stringify(fileName)}`, Code.NotFound);
  }

  private key(ref: CheckpointRef | undefined): string {
    if (ref === undefined || ref.modelId === "") throw new ConnectError("ref.model_id is required", Code.InvalidArgument);
    return this.deps.modelKey({ ...ref, revision: ref.revision || "main" });
  }

  private async index(ref: CheckpointRef | undefined): Promise<CheckpointIndex> {
    const key = this.key(ref);
    try {
      return await this.deps.readIndex(this.deps.store, key);
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new ConnectError(`no checkpoint ${key} in ${this.deps.store.location}; convert it first`, Code.NotFound);
      }
      throw err;
    }
  }
}

/** Removes exactly `n` bytes from the front of `parts` (which hold at least `n`). */
function takeBytes(parts: Uint8Array[], n: number): Uint8Array {
  if (parts[0].byteLength === n) return parts.shift()!;
  const out = new Uint8Array(n);
  let filled = 0;
  while (filled < n) {
    const head = parts[0];
    const take = Math.min(head.byteLength, n - filled);
    out.set(head.subarray(0, take), filled);
    filled += take;
    if (take === head.byteLength) parts.shift();
    else parts[0] = head.subarray(take);
  }
  return out;
}
