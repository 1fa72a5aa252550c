// Opens the safetensors files of a resolved source: headers parsed and checked against each other
// (and the shard index), and every tensor exposed as a TensorInput that reads with positional
// reads straight into the caller's buffer.
import fs from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import type { TensorInput } from "../../checkpoint/tensor-input.js";
import type { ShardIndex } from "./repo-files.js";
import type { SourceFileRef } from "./resolved-source.js";
import { readSafetensorsHeader } from "./safetensors-header.js";

/** The tensors of a set of safetensors files, open for reading. */
export interface WeightFiles {
  /** All tensors: file by file, in data order within a file. */
  tensors: TensorInput[];
  /** For each tensor, the index of its file in the list given to openWeightFiles. */
  fileOf: number[];
  /** The files' "__metadata__", merged (first file wins on a conflict). */
  metadata: Record<string, string>;
  /** Sum of the tensor bytes. */
  bytes: number;
  close(): Promise<void>;
}

/** Parses every header and opens every file; InvalidArgument when they are corrupt or disagree. */
export async function openWeightFiles(files: readonly SourceFileRef[], shardIndex?: ShardIndex): Promise<WeightFiles> {
  const fds: number[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(fds.splice(0).map((fd) => new Promise<void>((resolve) => fs.close(fd, () => resolve()))));
  };
  try {
    const tensors: TensorInput[] = [];
    const fileOf: number[] = [];
    const metadata: Record<string, string> = {};
    const seen = new Map<string, string>();
    let bytes = 0;
    for (const [i, file] of files.entries()) {
      const header = await readSafetensorsHeader(file.path, file.name);
      const fd = await new Promise<number>((resolve, reject) => fs.open(file.path, "r", (err, fd) => (err ? reject(err) : resolve(fd))));
      fds.push(fd);
      for (const [k, v] of Object.entries(header.metadata)) if (!(k in metadata)) metadata[k] = v;
      for (const t of header.tensors) {
        const other = seen.get(t.name);
        if (other !== undefined) throw new ConnectError(`tensor ${t.name} is in both ${other} and ${file.name}`, Code.InvalidArgument);
        seen.set(t.name, file.name);
        const expected = shardIndex?.weightMap.get(t.name);
        if (expected !== undefined && expected !== file.name) {
          throw new ConnectError(`tensor ${t.name} is in ${file.name}, but the shard index puts it in ${expected}`, Code.InvalidArgument);
        }
        tensors.push(fileTensor(fd, file.name, header.dataStart + t.begin, t.name, t.dtype, t.shape, t.end - t.begin));
        fileOf.push(i);
        bytes += t.end - t.begin;
      }
    }
    if (shardIndex !== undefined) {
      for (const [name, file] of shardIndex.weightMap) {
        if (!seen.has(name)) throw new ConnectError(`the shard index lists tensor ${name} in ${file}, but ${file} does not contain it`, Code.InvalidArgument);
      }
    }
    return { tensors, fileOf, metadata, bytes, close };
  } catch (err) {
    await close();
    throw err;
  }
}

function fileTensor(
  fd: number,
  fileName: string,
  start: number,
  name: string,
  dtype: TensorInput["dtype"],
  shape: number[],
  byteLength: number,
): TensorInput {
  return {
    name,
    dtype,
    shape,
    byteLength,
    async read(target: Uint8Array, offset: number): Promise<void> {
      for (let done = 0; done < target.length; ) {
        const n = await pread(fd, target, done, target.length - done, start + offset + done);
        if (n === 0) throw new ConnectError(`${fileName} ended inside tensor ${name}; the file was truncated while being read`, Code.InvalidArgument);
        done += n;
      }
    },
  };
}

function pread(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buffer, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}
