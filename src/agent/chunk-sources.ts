// Where the agent gets what its disk tier lacks: peer agents (AgentService.ReadChunk), the
// checkpoint store read directly, or the converter (ConverterService.ReadChunk / GetCheckpoint).
// Each source answers three questions: the index of a checkpoint, a side file, and a byte range
// of a chunk. "Not here" is SourceMissError, so the caller moves on to the next source.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { type CheckpointIndex, type CheckpointRef, CheckpointRefSchema } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import type { AgentService } from "../gen/thaw/agent/v1/agent_service_pb.js";
import type { ConverterService } from "../gen/thaw/converter/v1/converter_service_pb.js";
import { decodeIndex, validateIndex } from "../checkpoint/index-codec.js";
import { readIndex } from "../checkpoint/read-index.js";
import { type CheckpointStore, INDEX_FILE, NotFoundError } from "../store/store.js";

/** The source does not hold what was asked for (try the next one). */
export class SourceMissError extends Error {
  override readonly name = "SourceMissError";
}

export interface ChunkSource {
  /** For DownloadChunksResponse.source: "store", "peer host:port", "converter host:port". */
  readonly name: string;
  /** A cache that may be gone (a peer): one failed attempt and the next source is asked. */
  readonly optional?: boolean;
  readIndex(ref: CheckpointRef, key: string, signal?: AbortSignal): Promise<CheckpointIndex>;
  readFile(ref: CheckpointRef, key: string, name: string, signal?: AbortSignal): Promise<Uint8Array>;
  /** Bytes [offset, end of file) of a chunk, in pieces. */
  readChunk(ref: CheckpointRef, key: string, fileName: string, offset: number, signal?: AbortSignal): AsyncIterable<Uint8Array>;
}

function isMiss(err: unknown): boolean {
  if (err instanceof NotFoundError || err instanceof SourceMissError) return true;
  const e = ConnectError.from(err);
  return e.code === Code.NotFound;
}

/** Rethrows a source's "not found" as SourceMissError, anything else as is. */
function miss(err: unknown, what: string): never {
  if (isMiss(err)) throw new SourceMissError(`${what}: ${(err as Error).message}`);
  throw err;
}

async function collect(pieces: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of pieces) parts.push(p);
  return Buffer.concat(parts);
}

/** The checkpoint store, read directly. */
export class StoreSource implements ChunkSource {
  readonly name = "store";
  constructor(private readonly store: CheckpointStore) {}

  async readIndex(_ref: CheckpointRef, key: string): Promise<CheckpointIndex> {
    try {
      return await readIndex(this.store, key);
    } catch (err) {
      miss(err, `${key} in ${this.store.location}`);
    }
  }

  async readFile(_ref: CheckpointRef, key: string, name: string): Promise<Uint8Array> {
    try {
      return await this.store.read(key, name);
    } catch (err) {
      miss(err, `${key}/${name} in ${this.store.location}`);
    }
  }

  async *readChunk(_ref: CheckpointRef, key: string, fileName: string, offset: number, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    try {
      yield* this.store.readRange(key, fileName, offset, undefined, signal);
    } catch (err) {
      miss(err, `${key}/${fileName} in ${this.store.location}`);
    }
  }
}

/**
 * Reads through a ReadChunk RPC (the agent's and the converter's have the same shape). Side files
 * and the index are asked for by name too: agents serve them; a converter that does not answers
 * NOT_FOUND and the next source is tried.
 */
abstract class ReadChunkSource implements ChunkSource {
  abstract readonly name: string;
  protected abstract read(
    request: { ref: CheckpointRef; fileName: string; offset: bigint },
    signal?: AbortSignal,
  ): AsyncIterable<{ offset: bigint; data: Uint8Array }>;

  abstract readIndex(ref: CheckpointRef, key: string, signal?: AbortSignal): Promise<CheckpointIndex>;

  async readFile(ref: CheckpointRef, key: string, name: string, signal?: AbortSignal): Promise<Uint8Array> {
    try {
      return await collect(this.readChunk(ref, key, name, 0, signal));
    } catch (err) {
      miss(err, `${key}/${name} at ${this.name}`);
    }
  }

  async *readChunk(ref: CheckpointRef, key: string, fileName: string, offset: number, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    let at = BigInt(offset);
    try {
      for await (const piece of this.read({ ref, fileName, offset: at }, signal)) {
        if (piece.offset !== at) throw new ConnectError(`${this.name} sent bytes at ${piece.offset}, expected ${at}`, Code.DataLoss);
        at += BigInt(piece.data.byteLength);
        yield piece.data;
      }
    } catch (err) {
      miss(err, `${key}/${fileName} at ${this.name}`);
    }
  }
}

/** Another agent's disk tier. */
export class PeerSource extends ReadChunkSource {
  readonly name: string;
  readonly optional = true;
  constructor(
    readonly address: string,
    private readonly client: Client<typeof AgentService>,
  ) {
    super();
    this.name = `peer ${address}`;
  }

  protected read(request: { ref: CheckpointRef; fileName: string; offset: bigint }, signal?: AbortSignal) {
    return this.client.readChunk(request, { signal });
  }

  async readIndex(ref: CheckpointRef, key: string, signal?: AbortSignal): Promise<CheckpointIndex> {
    const index = decodeIndex(await this.readFile(ref, key, INDEX_FILE, signal));
    if (index.modelKey !== key) throw new SourceMissError(`${this.name} sent the index of ${index.modelKey} for ${key}`);
    return index;
  }
}

/** The converter: the origin of chunks when the agent has no direct access to the store. */
export class ConverterSource extends ReadChunkSource {
  readonly name: string;
  constructor(
    address: string,
    private readonly client: Client<typeof ConverterService>,
  ) {
    super();
    this.name = `converter ${address}`;
  }

  protected read(request: { ref: CheckpointRef; fileName: string; offset: bigint }, signal?: AbortSignal) {
    return this.client.readChunk(request, { signal });
  }

  async readIndex(ref: CheckpointRef, key: string, signal?: AbortSignal): Promise<CheckpointIndex> {
    try {
      const got = await this.client.getCheckpoint({ ref: create(CheckpointRefSchema, ref) }, { signal });
      if (got.index === undefined || got.index.modelKey !== key) throw new SourceMissError(`${this.name} has no index of ${key}`);
      validateIndex(got.index);
      return got.index;
    } catch (err) {
      miss(err, `${key} at ${this.name}`);
    }
  }
}
