// The checkpoint store: where converted checkpoints live (a local folder, S3, Azure Blob).
// Every backend keeps DESIGN.md §3's promise: a checkpoint exists only once its model.idx does,
// so a reader never sees half a checkpoint.

/** Name of the index object; written last. */
export const INDEX_FILE = "model.idx";

/** Size (and, where cheap, identity) of a stored object. */
export interface StoredObjectInfo {
  size: number;
}

/** Writes one object of a pending checkpoint. */
export interface StoreObjectWriter {
  /** Appends bytes; resolves when the backend has accepted them (back-pressure). */
  write(data: Uint8Array): Promise<void>;
  /** Finishes the object. */
  close(): Promise<void>;
}

/** A checkpoint being written: invisible to readers until `publish`. */
export interface CheckpointWrite {
  readonly modelKey: string;
  /** Starts a file (a chunk or a side file) inside the pending checkpoint. */
  create(name: string): Promise<StoreObjectWriter>;
  /** Writes the index last and makes the checkpoint visible atomically (replacing an older one). */
  publish(index: Uint8Array): Promise<void>;
  /** Drops everything written so far; safe to call after a failure or twice. */
  abort(): Promise<void>;
}

/** A checkpoint store. Model keys and file names are validated by the caller (see checkpoint/model-key). */
export interface CheckpointStore {
  /** The URL or path the store was opened from, for messages. */
  readonly location: string;
  /** Model keys of published checkpoints, sorted. */
  list(): Promise<string[]>;
  /** Size of a file of a published checkpoint, or undefined when absent. */
  stat(modelKey: string, name: string): Promise<StoredObjectInfo | undefined>;
  /** Reads a whole (small) file; throws NotFoundError when absent. */
  read(modelKey: string, name: string): Promise<Uint8Array>;
  /** Streams bytes [offset, offset+length) of a file (length undefined: to the end). */
  readRange(modelKey: string, name: string, offset: number, length?: number, signal?: AbortSignal): AsyncIterable<Uint8Array>;
  /** Begins writing a checkpoint under `modelKey`. */
  beginWrite(modelKey: string): Promise<CheckpointWrite>;
  /** Deletes a checkpoint, index first; returns the bytes freed (0 when absent). */
  delete(modelKey: string): Promise<number>;
  /** The local folder of a published checkpoint when the store is a local directory (fast paths). */
  localPath?(modelKey: string): string;
}

/** A file or checkpoint that is not in the store. */
export class NotFoundError extends Error {
  override readonly name = "NotFoundError";
}
