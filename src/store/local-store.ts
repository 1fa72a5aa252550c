// A checkpoint store in a local directory. A pending checkpoint is filled in <root>/.tmp/<key>~<pid>~<random>
// and renamed into <root>/<key> once its model.idx is written, so a reader never sees half of one.
// Every path is validated and resolved to stay inside the root.
import { randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Worker } from "node:worker_threads";
import { checkFileName, checkModelKey } from "../checkpoint/model-key.js";
import {
  type CheckpointStore,
  type CheckpointWrite,
  INDEX_FILE,
  NotFoundError,
  type StoredObjectInfo,
  type StoreObjectWriter,
} from "./store.js";

/** Folder inside the root for pending writes and replaced checkpoints. */
const TEMP_DIR = ".tmp";
/** A temp folder whose writer we cannot see (other host) is treated as abandoned after this long. */
const STALE_AFTER_MS = 24 * 3600 * 1000;
/** Piece size of readRange. */
const READ_PIECE = 4 << 20;
/**
 * Largest single write() call. A large buffered write makes the kernel build its page cache from
 * large folios, and allocating those (compaction, memory handed back by the hypervisor) can cost
 * many times the copy itself; cp's splice path uses single pages and never pays it. Measured on the
 * dev VM writing 4 / 6 GiB: 512 KiB pieces 4.6 / – s of system time, 128 KiB 1.1 / 5.4 s, 64 KiB
 * 1.2 / 1.9 s; 16 KiB 2.1 s for 4 GiB (syscalls). The writes run in a worker thread's tight loop.
 */
const WRITE_PIECE = 64 << 10;
/** Writer threads per pending checkpoint (started only when used). */
const WRITER_THREADS = 2;

/** Options of LocalStore.open. */
export interface LocalStoreOptions {
  /** fsync files and folders before publishing, so a published checkpoint survives a power cut (default true). */
  fsync?: boolean;
}

/** CheckpointStore over a local directory. */
export class LocalStore implements CheckpointStore {
  readonly location: string;
  private readonly tempRoot: string;

  private constructor(
    private readonly root: string,
    private readonly fsync: boolean,
  ) {
    this.location = root;
    this.tempRoot = path.join(root, TEMP_DIR);
  }

  /** Opens (creating if needed) a store at `root` and removes temp folders left by dead writers. */
  static async open(root: string, options: LocalStoreOptions = {}): Promise<LocalStore> {
    const store = new LocalStore(path.resolve(root), options.fsync ?? true);
    await mkdir(store.tempRoot, { recursive: true });
    await store.removeStaleTemp();
    return store;
  }

  async list(): Promise<string[]> {
    const keys: string[] = [];
    for (const entry of await readdir(this.root, { withFileTypes: true })) {
      if (!entry.isDirectory() || entry.name.startsWith(".") || !isModelKey(entry.name)) continue;
      if (await exists(path.join(this.root, entry.name, INDEX_FILE))) keys.push(entry.name);
    }
    return keys.sort();
  }

  async stat(modelKey: string, name: string): Promise<StoredObjectInfo | undefined> {
    const file = this.filePath(modelKey, name);
    if (!(await this.published(modelKey))) return undefined;
    try {
      const s = await stat(file);
      return s.isFile() ? { size: s.size } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  async read(modelKey: string, name: string): Promise<Uint8Array> {
    const file = this.filePath(modelKey, name);
    if (name !== INDEX_FILE && !(await this.published(modelKey))) throw this.notFound(modelKey, name);
    try {
      return await readFile(file);
    } catch (err) {
      if (isMissing(err)) throw this.notFound(modelKey, name);
      throw err;
    }
  }

  async *readRange(modelKey: string, name: string, offset: number, length?: number, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`);
    if (length !== undefined && (!Number.isSafeInteger(length) || length < 0)) throw new RangeError(`invalid length ${length}`);
    const file = this.filePath(modelKey, name);
    if (!(await this.published(modelKey))) throw this.notFound(modelKey, name);
    let handle: FileHandle;
    try {
      handle = await open(file, "r");
    } catch (err) {
      if (isMissing(err)) throw this.notFound(modelKey, name);
      throw err;
    }
    try {
      const size = (await handle.stat()).size;
      const end = length === undefined ? size : Math.min(size, offset + length);
      for (let pos = offset; pos < end; ) {
        signal?.throwIfAborted();
        const piece = Buffer.allocUnsafe(Math.min(READ_PIECE, end - pos));
        const { bytesRead } = await handle.read(piece, 0, piece.length, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
        yield piece.subarray(0, bytesRead);
      }
    } finally {
      await handle.close();
    }
  }

  async beginWrite(modelKey: string): Promise<CheckpointWrite> {
    const final = this.checkpointPath(modelKey);
    const temp = path.join(this.tempRoot, tempName(modelKey));
    await mkdir(temp, { recursive: false });
    return new LocalCheckpointWrite(modelKey, temp, final, this.root, this.tempRoot, this.fsync);
  }

  async delete(modelKey: string): Promise<number> {
    const folder = this.checkpointPath(modelKey);
    const index = path.join(folder, INDEX_FILE);
    if (!(await exists(index))) return 0;
    const freed = await folderSize(folder);
    // Index first: readers stop seeing the checkpoint at once; then move the rest out of the way.
    await rm(index, { force: true });
    const trash = path.join(this.tempRoot, tempName(modelKey, "deleted"));
    try {
      await rename(folder, trash);
    } catch (err) {
      if (isMissing(err)) return freed;
      throw err;
    }
    await rm(trash, { recursive: true, force: true });
    return freed;
  }

  localPath(modelKey: string): string {
    return this.checkpointPath(modelKey);
  }

  private checkpointPath(modelKey: string): string {
    checkModelKey(modelKey);
    return inside(this.root, path.resolve(this.root, modelKey));
  }

  private filePath(modelKey: string, name: string): string {
    checkFileName(name);
    const folder = this.checkpointPath(modelKey);
    return inside(folder, path.resolve(folder, name));
  }

  private async published(modelKey: string): Promise<boolean> {
    return exists(path.join(this.checkpointPath(modelKey), INDEX_FILE));
  }

  private notFound(modelKey: string, name: string): NotFoundError {
    return new NotFoundError(`${modelKey}/${name} not found in ${this.root}`);
  }

  /** Removes temp folders whose writing process is gone (or, failing that, that are older than a day). */
  private async removeStaleTemp(): Promise<void> {
    for (const name of await readdir(this.tempRoot)) {
      const match = /~(\d+)~[0-9a-f]+(?:~\w+)?$/.exec(name);
      const pid = match === null ? undefined : Number(match[1]);
      const folder = path.join(this.tempRoot, name);
      let stale = pid === undefined || !processAlive(pid);
      if (!stale) {
        try {
          stale = Date.now() - (await stat(folder)).mtimeMs > STALE_AFTER_MS;
        } catch {
          continue;
        }
      }
      if (stale) await rm(folder, { recursive: true, force: true });
    }
  }
}

class LocalCheckpointWrite implements CheckpointWrite {
  private readonly open = new Set<FileHandle>();
  private done = false;
  // Buffers in shared memory are written from worker threads (fewer thread hops per byte); files
  // take turns on a few threads so chunks written at the same time go out in parallel.
  private readonly writers = Array.from({ length: WRITER_THREADS }, () => new FileWriterThread(WRITE_PIECE));
  private created = 0;
  private writersStarted = false;

  constructor(
    readonly modelKey: string,
    private readonly temp: string,
    private readonly final: string,
    private readonly root: string,
    private readonly tempRoot: string,
    private readonly fsync: boolean,
  ) {}

  /** Boots every writer thread (~30 ms each) at the first shared-memory write, so the next file's is ready. */
  private startWriters(): void {
    if (this.writersStarted) return;
    this.writersStarted = true;
    for (const w of this.writers) w.prestart();
  }

  async create(name: string): Promise<StoreObjectWriter> {
    checkFileName(name);
    if (name === INDEX_FILE) throw new RangeError(`${INDEX_FILE} is written by publish()`);
    if (this.done) throw new Error(`write of ${this.modelKey} is already finished`);
    const handle = await open(inside(this.temp, path.resolve(this.temp, name)), "wx");
    this.open.add(handle);
    let position = 0;
    const fsync = this.fsync;
    const openSet = this.open;
    const writer = this.writers[this.created++ % this.writers.length];
    const startWriters = (): void => this.startWriters();
    const modelKey = this.modelKey;
    return {
      async write(data: Uint8Array): Promise<void> {
        if (!openSet.has(handle)) throw new Error(`${name} of ${modelKey} is closed`);
        // Positional writes: the offset is claimed before awaiting, so overlapped calls stay in order.
        const at = position;
        position += data.byteLength;
        if (FileWriterThread.canShare(data)) {
          startWriters();
          return writer.write(handle.fd, data, at);
        }
        // One piece at a time: concurrent writes to one file only contend for its inode lock.
        for (let from = 0; from < data.byteLength; from += WRITE_PIECE) {
          await writeFully(handle, data.subarray(from, Math.min(from + WRITE_PIECE, data.byteLength)), at + from);
        }
      },
      async close(): Promise<void> {
        if (!openSet.delete(handle)) return;
        try {
          if (fsync) await handle.sync();
        } finally {
          await handle.close();
        }
      },
    };
  }

  async publish(index: Uint8Array): Promise<void> {
    if (this.done) throw new Error(`write of ${this.modelKey} is already finished`);
    if (this.open.size > 0) throw new Error(`${this.open.size} file(s) of ${this.modelKey} are still open`);
    const indexPath = path.join(this.temp, INDEX_FILE);
    await writeFile(indexPath, index, { flag: "wx" });
    if (this.fsync) {
      await syncPath(indexPath);
      await syncPath(this.temp);
    }
    // rename() cannot replace a non-empty folder: move an older checkpoint aside first. Readers
    // that opened its files keep them; a reader arriving in between sees "not found", never a mix.
    for (let attempt = 0; ; attempt++) {
      try {
        await rename(this.temp, this.final);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== "ENOTEMPTY" && code !== "EEXIST") || attempt >= 5) throw err;
        const aside = path.join(this.tempRoot, tempName(this.modelKey, "replaced"));
        try {
          await rename(this.final, aside);
        } catch (e) {
          if (!isMissing(e)) throw e;
          continue;
        }
        await rm(aside, { recursive: true, force: true });
      }
    }
    this.done = true;
    await Promise.all(this.writers.map((w) => w.close()));
    if (this.fsync) await syncPath(this.root);
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await Promise.all(this.writers.map((w) => w.close()));
    for (const handle of this.open) await handle.close().catch(() => {});
    this.open.clear();
    await rm(this.temp, { recursive: true, force: true });
  }
}

// Plain CommonJS, evaluated in the worker: no loader or transpiler needed there.
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const fs = require("node:fs");
parentPort.on("message", (m) => {
  try {
    const view = new Uint8Array(m.buffer, m.byteOffset, m.length);
    for (let done = 0; done < m.length; ) {
      const n = Math.min(m.piece, m.length - done);
      let written = 0;
      while (written < n) written += fs.writeSync(m.fd, view, done + written, n - written, m.position + done + written);
      done += n;
    }
    parentPort.postMessage({ id: m.id });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: { message: err.message, code: err.code } });
  }
});
`;

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * A worker thread that writes shared-memory buffers with a tight loop of synchronous pwrite calls:
 * a whole block is one message instead of a libuv thread hop per piece, and the main thread stays free.
 * Writes run in the order they were submitted.
 */
class FileWriterThread {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  /** @param piece largest single write() call */
  constructor(private readonly piece: number) {}

  /** Whether `data` can be handed over without a copy. */
  static canShare(data: Uint8Array): boolean {
    return data.buffer instanceof SharedArrayBuffer;
  }

  /** Writes `data` (backed by a SharedArrayBuffer) at `position` of the open file `fd`. */
  write(fd: number, data: Uint8Array, position: number): Promise<void> {
    if (!FileWriterThread.canShare(data)) throw new TypeError("FileWriterThread needs data in a SharedArrayBuffer");
    const worker = this.start();
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref(); // an outstanding write keeps the process alive
      worker.postMessage({ id, fd, buffer: data.buffer, byteOffset: data.byteOffset, length: data.byteLength, position, piece: this.piece });
    });
  }

  /** Starts the thread ahead of the first write. */
  prestart(): void {
    this.start();
  }

  /** Stops the thread (after the writes already submitted have been answered, if the caller awaited them). */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    if (worker !== undefined) await worker.terminate();
    this.failAll(new Error("file writer thread closed"));
  }

  private start(): Worker {
    if (this.worker !== undefined) return this.worker;
    // execArgv: [] so the thread does not load the parent's loaders (tsx) it has no use for
    const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    worker.on("message", (m: { id: number; error?: { message: string; code?: string } }) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if (m.error === undefined) p.resolve();
      else p.reject(Object.assign(new Error(m.error.message), { code: m.error.code }));
    });
    worker.on("error", (err) => this.failAll(err));
    worker.on("exit", () => {
      if (this.worker === worker) this.worker = undefined;
      this.failAll(new Error("file writer thread exited"));
    });
    worker.unref();
    this.worker = worker;
    return worker;
  }

  private failAll(err: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(err);
  }
}

/** "<key>~<pid>~<random>[~<why>]": '~' never occurs in a key, so the pid parses back unambiguously. */
function tempName(modelKey: string, why?: string): string {
  return `${modelKey}~${process.pid}~${randomBytes(6).toString("hex")}${why === undefined ? "" : `~${why}`}`;
}

function inside(parent: string, child: string): string {
  const rel = path.relative(parent, child);
  if (rel === "" || rel.startsWith("..") || path.isAbsolute(rel) || rel.includes("\0")) {
    throw new RangeError(`path ${child} leaves ${parent}`);
  }
  return child;
}

function isModelKey(name: string): boolean {
  try {
    checkModelKey(name);
    return true;
  } catch {
    return false;
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < data.byteLength; ) {
    const { bytesWritten } = await handle.write(data, done, data.byteLength - done, position + done);
    done += bytesWritten;
  }
}

async function syncPath(target: string): Promise<void> {
  const handle = await open(target, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function folderSize(folder: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    if (entry.isFile()) total += (await stat(path.join(folder, entry.name))).size;
  }
  return total;
}
