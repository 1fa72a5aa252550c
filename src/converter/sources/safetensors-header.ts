// The safetensors header: 8 bytes of little-endian length, then that many bytes of JSON naming
// each tensor's dtype, shape and [begin, end) inside the data that follows. Everything in it is
// checked before any offset is trusted, and every refusal says which file and what is wrong.
import { open } from "node:fs/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { DTYPES, dtypeFromName } from "../../checkpoint/dtype.js";
import type { Dtype } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";

/** Largest header the reference implementation accepts (100 MB). */
const MAX_HEADER = 100_000_000;

/** One tensor of a safetensors file; offsets are relative to the start of the data. */
export interface SafetensorsTensor {
  name: string;
  dtype: Dtype;
  /** The dtype as written in the file ("BF16"). */
  dtypeName: string;
  shape: number[];
  begin: number;
  end: number;
}

/** A parsed, validated header. */
export interface SafetensorsHeader {
  /** File offset of the first data byte (8 + header length). */
  dataStart: number;
  /** Tensors in data order. */
  tensors: SafetensorsTensor[];
  /** The "__metadata__" entries. */
  metadata: Record<string, string>;
}

function bad(label: string, why: string): ConnectError {
  return new ConnectError(`${label}: ${why}`, Code.InvalidArgument);
}

/** Reads the length prefix; throws when the header cannot fit in a file of `fileSize` bytes. */
export function headerLength(prefix: Uint8Array, fileSize: number, label: string): number {
  if (fileSize < 8 || prefix.length < 8) throw bad(label, `not a safetensors file: ${fileSize} bytes, shorter than the 8-byte header length`);
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(fileSize - 8)) {
    throw bad(label, `not a safetensors file or truncated: header length ${length} runs past the end of the file (${fileSize} bytes)`);
  }
  if (length > BigInt(MAX_HEADER)) throw bad(label, `header length ${length} exceeds the ${MAX_HEADER}-byte limit`);
  if (length < 2n) throw bad(label, `header length ${length} is too short for a JSON object`);
  return Number(length);
}

/** Parses the JSON header (the bytes after the length prefix) of a file of `fileSize` bytes. */
export function parseSafetensorsHeader(json: Uint8Array, fileSize: number, label: string): SafetensorsHeader {
  const dataStart = 8 + json.length;
  const dataSize = fileSize - dataStart;
  let root: unknown;
  try {
    root = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json));
  } catch (err) {
    throw bad(label, `header is not valid UTF-8 JSON (${(err as Error).message}); the file is corrupt or not safetensors`);
  }
  if (typeof root !== "object" || root === null || Array.isArray(root)) throw bad(label, "header is not a JSON object");

  const metadata: Record<string, string> = {};
  const tensors: SafetensorsTensor[] = [];
  for (const [name, value] of Object.entries(root as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof value !== "object" || value === null || Array.isArray(value)) throw bad(label, "__metadata__ is not an object");
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") throw bad(label, `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (name === "") throw bad(label, "a tensor has an empty name");
    if (typeof value !== "object" || value === null) throw bad(label, `tensor ${name}: entry is not an object`);
    const entry = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof entry.dtype !== "string") throw bad(label, `tensor ${name}: dtype is missing`);
    const info = dtypeFromName(entry.dtype);
    if (info === undefined) {
      throw bad(label, `tensor ${name}: unsupported dtype ${JSON.stringify(entry.dtype)} (thaw supports ${DTYPES.map((d) => d.name).join(", ")})`);
    }
    if (!Array.isArray(entry.shape) || !entry.shape.every(isCount)) {
      throw bad(label, `tensor ${name}: shape must be a list of non-negative integers`);
    }
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      throw bad(label, `tensor ${name}: data_offsets must be [begin, end] of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    const shape = entry.shape as number[];
    const needed = shape.reduce((a, b) => a * b, 1) * info.size;
    if (!Number.isSafeInteger(needed)) throw bad(label, `tensor ${name}: shape [${shape.join(", ")}] is too large`);
    if (begin > end || end > dataSize) {
      throw bad(label, `tensor ${name}: data_offsets [${begin}, ${end}] out of range of the ${dataSize} data bytes (truncated file?)`);
    }
    if (end - begin !== needed) {
      throw bad(label, `tensor ${name}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but shape [${shape.join(", ")}] of ${info.name} needs ${needed}`);
    }
    tensors.push({ name, dtype: info.dtype, dtypeName: info.name, shape, begin, end });
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < tensors.length; i++) {
    const [prev, cur] = [tensors[i - 1], tensors[i]];
    if (cur.begin < prev.end) throw bad(label, `tensors ${prev.name} and ${cur.name} overlap in the data`);
  }
  return { dataStart, tensors, metadata };
}

/** Opens a safetensors file and parses its header. */
export async function readSafetensorsHeader(file: string, label = file): Promise<SafetensorsHeader & { fileSize: number }> {
  const handle = await open(file, "r");
  try {
    const fileSize = (await handle.stat()).size;
    const prefix = new Uint8Array(8);
    await handle.read(prefix, 0, 8, 0);
    const length = headerLength(prefix, fileSize, label);
    const json = new Uint8Array(length);
    const { bytesRead } = await handle.read(json, 0, length, 8);
    if (bytesRead !== length) throw bad(label, "file shrank while its header was read");
    return { ...parseSafetensorsHeader(json, fileSize, label), fileSize };
  } finally {
    await handle.close();
  }
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}
