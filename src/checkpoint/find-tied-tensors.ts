// Tied tensors (same dtype, shape and bytes, e.g. lm_head.weight == embed_tokens.weight) are stored
// once. The work is linear in the number of tensors, whatever a file holds:
//   1. tensors are bucketed by dtype, shape and a SHA-256 fingerprint: of all their bytes when
//      small, of three sampled pages when large (an untied model costs a few small reads each);
//   2. a bucket of three or more large tensors is split again by the SHA-256 of all their bytes
//      (large tensors alike in their samples but not elsewhere would otherwise be compared pairwise);
//   3. each member of a bucket is compared byte by byte with the bucket's first member only.
// Members equal in SHA-256 but not in bytes (a collision nobody can make) would stay separate: a
// missed tie costs space, never correctness.
import { createHash } from "node:crypto";
import type { TensorInput } from "./tensor-input.js";

const SAMPLE = 4096;
const COMPARE_BLOCK = 8 << 20;
const PARALLEL = 16;

/** For each input, the index of the earlier input it duplicates, or -1. */
export async function findTiedTensors(tensors: readonly TensorInput[], signal?: AbortSignal): Promise<number[]> {
  const aliasOf = tensors.map(() => -1);
  const byShape = bucket(
    tensors.map((_, i) => i).filter((i) => tensors[i].byteLength > 0),
    (i) => `${tensors[i].dtype}|${tensors[i].shape.join(",")}`,
  );
  for (const group of byShape) {
    if (group.length < 2) continue;
    const prints = await mapInBatches(group, (i) => fingerprint(tensors[i]), signal);
    for (const twins of bucket(group, (_, k) => prints[k])) {
      if (twins.length < 2) continue;
      const wholeKnown = tensors[twins[0]].byteLength <= 3 * SAMPLE; // the fingerprint covered every byte
      if (wholeKnown || twins.length === 2) {
        await tieToFirst(twins, tensors, aliasOf, signal);
        continue;
      }
      const hashes = await mapInBatches(twins, (i) => wholeHash(tensors[i], signal), signal);
      for (const same of bucket(twins, (_, k) => hashes[k])) await tieToFirst(same, tensors, aliasOf, signal);
    }
  }
  return aliasOf;
}

/** Makes every member that equals the first (byte by byte) an alias of it. */
async function tieToFirst(members: readonly number[], tensors: readonly TensorInput[], aliasOf: number[], signal?: AbortSignal): Promise<void> {
  const first = members[0];
  for (let k = 1; k < members.length; k++) {
    if (await sameBytes(tensors[first], tensors[members[k]], signal)) aliasOf[members[k]] = first;
  }
}

/** The members grouped by key, groups in order of first appearance, members in input order. */
function bucket(members: readonly number[], key: (member: number, position: number) => string): number[][] {
  const groups = new Map<string, number[]>();
  members.forEach((m, k) => {
    const id = key(m, k);
    const group = groups.get(id);
    if (group === undefined) groups.set(id, [m]);
    else group.push(m);
  });
  return [...groups.values()];
}

/** `work` over the items a few at a time (the reads are small and mostly wait on the thread pool). */
async function mapInBatches<T>(items: readonly number[], work: (item: number) => Promise<T>, signal?: AbortSignal): Promise<T[]> {
  const out: T[] = [];
  for (let k = 0; k < items.length; k += PARALLEL) {
    signal?.throwIfAborted();
    out.push(...(await Promise.all(items.slice(k, k + PARALLEL).map(work))));
  }
  return out;
}

async function fingerprint(t: TensorInput): Promise<string> {
  if (t.byteLength <= 3 * SAMPLE) {
    const all = new Uint8Array(t.byteLength);
    await t.read(all, 0);
    return createHash("sha256").update(all).digest("base64");
  }
  const sample = new Uint8Array(3 * SAMPLE);
  const middle = Math.floor((t.byteLength - SAMPLE) / 2);
  await Promise.all([
    t.read(sample.subarray(0, SAMPLE), 0),
    t.read(sample.subarray(SAMPLE, 2 * SAMPLE), middle),
    t.read(sample.subarray(2 * SAMPLE), t.byteLength - SAMPLE),
  ]);
  return createHash("sha256").update(sample).digest("base64");
}

async function wholeHash(t: TensorInput, signal?: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  const block = Buffer.allocUnsafe(Math.min(COMPARE_BLOCK, t.byteLength));
  for (let offset = 0; offset < t.byteLength; offset += block.length) {
    signal?.throwIfAborted();
    const piece = block.subarray(0, Math.min(block.length, t.byteLength - offset));
    await t.read(piece, offset);
    hash.update(piece);
  }
  return hash.digest("base64");
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
