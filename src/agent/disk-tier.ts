// The disk tier (DESIGN.md §4, cache level 2): verified chunk files of checkpoints on local disk,
// laid out as a checkpoint folder so the native loader reads them directly:
//   <dir>/models/<model-key>/model.idx, side files, chunk-NNNNN.bin      (complete, verified files)
//   <dir>/partial/<model-key>/<chunk>.part                               (downloads in progress)
// Every file appears under models/ only by rename from a finished temporary file. Chunks are
// accounted against a byte budget and evicted least recently used model first (a chunk at a
// time), never from a model that is pinned (being downloaded, loaded or served to a peer).
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, readdir, rename, rm, stat, unlink, utimes } from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CheckpointIndex, ChunkEntry } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { decodeIndex, encodeIndex } from "../checkpoint/index-codec.js";
import { checkFileName, checkModelKey } from "../checkpoint/model-key.js";
import { INDEX_FILE } from "../store/store.js";
import { crc32c } from "../native/index.js";

interface DiskModel {
  key: string;
  index: CheckpointIndex;
  /** Chunk file name → bytes, for chunks present under models/. */
  chunks: Map<string, number>;
  lastUsed: number;
}

export interface DiskTierOptions {
  /** The agent's state folder. */
  dir: string;
  /** Bytes the chunk files may take in all. */
  budgetBytes: number;
  /**
   * fsync files before they are renamed into place (default false: every chunk is checked against
   * its CRC-32C again before it is loaded or served after a restart, so a file a power cut left
   * half written is found and fetched again, never used).
   */
  fsync?: boolean;
  /** Called with the bytes of each evicted chunk. */
  onEvict?: (modelKey: string, fileName: string, bytes: number) => void;
}

export interface DiskModelInfo {
  key: string;
  index: CheckpointIndex;
  diskChunks: number;
  totalChunks: number;
  diskBytes: number;
  complete: boolean;
}

export class DiskTier {
  readonly budgetBytes: number;
  private readonly modelsRoot: string;
  private readonly partialRoot: string;
  private readonly models = new Map<string, DiskModel>();
  private readonly pins = new Map<string, number>();
  /** Chunks found good, with the file signature they had then. */
  private readonly verified = new Map<string, string>();
  private used = 0;
  private reserved = 0;
  private lastStamp = 0;
  private readonly fsync: boolean;

  private constructor(private readonly options: DiskTierOptions) {
    this.budgetBytes = options.budgetBytes;
    this.modelsRoot = path.join(options.dir, "models");
    this.partialRoot = path.join(options.dir, "partial");
    this.fsync = options.fsync ?? false;
  }

  /** Opens the tier, taking stock of what a previous run left (files of the right size count). */
  static async open(options: DiskTierOptions): Promise<DiskTier> {
    const tier = new DiskTier(options);
    await mkdir(tier.modelsRoot, { recursive: true });
    await mkdir(tier.partialRoot, { recursive: true });
    await tier.scan();
    return tier;
  }

  private async scan(): Promise<void> {
    for (const entry of await readdir(this.modelsRoot, { withFileTypes: true })) {
      const folder = path.join(this.modelsRoot, entry.name);
      if (entry.name.includes(".tmp-")) {
        await rm(folder, { recursive: true, force: true });
        continue;
      }
      if (!entry.isDirectory()) continue;
      let index: CheckpointIndex;
      let lastUsed: number;
      try {
        checkModelKey(entry.name);
        const indexPath = path.join(folder, INDEX_FILE);
        index = decodeIndex(await readFile(indexPath));
        lastUsed = (await stat(indexPath)).mtimeMs;
        if (index.modelKey !== entry.name) throw new Error("index names another model");
      } catch {
        await rm(folder, { recursive: true, force: true }); // not ours, or an index that never finished
        continue;
      }
      const model: DiskModel = { key: entry.name, index, chunks: new Map(), lastUsed };
      const names = new Set(await readdir(folder));
      for (const name of names) if (name.includes(".tmp-")) await rm(path.join(folder, name), { force: true });
      for (const chunk of index.chunks) {
        if (!names.has(chunk.fileName)) continue;
        const size = (await stat(path.join(folder, chunk.fileName))).size;
        if (size === Number(chunk.byteLength)) {
          model.chunks.set(chunk.fileName, size);
          this.used += size;
        } else {
          await rm(path.join(folder, chunk.fileName), { force: true });
        }
      }
      this.models.set(model.key, model);
    }
  }

  /** The folder of a model (a checkpoint folder once every chunk is present). */
  modelDir(key: string): string {
    checkModelKey(key);
    return path.join(this.modelsRoot, key);
  }

  chunkPath(key: string, fileName: string): string {
    checkFileName(fileName);
    return path.join(this.modelDir(key), fileName);
  }

  /** Where a download of a chunk accumulates (kept across restarts, so a download resumes). */
  partPath(key: string, fileName: string): string {
    checkModelKey(key);
    checkFileName(fileName);
    return path.join(this.partialRoot, key, `${fileName}.part`);
  }

  index(key: string): CheckpointIndex | undefined {
    return this.models.get(key)?.index;
  }

  keys(): string[] {
    return [...this.models.keys()].sort();
  }

  /** Records a model's index (written atomically); replaces a different older index and its chunks. */
  async saveIndex(index: CheckpointIndex): Promise<void> {
    const key = index.modelKey;
    const existing = this.models.get(key);
    if (existing !== undefined && sameIndex(existing.index, index)) return;
    if (existing !== undefined) await this.dropModel(key, true);
    await mkdir(this.modelDir(key), { recursive: true });
    await this.writeAtomic(path.join(this.modelDir(key), INDEX_FILE), encodeIndex(index));
    this.models.set(key, { key, index, chunks: new Map(), lastUsed: this.now() });
  }

  /** Writes a side file (config.json, tokenizer.json, ...) atomically. */
  async saveFile(key: string, name: string, data: Uint8Array): Promise<void> {
    checkFileName(name);
    if (!this.models.has(key)) throw new Error(`no index of ${key} on disk`);
    await this.writeAtomic(path.join(this.modelDir(key), name), data);
  }

  /** A side file, or undefined when absent. */
  async readFile(key: string, name: string): Promise<Uint8Array | undefined> {
    checkFileName(name);
    if (!this.models.has(key)) return undefined;
    try {
      return await readFile(path.join(this.modelDir(key), name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /** A side file exists. */
  async hasFile(key: string, name: string): Promise<boolean> {
    checkFileName(name);
    if (!this.models.has(key)) return false;
    try {
      return (await stat(path.join(this.modelDir(key), name))).isFile();
    } catch {
      return false;
    }
  }

  hasChunk(key: string, fileName: string): boolean {
    return this.models.get(key)?.chunks.has(fileName) ?? false;
  }

  /** Chunks of the index not on disk. */
  missingChunks(key: string): ChunkEntry[] {
    const model = this.models.get(key);
    if (model === undefined) return [];
    return model.index.chunks.filter((c) => !model.chunks.has(c.fileName));
  }

  /** Every chunk is on disk. */
  complete(key: string): boolean {
    const model = this.models.get(key);
    return model !== undefined && model.chunks.size === model.index.chunks.length;
  }

  /** A time stamp later than every earlier one (two uses in one millisecond stay ordered). */
  private now(): number {
    this.lastStamp = Math.max(Date.now(), this.lastStamp + 0.001);
    return this.lastStamp;
  }

  /** Marks a model as just used (LRU order survives restarts through the index file's mtime). */
  touch(key: string): void {
    const model = this.models.get(key);
    if (model === undefined) return;
    model.lastUsed = this.now();
    const now = new Date(model.lastUsed);
    utimes(path.join(this.modelDir(key), INDEX_FILE), now, now).catch(() => {});
  }

  /** Keeps a model's chunks from eviction (and removal) until the returned function is called. */
  pin(key: string): () => void {
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.pins.get(key) ?? 1) - 1;
      if (n <= 0) this.pins.delete(key);
      else this.pins.set(key, n);
    };
  }

  private pinned(key: string): boolean {
    return (this.pins.get(key) ?? 0) > 0;
  }

  /**
   * Reserves room for `bytes` of new chunk data, evicting chunks of the least recently used
   * unpinned models; throws RESOURCE_EXHAUSTED when pinned data leaves no room. Returns a function
   * that gives the reservation back (commitChunk turns it into used bytes).
   */
  async reserve(bytes: number): Promise<() => void> {
    if (bytes > this.budgetBytes) {
      throw new ConnectError(`a ${bytes}-byte chunk does not fit the ${this.budgetBytes}-byte disk tier`, Code.ResourceExhausted);
    }
    while (this.used + this.reserved + bytes > this.budgetBytes) {
      if (!(await this.evictOne())) {
        throw new ConnectError(
          `the disk tier is full: ${this.used} bytes used, ${this.reserved} reserved, ${bytes} more needed, budget ${this.budgetBytes}; ` +
            "everything left is in use",
          Code.ResourceExhausted,
        );
      }
    }
    this.reserved += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.reserved -= bytes;
    };
  }

  /** Evicts the least recently used chunk of an unpinned model; false when there is none. */
  private async evictOne(): Promise<boolean> {
    let victim: DiskModel | undefined;
    for (const model of this.models.values()) {
      if (model.chunks.size === 0 || this.pinned(model.key)) continue;
      if (victim === undefined || model.lastUsed < victim.lastUsed) victim = model;
    }
    if (victim === undefined) return false;
    // Last chunk first: a model missing its tail is as useless as one missing its head, and the
    // first chunks are the ones a peer asks for first.
    const names = [...victim.chunks.keys()];
    const name = names[names.length - 1];
    const bytes = victim.chunks.get(name)!;
    victim.chunks.delete(name);
    this.used -= bytes;
    await rm(this.chunkPath(victim.key, name), { force: true });
    this.options.onEvict?.(victim.key, name, bytes);
    if (victim.chunks.size === 0) await this.dropModel(victim.key, false);
    return true;
  }

  /**
   * Moves a verified download into place. `release` is the reservation made for it, turned into
   * used bytes here.
   */
  async commitChunk(key: string, chunk: ChunkEntry, partPath: string, release: () => void): Promise<void> {
    const model = this.models.get(key);
    if (model === undefined) throw new Error(`no index of ${key} on disk`);
    if (this.fsync) {
      const handle = await open(partPath, "r+");
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    await rename(partPath, this.chunkPath(key, chunk.fileName));
    release();
    const signature = await this.signature(key, chunk.fileName);
    if (signature !== undefined) this.verified.set(`${key}/${chunk.fileName}`, signature);
    const bytes = Number(chunk.byteLength);
    if (!model.chunks.has(chunk.fileName)) {
      model.chunks.set(chunk.fileName, bytes);
      this.used += bytes;
    }
    model.lastUsed = this.now();
  }

  /** Deletes a chunk found corrupt, so that it is fetched again. */
  async removeChunk(key: string, fileName: string): Promise<void> {
    const model = this.models.get(key);
    const bytes = model?.chunks.get(fileName);
    if (model !== undefined && bytes !== undefined) {
      model.chunks.delete(fileName);
      this.used -= bytes;
    }
    await rm(this.chunkPath(key, fileName), { force: true });
  }

  /**
   * True when the chunk file matches the index. A file is checksummed again whenever it changed
   * (inode, size or modification time) since it was last found good; a bad file is removed.
   */
  async ensureVerified(key: string, chunk: ChunkEntry): Promise<boolean> {
    const id = `${key}/${chunk.fileName}`;
    const signature = await this.signature(key, chunk.fileName);
    if (signature === undefined) return false;
    if (this.verified.get(id) === signature) return true;
    const ok = await this.verifyChunk(key, chunk);
    if (ok) this.verified.set(id, signature);
    else this.verified.delete(id);
    return ok;
  }

  private async signature(key: string, fileName: string): Promise<string | undefined> {
    try {
      const s = await stat(this.chunkPath(key, fileName), { bigint: true });
      return `${s.ino}:${s.size}:${s.mtimeNs}`;
    } catch {
      return undefined;
    }
  }

  /** Computes a chunk file's CRC-32C and compares it with the index; false (and the file removed) on mismatch. */
  async verifyChunk(key: string, chunk: ChunkEntry): Promise<boolean> {
    const file = this.chunkPath(key, chunk.fileName);
    let crc = 0;
    let length = 0;
    try {
      for await (const piece of createReadStream(file, { highWaterMark: 4 << 20 })) {
        crc = await crc32c(piece as Buffer, crc);
        length += (piece as Buffer).byteLength;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      await this.removeChunk(key, chunk.fileName);
      return false;
    }
    const ok = length === Number(chunk.byteLength) && BigInt(crc) === (chunk.checksum?.value ?? -1n);
    if (!ok) await this.removeChunk(key, chunk.fileName);
    return ok;
  }

  /** Removes a model from disk (refused while pinned unless `force`); returns the chunk bytes freed. */
  async dropModel(key: string, force = false): Promise<number> {
    const model = this.models.get(key);
    if (model === undefined) return 0;
    if (!force && this.pinned(key) && model.chunks.size > 0) {
      throw new ConnectError(`${key} is in use on disk`, Code.FailedPrecondition);
    }
    let freed = 0;
    for (const bytes of model.chunks.values()) freed += bytes;
    this.used -= freed;
    model.chunks.clear();
    this.models.delete(key);
    // Move aside first so a reader never sees a folder half removed.
    const aside = path.join(this.modelsRoot, `${key}.tmp-${randomBytes(4).toString("hex")}`);
    try {
      await rename(this.modelDir(key), aside);
      await rm(aside, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    await rm(path.join(this.partialRoot, key), { recursive: true, force: true });
    return freed;
  }

  info(key: string): DiskModelInfo | undefined {
    const model = this.models.get(key);
    if (model === undefined) return undefined;
    let diskBytes = 0;
    for (const b of model.chunks.values()) diskBytes += b;
    return {
      key,
      index: model.index,
      diskChunks: model.chunks.size,
      totalChunks: model.index.chunks.length,
      diskBytes,
      complete: model.chunks.size === model.index.chunks.length,
    };
  }

  stats(): { totalBytes: number; usedBytes: number; freeBytes: number } {
    return { totalBytes: this.budgetBytes, usedBytes: this.used, freeBytes: Math.max(0, this.budgetBytes - this.used - this.reserved) };
  }

  private async writeAtomic(file: string, data: Uint8Array): Promise<void> {
    const temp = `${file}.tmp-${randomBytes(4).toString("hex")}`;
    const handle = await open(temp, "wx");
    try {
      await handle.writeFile(data);
      await handle.sync(); // small files (index, config, tokenizer) are not re-verified: always durable
    } finally {
      await handle.close();
    }
    try {
      await rename(temp, file);
    } catch (err) {
      await unlink(temp).catch(() => {});
      throw err;
    }
  }
}

function sameIndex(a: CheckpointIndex, b: CheckpointIndex): boolean {
  if (a.totalBytes !== b.totalBytes || a.chunks.length !== b.chunks.length || a.createdUnixMs !== b.createdUnixMs) return false;
  return a.chunks.every((c, i) => c.fileName === b.chunks[i].fileName && c.checksum?.value === b.chunks[i].checksum?.value);
}
