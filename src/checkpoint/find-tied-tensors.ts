// Tied tensors (same dtype, shape and bytes, e.g. lm_head.weight == embed_tokens.weight) are stored
// once. Candidates are found by a cheap fingerprint of a few sampled pages; only fingerprint twins
// are compared byte by byte, so an untied model costs a few small reads per tensor.
import { crc32c } from "../native/checksum.js";
import type { TensorInput } from "./tensor-input.js";

const SAMPLE = 4096;
const COMPARE_BLOCK = 8 << 20;
const PARALLEL = 16;

/** For each input, the index of the earlier input it duplicates, or -1. */
export async function findTiedTensors(tensors: readonly TensorInput[], signal?: AbortSignal): Promise<number[]> {
  const aliasOf = tensors.map(() => -1);
  const groups = new Map<string, number[]>();
  tensors.forEach((t, i) => {
    if (t.byteLength === 0) return;
    const key = `${t.dtype}|${t.shape.join(",")}`;
    const group = groups.get(key);
    if (group === undefined) groups.set(key, [i]);
    else group.push(i);
  });

  for (const group of groups.values()) {
    if (group.length < 2) continue;
    const byPrint = new Map<number, number[]>();
    // a few at a time: the reads are small and mostly wait on the thread pool
    const prints: number[] = [];
    for (let k = 0; k < group.length; k += PARALLEL) {
      signal?.throwIfAborted();
      prints.push(...(await Promise.all(group.slice(k, k + PARALLEL).map((i) => fingerprint(tensors[i])))));
    }
    group.forEach((i, k) => {
      const twins = byPrint.get(prints[k]);
      if (twins === undefined) byPrint.set(prints[k], [i]);
      else twins.push(i);
    });
    for (const twins of byPrint.values()) {
      const originals: number[] = [];
      for (const i of twins) {
        let match = -1;
        for (const o of originals) {
          if (await sameBytes(tensors[o], tensors[i], signal)) {
            match = o;
            break;
          }
        }
        if (match === -1) originals.push(i);
        else aliasOf[i] = match;
      }
    }
  }
  return aliasOf;
}

async function fingerprint(t: TensorInput): Promise<number> {
  if (t.byteLength <= 3 * SAMPLE) {
    const all = new Uint8Array(t.byteLength);
    await t.read(all, 0);
    return crc32c(all);
  }
  const sample = new Uint8Array(3 * SAMPLE);
  const middle = Math.floor((t.byteLength - SAMPLE) / 2);
  await Promise.all([
    t.read(sample.subarray(0, SAMPLE), 0),
    t.read(sample.subarray(SAMPLE, 2 * SAMPLE), middle),
    t.read(sample.subarray(2 * SAMPLE), t.byteLength - SAMPLE),
  ]);
  return crc32c(sample);
}

async function sameBytes(a: TensorInput, b: TensorInput, signal?: AbortSignal): Promise<boolean> {
  const size = Math.min(COMPARE_BLOCK, a.byteLength);
  const x = Buffer.allocUnsafe(size);
  const y = Buffer.allocUnsafe(size);
  for (let offset = 0; offset < a.byteLength; offset += size) {
    signal?.throwIfAborted();
    const n = Math.min(size, a.byteLength - offset);
    await Promise.all([a.read(x.subarray(0, n), offset), b.read(y.subarray(0, n), offset)]);
    if (!x.subarray(0, n).equals(y.subarray(0, n))) return false;
  }
  return true;
}
