// Writes a checkpoint (DESIGN.md §3) through a CheckpointWrite: tied tensors folded into aliases,
// tensors laid into aligned chunks, chunk bytes streamed through a few large reused buffers with
// reads, writes and CRC-32C overlapped (CRC on the native thread pool), side files copied, and
// the index written last so the checkpoint appears atomically.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type CheckpointIndex,
  CheckpointIndexSchema,
  ChecksumAlgorithm,
  type ExtraFileSchema,
  type QuantizationSchema,
  type SourceInfoSchema,
  type TensorEntrySchema,
} from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { crc32c } from "../native/checksum.js";
import type { CheckpointStore, StoreObjectWriter } from "../store/store.js";
import { dtypeSize } from "./dtype.js";
import { findTiedTensors } from "./find-tied-tensors.js";
import { ALIGNMENT, DEFAULT_CHUNK_SIZE, FORMAT_VERSION, chunkFileName } from "./format.js";
import { encodeIndex } from "./index-codec.js";
import { planLayout } from "./layout.js";
import { checkFileName, modelKey } from "./model-key.js";
import type { TensorInput } from "./tensor-input.js";

/** A file copied as is beside the chunks (config.json, tokenizer.json, ...): from a path or from bytes. */
export type SideFileInput = { name: string; path: string } | { name: string; data: Uint8Array };

/** Progress of writeCheckpoint. */
export interface WriteProgress {
  stage: "writing" | "publishing";
  /** Chunk bytes handed to the store so far, padding included. */
  bytesDone: number;
  bytesTotal: number;
  /** Input tensors finished: always a prefix of the input list (aliases count when reached). */
  tensorsDone: number;
  tensorsTotal: number;
}

/** Options of writeCheckpoint. */
export interface WriteCheckpointOptions {
  modelId: string;
  /** Revision; empty or absent means "main". */
  revision?: string;
  /** Target chunk size in bytes (default 256 MiB). */
  chunkSize?: number;
  sideFiles?: readonly SideFileInput[];
  source?: MessageInitShape<typeof SourceInfoSchema>;
  architecture?: string;
  /** How the weights are quantized (FP8 weights stored as they are, with their scales). */
  quantization?: MessageInitShape<typeof QuantizationSchema>;
  metadata?: Record<string, string>;
  signal?: AbortSignal;
  onProgress?: (progress: WriteProgress) => void;
  /** Size of each copy buffer (default 4 MiB: stays in cache between read, checksum and write). */
  blockSize?: number;
  /** Number of copy buffers per chunk being written, i.e. blocks in flight between read, write and checksum (default 4). */
  buffers?: number;
  /** Chunks written at the same time (default 2), so reading, checksumming and writing spread over cores. */
  parallelChunks?: number;
  /** Clock for created_unix_ms. */
  now?: () => number;
}

// Measured on the 2-core dev VM (bench/convert): 4 MiB × 4 used the least CPU; 16–32 MiB blocks
// cost 1.5–2× as much (the data no longer stays in cache between read, checksum and write).
const DEFAULT_BLOCK_SIZE = 4 << 20;
const DEFAULT_BUFFERS = 4;
const DEFAULT_PARALLEL_CHUNKS = 2;
// A large read is split into pieces of this size issued together, so several pool threads copy at once.
const READ_PIECE = 4 << 20;

/** Writes and publishes a checkpoint; on any failure the pending write is aborted and nothing is published. */
export async function writeCheckpoint(
  store: CheckpointStore,
  tensors: readonly TensorInput[],
  options: WriteCheckpointOptions,
): Promise<CheckpointIndex> {
  const revision = options.revision || "main";
  const key = modelKey(options.modelId, revision);
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  const bufferCount = options.buffers ?? DEFAULT_BUFFERS;
  if (blockSize < ALIGNMENT || blockSize % ALIGNMENT !== 0) throw new RangeError(`block size must be a multiple of ${ALIGNMENT}`);
  if (!(bufferCount >= 2)) throw new RangeError("at least 2 copy buffers are needed");
  checkInputs(tensors);
  for (const side of options.sideFiles ?? []) checkFileName(side.name);
  const signal = options.signal;
  signal?.throwIfAborted();

  // Begin first: a store can get ready (an object store starts its uploads) while tied tensors are found.
  const write = await store.beginWrite(key);
  let aliasOf: number[];
  try {
    aliasOf = await findTiedTensors(tensors, signal);
  } catch (err) {
    await write.abort();
    throw err;
  }
  const unique: number[] = [];
  const aliases = new Map<number, string[]>();
  tensors.forEach((t, i) => {
    if (aliasOf[i] === -1) unique.push(i);
    else {
      const names = aliases.get(aliasOf[i]);
      if (names === undefined) aliases.set(aliasOf[i], [t.name]);
      else names.push(t.name); // pushed, not copied: a tensor may have 200 000 aliases
    }
  });
  const layout = planLayout(unique.map((i) => tensors[i].byteLength), chunkSize);
  const bytesTotal = layout.chunkLengths.reduce((a, b) => a + b, 0);

  const progress: WriteProgress = { stage: "writing", bytesDone: 0, bytesTotal, tensorsDone: 0, tensorsTotal: tensors.length };
  const report = (): void => options.onProgress?.({ ...progress });
  // tensorsDone is the longest finished prefix of the inputs; an alias is done once reached.
  const finished = tensors.map(() => false);
  let nextInput = 0;
  const finish = (input: number): void => {
    finished[input] = true;
    while (nextInput < tensors.length && (finished[nextInput] || aliasOf[nextInput] !== -1)) nextInput++;
    progress.tensorsDone = nextInput;
  };
  while (nextInput < tensors.length && aliasOf[nextInput] !== -1) nextInput++;
  progress.tensorsDone = nextInput;
  report();

  const chunkCount = layout.chunkLengths.length;
  const members: Member[][] = layout.chunkLengths.map(() => []);
  unique.forEach((input, u) => members[layout.placements[u].chunk].push({ input, offset: layout.placements[u].offset }));
  // A failing lane stops the others before the write is aborted.
  const stop = new AbortController();
  const laneSignal = signal === undefined ? stop.signal : AbortSignal.any([signal, stop.signal]);
  try {
    const checksums: number[] = new Array(chunkCount);
    let nextChunk = 0;
    const lane = async (): Promise<void> => {
      const pool = new BufferPool(blockSize, bufferCount);
      while (nextChunk < chunkCount) {
        const c = nextChunk++;
        const out = await write.create(chunkFileName(c));
        let memberDone = 0;
        checksums[c] = await copyChunk(out, members[c], tensors, layout.chunkLengths[c], pool, laneSignal, (bytes, lastInput) => {
          progress.bytesDone += bytes;
          // members finish in offset order within a chunk: everything up to lastInput is done
          while (lastInput >= 0) {
            const m = members[c][memberDone++];
            finish(m.input);
            if (m.input === lastInput) break;
          }
          report();
        });
        await out.close();
      }
    };
    const lanes = Math.max(1, Math.min(options.parallelChunks ?? DEFAULT_PARALLEL_CHUNKS, chunkCount));
    const results = await Promise.allSettled(
      Array.from({ length: lanes }, () =>
        lane().catch((err: unknown) => {
          stop.abort();
          throw err;
        }),
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) {
      signal?.throwIfAborted();
      // the first lane's own failure, not the "stopped" the others saw
      const own = results.find((r): r is PromiseRejectedResult => r.status === "rejected" && !isStop(r.reason, stop.signal));
      throw (own ?? failed).reason;
    }
    for (let i = 0; i < tensors.length; i++) if (aliasOf[i] === -1) finish(i);

    progress.stage = "publishing";
    report();
    const extraFiles: MessageInitShape<typeof ExtraFileSchema>[] = [];
    for (const side of options.sideFiles ?? []) {
      signal?.throwIfAborted();
      extraFiles.push(await copySideFile(write.create.bind(write), side));
    }

    const index = create(CheckpointIndexSchema, {
      formatVersion: FORMAT_VERSION,
      ref: { modelId: options.modelId, revision },
      modelKey: key,
      alignment: BigInt(ALIGNMENT),
      chunkSize: BigInt(chunkSize),
      tensors: unique.map((input, u): MessageInitShape<typeof TensorEntrySchema> => {
        const t = tensors[input];
        return {
          name: t.name,
          dtype: t.dtype,
          shape: t.shape.map(BigInt),
          chunk: layout.placements[u].chunk,
          offset: BigInt(layout.placements[u].offset),
          byteLength: BigInt(t.byteLength),
          aliases: aliases.get(input) ?? [],
        };
      }),
      chunks: layout.chunkLengths.map((length, c) => ({
        fileName: chunkFileName(c),
        byteLength: BigInt(length),
        checksum: { algorithm: ChecksumAlgorithm.CRC32C, value: BigInt(checksums[c]) },
      })),
      totalBytes: BigInt(bytesTotal),
      extraFiles,
      source: options.source,
      createdUnixMs: BigInt((options.now ?? Date.now)()),
      architecture: options.architecture ?? "",
      quantization: options.quantization,
      metadata: options.metadata ?? {},
    });
    signal?.throwIfAborted();
    await write.publish(encodeIndex(index));
    return index;
  } catch (err) {
    await write.abort();
    throw err;
  }
}

function isStop(err: unknown, stop: AbortSignal): boolean {
  return stop.aborted && err === stop.reason;
}

function checkInputs(tensors: readonly TensorInput[]): void {
  const names = new Set<string>();
  for (const t of tensors) {
    if (t.name === "") throw new RangeError("a tensor has an empty name");
    if (names.has(t.name)) throw new RangeError(`tensor ${t.name} appears twice`);
    names.add(t.name);
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (elements * dtypeSize(t.dtype) !== t.byteLength) {
      throw new RangeError(`tensor ${t.name}: byte length ${t.byteLength} does not match shape [${t.shape.join(", ")}]`);
    }
  }
}

/** Fixed set of reusable copy buffers; a buffer comes back once its write and checksum are done. */
class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly returning: Promise<void>[] = [];

  constructor(size: number, count: number) {
    // Shared memory: a store may hand the bytes to another thread without copying them.
    for (let i = 0; i < count; i++) this.free.push(Buffer.from(new SharedArrayBuffer(size)));
  }

  async take(): Promise<Buffer> {
    while (this.free.length === 0) await this.returning.shift();
    return this.free.pop()!;
  }

  /** Returns `buffer` to the pool when `work` settles; a failure surfaces from a later take() or drain(). */
  giveBackAfter(buffer: Buffer, work: Promise<unknown>): void {
    const back = work.then(
      () => void this.free.push(buffer),
      (err: unknown) => {
        this.free.push(buffer);
        throw err;
      },
    );
    back.catch(() => {}); // observed through take()/drain(); this only keeps it from being "unhandled"
    this.returning.push(back);
  }

  /** Waits for every outstanding buffer; rethrows the first failure unless `quiet`. */
  async drain(quiet = false): Promise<void> {
    const pending = this.returning.splice(0);
    const results = await Promise.allSettled(pending);
    const failed = results.find((r) => r.status === "rejected");
    if (failed !== undefined && !quiet) throw (failed as PromiseRejectedResult).reason;
  }
}

interface Member {
  input: number;
  offset: number;
}

/** Streams one chunk: member tensors at their offsets, zeros between and after; returns its CRC-32C. */
async function copyChunk(
  out: StoreObjectWriter,
  members: readonly Member[],
  tensors: readonly TensorInput[],
  chunkLength: number,
  pool: BufferPool,
  signal: AbortSignal | undefined,
  onBlock: (bytes: number, lastInput: number) => void,
): Promise<number> {
  let crc: Promise<number> = Promise.resolve(0);
  let written: Promise<void> = Promise.resolve();
  let member = 0; // next member to copy (or being copied)
  let memberDone = 0; // bytes of members[member] already copied
  try {
    for (let blockStart = 0; blockStart < chunkLength; ) {
      signal?.throwIfAborted();
      const buffer = await pool.take();
      const blockEnd = Math.min(blockStart + buffer.length, chunkLength);
      const reads: Promise<void>[] = [];
      let lastInput = -1;
      let pos = blockStart;
      while (pos < blockEnd) {
        const m = members[member];
        const dataStart = m === undefined ? chunkLength : m.offset + memberDone;
        if (pos < dataStart) {
          const zeroEnd = Math.min(dataStart, blockEnd);
          buffer.fill(0, pos - blockStart, zeroEnd - blockStart);
          pos = zeroEnd;
          continue;
        }
        const t = tensors[m.input];
        const n = Math.min(t.byteLength - memberDone, blockEnd - pos);
        for (let p = 0; p < n; p += READ_PIECE) {
          const len = Math.min(READ_PIECE, n - p);
          reads.push(t.read(buffer.subarray(pos - blockStart + p, pos - blockStart + p + len), memberDone + p));
        }
        pos += n;
        memberDone += n;
        if (memberDone === t.byteLength) {
          lastInput = m.input;
          member++;
          memberDone = 0;
          // zero-length members at this position finish too
          while (members[member] !== undefined && tensors[members[member].input].byteLength === 0) {
            lastInput = members[member].input;
            member++;
          }
        }
      }
      try {
        await Promise.all(reads);
      } catch (err) {
        await Promise.allSettled(reads);
        pool.giveBackAfter(buffer, Promise.resolve());
        throw err;
      }
      const data = buffer.subarray(0, blockEnd - blockStart);
      crc = crc.then((c) => crc32c(data, c));
      written = written.then(() => out.write(data));
      const bytes = data.length;
      const input = lastInput;
      pool.giveBackAfter(
        buffer,
        Promise.all([crc, written]).then(() => onBlock(bytes, input)),
      );
      blockStart = blockEnd;
    }
    // members of length 0 in an otherwise empty chunk
    let tail = -1;
    while (members[member] !== undefined) tail = members[member++].input;
    if (tail >= 0) onBlock(0, tail);
    await pool.drain();
    return await crc;
  } catch (err) {
    await pool.drain(true);
    crc.catch(() => {});
    written.catch(() => {});
    throw err;
  }
}

async function copySideFile(
  createFile: (name: string) => Promise<StoreObjectWriter>,
  side: SideFileInput,
): Promise<MessageInitShape<typeof ExtraFileSchema>> {
  const data = "data" in side ? side.data : await readFile(side.path);
  const out = await createFile(side.name);
  await out.write(data);
  await out.close();
  return { name: side.name, size: BigInt(data.byteLength), sha256: createHash("sha256").update(data).digest("hex") };
}
