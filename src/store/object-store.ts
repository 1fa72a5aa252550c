// A CheckpointStore over an object service (S3, Azure Blob). The layout and the publish protocol
// are in object-layout.ts; this class adds generation lookup for readers, ranged and parallel
// reads, listing and deletion. Backends supply the raw object operations.
import { checkFileName, checkModelKey } from "../checkpoint/model-key.js";
import type { ObjectBackend, ObjectHead } from "./object-backend.js";
import { ObjectCheckpointWrite } from "./object-checkpoint-write.js";
import { ObjectLayout } from "./object-layout.js";
import { readFully, readObjectRange } from "./ranged-read.js";
import { withRetry } from "./retry.js";
import {
  INDEX_FILE,
  NotFoundError,
  type CheckpointStore,
  type CheckpointWrite,
  type StoredObjectInfo,
} from "./store.js";
import { resolveTransferOptions, type TransferOptions } from "./transfer-options.js";

/** Options shared by the object stores. */
export interface ObjectStoreOptions {
  /** Part sizes, parallelism and retries (defaults in transfer-options.ts). */
  transfer?: Partial<TransferOptions>;
  /** Where trouble that does not fail an operation is reported; default: process.emitWarning. */
  warn?: (message: string) => void;
}

/** HEADs of indexes in flight at once while listing. */
const LIST_CONCURRENCY = 16;

export class ObjectStore implements CheckpointStore {
  readonly location: string;
  protected readonly transfer: TransferOptions;
  private readonly layout: ObjectLayout;
  private readonly warn: (message: string) => void;
  /** Generation of the index this store last saw per checkpoint; refreshed when a file is missing. */
  private readonly generations = new Map<string, string>();
  private containerChecked?: Promise<void>;

  constructor(
    protected readonly backend: ObjectBackend,
    prefix: string,
    options: ObjectStoreOptions = {},
  ) {
    this.location = backend.location;
    this.layout = new ObjectLayout(prefix);
    this.transfer = resolveTransferOptions(options.transfer);
    if (this.transfer.partSize < backend.minPartSize) {
      throw new RangeError(`${backend.location}: part size ${this.transfer.partSize} is below the service's minimum of ${backend.minPartSize} bytes`);
    }
    this.warn = options.warn ?? ((message) => process.emitWarning(message, "ThawStoreWarning"));
  }

  async list(): Promise<string[]> {
    const folders = await this.retry(() => this.backend.listFolders(this.layout.prefix));
    const published: string[] = [];
    for (let i = 0; i < folders.length; i += LIST_CONCURRENCY) {
      const batch = folders.slice(i, i + LIST_CONCURRENCY);
      const heads = await Promise.all(batch.map((key) => this.retry(() => this.backend.head(this.layout.indexKey(key)))));
      batch.forEach((key, j) => {
        if (heads[j] !== undefined) published.push(key);
      });
    }
    if (folders.length === 0) await this.checkContainer();
    return published.sort();
  }

  async stat(modelKey: string, name: string): Promise<StoredObjectInfo | undefined> {
    checkNames(modelKey, name);
    if (name === INDEX_FILE) {
      const head = await this.headIndex(modelKey);
      return head && { size: head.size };
    }
    try {
      const head = await this.locate(modelKey, name, (key) => this.retry(() => this.backend.head(key)));
      return head && { size: head.size };
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
  }

  async read(modelKey: string, name: string): Promise<Uint8Array> {
    checkNames(modelKey, name);
    if (name === INDEX_FILE) {
      const head = await this.headIndex(modelKey);
      if (head === undefined) throw this.missingCheckpoint(modelKey);
      return readFully(this.backend, this.layout.indexKey(modelKey), 0, head.size, this.transfer);
    }
    const bytes = await this.locate(modelKey, name, async (key) => {
      try {
        return await readFully(this.backend, key, 0, undefined, this.transfer);
      } catch (error) {
        if (error instanceof NotFoundError) return undefined;
        throw error;
      }
    });
    if (bytes === undefined) throw this.missingFile(modelKey, name);
    return bytes;
  }

  async *readRange(modelKey: string, name: string, offset: number, length?: number, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`offset must be a non-negative integer, got ${offset}`);
    if (length !== undefined && (!Number.isSafeInteger(length) || length < 0)) throw new RangeError(`length must be a non-negative integer, got ${length}`);
    checkNames(modelKey, name);
    let key = "";
    const head =
      name === INDEX_FILE
        ? await this.headIndex(modelKey)
        : await this.locate(modelKey, name, async (candidate) => {
            key = candidate;
            return this.retry(() => this.backend.head(candidate, signal), signal);
          });
    if (name === INDEX_FILE) key = this.layout.indexKey(modelKey);
    if (head === undefined) throw name === INDEX_FILE ? this.missingCheckpoint(modelKey) : this.missingFile(modelKey, name);
    // As on disk: a range past the end yields what there is.
    const end = Math.min(head.size, length === undefined ? head.size : offset + length);
    yield* readObjectRange(this.backend, key, offset, end, this.transfer, signal, head.size);
  }

  async beginWrite(modelKey: string): Promise<CheckpointWrite> {
    checkModelKey(modelKey);
    await this.headIndex(modelKey); // fails early on a missing bucket or rejected credentials
    return new ObjectCheckpointWrite(
      {
        backend: this.backend,
        layout: this.layout,
        transfer: this.transfer,
        warn: this.warn,
        onPublished: (key, generation) => this.generations.set(key, generation),
      },
      modelKey,
      this.layout.newGeneration(),
    );
  }

  async delete(modelKey: string): Promise<number> {
    checkModelKey(modelKey);
    const indexKey = this.layout.indexKey(modelKey);
    const index = await this.headIndex(modelKey);
    this.generations.delete(modelKey);
    // Index first: from here on the checkpoint does not exist, even if the rest fails.
    if (index !== undefined) await this.retry(() => this.backend.deleteObjects([indexKey]));
    const objects = (await this.retry(() => this.backend.listObjects(this.layout.folder(modelKey)))).filter((o) => o.key !== indexKey);
    for (let i = 0; i < objects.length; i += 1000) {
      const batch = objects.slice(i, i + 1000).map((o) => o.key);
      await this.retry(() => this.backend.deleteObjects(batch));
    }
    return objects.reduce((sum, o) => sum + o.size, index?.size ?? 0);
  }

  /** HEADs the index, remembering its generation; undefined when the checkpoint is absent. */
  private async headIndex(modelKey: string): Promise<ObjectHead | undefined> {
    const head = await this.retry(() => this.backend.head(this.layout.indexKey(modelKey)));
    if (head === undefined) {
      this.generations.delete(modelKey);
      await this.checkContainer(); // a missing bucket looks like a missing object to HEAD
      return undefined;
    }
    this.generations.set(modelKey, this.layout.generationOf(head.metadata));
    return head;
  }

  /**
   * Runs `use` on the object key of a file of a published checkpoint. When the file is missing
   * under a remembered generation, the index may have moved on: look it up again and retry once.
   */
  private async locate<T>(modelKey: string, name: string, use: (key: string) => Promise<T | undefined>): Promise<T | undefined> {
    const cached = this.generations.get(modelKey);
    const generation = cached ?? (await this.currentGeneration(modelKey));
    const result = await use(this.layout.fileKey(modelKey, generation, name));
    if (result !== undefined || cached === undefined) return result;
    const fresh = await this.currentGeneration(modelKey);
    return fresh === generation ? undefined : use(this.layout.fileKey(modelKey, fresh, name));
  }

  private async currentGeneration(modelKey: string): Promise<string> {
    const head = await this.headIndex(modelKey);
    if (head === undefined) throw this.missingCheckpoint(modelKey);
    return this.layout.generationOf(head.metadata);
  }

  private checkContainer(): Promise<void> {
    // Remember success only: a bucket created later must still be found.
    this.containerChecked ??= this.retry(() => this.backend.checkContainer()).catch((error: unknown) => {
      this.containerChecked = undefined;
      throw error;
    });
    return this.containerChecked;
  }

  private missingCheckpoint(modelKey: string): NotFoundError {
    return new NotFoundError(`${this.location}: no checkpoint ${modelKey} (no ${INDEX_FILE})`);
  }

  private missingFile(modelKey: string, name: string): NotFoundError {
    return new NotFoundError(`${this.location}: ${modelKey}/${name} not found`);
  }

  private retry<T>(operation: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return withRetry(operation, this.transfer, signal);
  }
}

/** Model keys and file names become object keys: only what the checkpoint module allows. */
function checkNames(modelKey: string, name: string): void {
  checkModelKey(modelKey);
  checkFileName(name);
}
