// Opens a published checkpoint from a store, verifies it, and returns tensor bytes by name
// (aliases included). Meant for tools, tests and the converter; the agent's loader reads chunks
// natively with the same index.
import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type CheckpointIndex,
  ChecksumAlgorithm,
  type TensorEntry,
} from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { crc32c } from "../native/checksum.js";
import { type CheckpointStore, NotFoundError } from "../store/store.js";
import { readIndex } from "./read-index.js";

/** Options of CheckpointReader.open. */
export interface OpenCheckpointOptions {
  /** Check every chunk's length and checksum and every side file's digest before returning (default true). */
  verify?: boolean;
  signal?: AbortSignal;
}

/** A published checkpoint, opened for reading. */
export class CheckpointReader {
  private readonly byName = new Map<string, TensorEntry>();

  private constructor(
    private readonly store: CheckpointStore,
    /** The decoded, validated index. */
    readonly index: CheckpointIndex,
  ) {
    for (const t of index.tensors) {
      this.byName.set(t.name, t);
      for (const alias of t.aliases) this.byName.set(alias, t);
    }
  }

  /** Reads and validates model.idx of `modelKey`; NotFound when the checkpoint is not published. */
  static async open(store: CheckpointStore, modelKey: string, options: OpenCheckpointOptions = {}): Promise<CheckpointReader> {
    let index: CheckpointIndex;
    try {
      index = await readIndex(store, modelKey);
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new ConnectError(`checkpoint ${modelKey} not found in ${store.location}`, Code.NotFound);
      }
      throw err;
    }
    const reader = new CheckpointReader(store, index);
    if (options.verify ?? true) await reader.verify(options.signal);
    return reader;
  }

  /** Every tensor name, aliases included, in index order. */
  names(): string[] {
    return [...this.byName.keys()];
  }

  /** The index entry holding `name` (the original's entry for an alias); NotFound when absent. */
  entry(name: string): TensorEntry {
    const entry = this.byName.get(name);
    if (entry === undefined) {
      throw new ConnectError(`tensor ${name} is not in checkpoint ${this.index.modelKey}`, Code.NotFound);
    }
    return entry;
  }

  /** The bytes of tensor `name` (or of the tensor it is an alias of). */
  async tensor(name: string, signal?: AbortSignal): Promise<Uint8Array> {
    const entry = this.entry(name);
    const length = Number(entry.byteLength);
    const out = new Uint8Array(length);
    if (length === 0) return out;
    let filled = 0;
    const file = this.index.chunks[entry.chunk].fileName;
    for await (const piece of this.store.readRange(this.index.modelKey, file, Number(entry.offset), length, signal)) {
      if (filled + piece.length > length) throw new ConnectError(`${file} returned more bytes than asked`, Code.DataLoss);
      out.set(piece, filled);
      filled += piece.length;
    }
    if (filled !== length) {
      throw new ConnectError(`${file} ended after ${filled} of ${length} bytes of tensor ${name}`, Code.DataLoss);
    }
    return out;
  }

  /** Checks every chunk's length and checksum and every side file's size and SHA-256; DataLoss on a mismatch. */
  async verify(signal?: AbortSignal): Promise<void> {
    const key = this.index.modelKey;
    for (const chunk of this.index.chunks) {
      if (chunk.checksum?.algorithm !== ChecksumAlgorithm.CRC32C) {
        throw new ConnectError(`${key}/${chunk.fileName}: checksum algorithm ${chunk.checksum?.algorithm} is not supported here`, Code.Unimplemented);
      }
      let crc = 0;
      let length = 0;
      for await (const piece of this.readWhole(chunk.fileName, signal)) {
        crc = await crc32c(piece, crc);
        length += piece.length;
      }
      if (BigInt(length) !== chunk.byteLength) {
        throw new ConnectError(`${key}/${chunk.fileName} has ${length} bytes, the index says ${chunk.byteLength}`, Code.DataLoss);
      }
      if (BigInt(crc) !== chunk.checksum.value) {
        throw new ConnectError(`${key}/${chunk.fileName}: CRC-32C mismatch (corrupt chunk)`, Code.DataLoss);
      }
    }
    for (const extra of this.index.extraFiles) {
      const hash = createHash("sha256");
      let size = 0;
      for await (const piece of this.readWhole(extra.name, signal)) {
        hash.update(piece);
        size += piece.length;
      }
      if (BigInt(size) !== extra.size || hash.digest("hex") !== extra.sha256) {
        throw new ConnectError(`${key}/${extra.name} does not match its size or SHA-256 in the index`, Code.DataLoss);
      }
    }
  }

  private async *readWhole(name: string, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    try {
      yield* this.store.readRange(this.index.modelKey, name, 0, undefined, signal);
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new ConnectError(`${this.index.modelKey}/${name} is missing from ${this.store.location}`, Code.DataLoss);
      }
      throw err;
    }
  }
}
