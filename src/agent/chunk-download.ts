// Fetches chunks into the disk tier: several at a time, each from the first source that has it
// (peers before the store or the converter), resumed from the last byte received when a transfer
// breaks (on the same source or the next), and checked against the index's CRC-32C before it is
// renamed into place. A chunk whose bytes do not match is fetched again from scratch.
import { createHash } from "node:crypto";
import { constants, createReadStream } from "node:fs";
import { type FileHandle, mkdir, open } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CheckpointIndex, CheckpointRef, ChunkEntry } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { crc32c } from "../native/index.js";
import { INDEX_FILE } from "../store/store.js";
import { type ChunkSource, SourceMissError } from "./chunk-sources.js";
import type { DiskTier } from "./disk-tier.js";

export interface ChunkProgress {
  fileName: string;
  bytesDone: number;
  bytesTotal: number;
  source: string;
  complete: boolean;
}

export interface DownloaderOptions {
  /** Chunks fetched at once (default 4). */
  concurrency?: number;
  /** Attempts per source for errors other than "not found" (default 3). */
  attemptsPerSource?: number;
  log?: (line: string) => void;
}

export interface FetchResult {
  /** Bytes received over the network (or from the store), not counting chunks already present. */
  bytes: number;
  seconds: number;
  chunks: number;
}

export class ChunkDownloader {
  private readonly inflight = new Map<string, Promise<number>>();
  private readonly concurrency: number;
  private readonly attempts: number;

  constructor(
    private readonly disk: DiskTier,
    private readonly options: DownloaderOptions = {},
  ) {
    this.concurrency = Math.max(1, options.concurrency ?? 4);
    this.attempts = Math.max(1, options.attemptsPerSource ?? 3);
  }

  /** The index of `key` on disk, fetched (with its side files) from the first source that has it. */
  async ensureIndex(ref: CheckpointRef, key: string, sources: readonly ChunkSource[], signal?: AbortSignal): Promise<CheckpointIndex> {
    const onDisk = this.disk.index(key);
    if (onDisk !== undefined) {
      await this.ensureSideFiles(ref, key, onDisk, sources, signal);
      return onDisk;
    }
    const join = this.inflight.get(`${key}/${INDEX_FILE}`);
    if (join !== undefined) {
      await join;
      return this.ensureIndex(ref, key, sources, signal);
    }
    // The index is what every chunk is checked against: it comes from the origin (the store or the
    // converter) whenever the agent has one, never from a peer, whose chunks it then judges.
    const origin = sources.filter((s) => s.optional !== true);
    const indexSources = origin.length > 0 ? origin : sources;
    const work = (async () => {
      const misses: string[] = [];
      for (const source of indexSources) {
        signal?.throwIfAborted();
        try {
          const index = await source.readIndex(ref, key, signal);
          await this.disk.saveIndex(index);
          await this.ensureSideFiles(ref, key, index, sources, signal);
          return 0;
        } catch (err) {
          if (signal?.aborted) throw err;
          if (!(err instanceof SourceMissError)) this.options.log?.(`index of ${key} from ${source.name}: ${(err as Error).message}`);
          misses.push(`${source.name}: ${(err as Error).message}`);
        }
      }
      throw new ConnectError(
        indexSources.length === 0
          ? `${key} is not cached here and the agent has no store, converter or peer to fetch it from`
          : `no source has ${key}: ${misses.join("; ")}`,
        Code.NotFound,
      );
    })();
    this.inflight.set(`${key}/${INDEX_FILE}`, work);
    try {
      await work;
    } finally {
      this.inflight.delete(`${key}/${INDEX_FILE}`);
    }
    return this.disk.index(key)!;
  }

  /** Side files the index lists and the disk lacks, each checked against its SHA-256. */
  private async ensureSideFiles(ref: CheckpointRef, key: string, index: CheckpointIndex, sources: readonly ChunkSource[], signal?: AbortSignal): Promise<void> {
    for (const extra of index.extraFiles) {
      if (await this.disk.hasFile(key, extra.name)) continue;
      for (const source of sources) {
        signal?.throwIfAborted();
        try {
          const data = await source.readFile(ref, key, extra.name, signal);
          const sha = createHash("sha256").update(data).digest("hex");
          if (data.byteLength !== Number(extra.size) || (extra.sha256 !== "" && sha !== extra.sha256)) {
            this.options.log?.(`${key}/${extra.name} from ${source.name} does not match the index; trying the next source`);
            continue;
          }
          await this.disk.saveFile(key, extra.name, data);
          break;
        } catch (err) {
          if (signal?.aborted) throw err;
          if (!(err instanceof SourceMissError)) this.options.log?.(`${key}/${extra.name} from ${source.name}: ${(err as Error).message}`);
        }
      }
    }
  }

  /** Fetches `chunks` of `key` (whose index is on disk) in parallel. */
  async fetchChunks(
    ref: CheckpointRef,
    key: string,
    chunks: readonly ChunkEntry[],
    sources: readonly ChunkSource[],
    onProgress: (p: ChunkProgress) => void,
    signal?: AbortSignal,
  ): Promise<FetchResult> {
    const started = performance.now();
    let bytes = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < chunks.length) {
        const chunk = chunks[next++];
        signal?.throwIfAborted();
        if (this.disk.hasChunk(key, chunk.fileName)) {
          const total = Number(chunk.byteLength);
          onProgress({ fileName: chunk.fileName, bytesDone: total, bytesTotal: total, source: "cache", complete: true });
          continue;
        }
        const received = await this.fetchChunk(ref, key, chunk, sources, onProgress, signal);
        bytes += received;
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, chunks.length) }, worker));
    return { bytes, seconds: (performance.now() - started) / 1000, chunks: chunks.length };
  }

  /** One chunk; concurrent callers for the same chunk share the transfer. Returns bytes received. */
  fetchChunk(
    ref: CheckpointRef,
    key: string,
    chunk: ChunkEntry,
    sources: readonly ChunkSource[],
    onProgress: (p: ChunkProgress) => void,
    signal?: AbortSignal,
  ): Promise<number> {
    const id = `${key}/${chunk.fileName}`;
    const running = this.inflight.get(id);
    if (running !== undefined) {
      return running.then(() => {
        const total = Number(chunk.byteLength);
        onProgress({ fileName: chunk.fileName, bytesDone: total, bytesTotal: total, source: "cache", complete: true });
        return 0;
      });
    }
    const work = this.transfer(ref, key, chunk, sources, onProgress, signal).finally(() => this.inflight.delete(id));
    this.inflight.set(id, work);
    return work;
  }

  private async transfer(
    ref: CheckpointRef,
    key: string,
    chunk: ChunkEntry,
    sources: readonly ChunkSource[],
    onProgress: (p: ChunkProgress) => void,
    signal?: AbortSignal,
  ): Promise<number> {
    const length = Number(chunk.byteLength);
    const expected = chunk.checksum?.value;
    const name = chunk.fileName;
    if (sources.length === 0) {
      throw new ConnectError(`${key}/${name} is not on disk and the agent has no source to fetch it from`, Code.NotFound);
    }
    const release = await this.disk.reserve(length);
    const part = this.disk.partPath(key, name);
    await mkdir(path.dirname(part), { recursive: true });
    let handle: FileHandle | undefined;
    try {
      handle = await open(part, constants.O_RDWR | constants.O_CREAT);
      // Resume what an earlier run (or an earlier attempt) received.
      let offset = (await handle.stat()).size;
      if (offset > length) {
        await handle.truncate(0);
        offset = 0;
      }
      let crc = offset > 0 ? await fileCrc(part, offset) : 0;
      let received = 0;
      const errors: string[] = [];
      let order = [...sources];
      let mismatch = false;
      for (let round = 0; round < 2; round++) {
        const contributed = new Set<ChunkSource>();
        for (const source of order) {
          const attempts = source.optional ? 1 : this.attempts;
          for (let attempt = 0; attempt < attempts && offset < length; attempt++) {
            signal?.throwIfAborted();
            const before = offset;
            try {
              for await (const data of source.readChunk(ref, key, name, offset, signal)) {
                if (offset + data.byteLength > length) {
                  throw new ConnectError(`${source.name} sent more than the ${length} bytes of ${name}`, Code.DataLoss);
                }
                for (let done = 0; done < data.byteLength; ) {
                  const { bytesWritten } = await handle.write(data, done, data.byteLength - done, offset + done);
                  done += bytesWritten;
                }
                crc = await crc32c(data, crc);
                offset += data.byteLength;
                received += data.byteLength;
                contributed.add(source);
                onProgress({ fileName: name, bytesDone: offset, bytesTotal: length, source: source.name, complete: false });
              }
              if (offset < length) errors.push(`${source.name} ended ${name} at byte ${offset} of ${length}`);
            } catch (err) {
              if (signal?.aborted) throw err;
              errors.push(`${source.name}: ${(err as Error).message}`);
              if (err instanceof SourceMissError) break; // not there: next source
              this.options.log?.(`fetching ${key}/${name} from ${source.name} at byte ${offset}: ${(err as Error).message}`);
            }
            if (offset > before) attempt = -1; // progress made: the attempts start over
            else if (attempt + 1 < attempts) await delay(50 * (attempt + 1), signal);
          }
          if (offset >= length) break;
        }
        if (offset < length) break;
        if (expected !== undefined && BigInt(crc) === expected) {
          await handle.close();
          handle = undefined;
          await this.disk.commitChunk(key, chunk, part, release);
          onProgress({ fileName: name, bytesDone: length, bytesTotal: length, source: [...contributed].at(-1)?.name ?? "cache", complete: true });
          return received;
        }
        // Wrong bytes: start over, asking the sources that sent none of them first.
        mismatch = true;
        this.options.log?.(`${key}/${name}: checksum mismatch (crc32c ${crc}, index ${expected}); fetching it again`);
        errors.push(`checksum mismatch on ${name}`);
        await handle.truncate(0);
        offset = 0;
        crc = 0;
        order = [...sources.filter((s) => !contributed.has(s)), ...sources.filter((s) => contributed.has(s))];
      }
      throw new ConnectError(`could not fetch ${key}/${name}: ${errors.slice(-4).join("; ")}`, mismatch ? Code.DataLoss : Code.Unavailable);
    } finally {
      await handle?.close();
      release();
    }
  }
}

/** CRC-32C of the first `length` bytes of a file. */
async function fileCrc(file: string, length: number): Promise<number> {
  let crc = 0;
  for await (const piece of createReadStream(file, { start: 0, end: length - 1, highWaterMark: 4 << 20 })) {
    crc = await crc32c(piece as Buffer, crc);
  }
  return crc;
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
