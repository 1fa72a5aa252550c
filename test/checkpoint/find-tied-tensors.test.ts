// Tied-tensor detection costs work linear in the number of tensors, counted in reads and bytes
// read (no clock): a file of 200 000 identical tensors, or of many large tensors alike in every
// sampled page, must not cost pairwise comparisons.
import test from "ava";
import { findTiedTensors } from "../../src/checkpoint/find-tied-tensors.js";
import { writeCheckpoint } from "../../src/checkpoint/checkpoint-writer.js";
import type { TensorInput } from "../../src/checkpoint/tensor-input.js";
import { Dtype } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { LocalStore } from "../../src/store/local-store.js";
import { memoryTensor } from "../fixtures/memory-tensor.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs();
test.after.always(() => dirs.cleanup());

/** Counts every read of the tensors and the bytes they return. */
function counted(tensors: TensorInput[]): { tensors: TensorInput[]; reads: () => number; bytes: () => number } {
  let reads = 0;
  let bytes = 0;
  return {
    tensors: tensors.map((t) => ({
      ...t,
      read(target: Uint8Array, offset: number) {
        reads++;
        bytes += target.length;
        return t.read(target, offset);
      },
    })),
    reads: () => reads,
    bytes: () => bytes,
  };
}

test("200 000 identical tiny tensors convert into one tensor with 199 999 aliases, at most 3 reads per tensor", async (t) => {
  t.timeout(120_000);
  const n = 200_000;
  const data = new Uint8Array(8).fill(7);
  const input = counted(Array.from({ length: n }, (_, i) => memoryTensor(`layers.${i}.scale`, Dtype.F32, [2], data)));
  const store = await LocalStore.open(await dirs.make());
  const index = await writeCheckpoint(store, input.tensors, { modelId: "many-tied" });
  t.is(index.tensors.length, 1);
  t.is(index.tensors[0].name, "layers.0.scale");
  t.is(index.tensors[0].aliases.length, n - 1);
  t.is(index.tensors[0].aliases[n - 2], `layers.${n - 1}.scale`);
  // one fingerprint read each, two reads per comparison with the first, one read to copy
  t.true(input.reads() <= 3 * n + 1, `${input.reads()} reads for ${n} tensors`);
});

test("large tensors alike in every sampled page are hashed whole, not compared pairwise", async (t) => {
  // 20 000-byte tensors: the fingerprint samples bytes [0, 4096), [7952, 12048) and [15904, 20000);
  // they differ only at byte 5000, and all but the last three are distinct.
  const n = 300;
  const base = new Uint8Array(20_000).fill(1);
  const tensors = Array.from({ length: n }, (_, i) => {
    const data = base.slice();
    data[5000] = Math.min(i, n - 3) % 256;
    data[5001] = Math.floor(Math.min(i, n - 3) / 256);
    return memoryTensor(`w${i}`, Dtype.F32, [5000], data);
  });
  const input = counted(tensors);
  const aliasOf = await findTiedTensors(input.tensors);
  t.deepEqual(aliasOf.slice(0, n - 2), new Array(n - 2).fill(-1));
  t.deepEqual(aliasOf.slice(n - 2), [n - 3, n - 3]);
  const total = n * base.length;
  // a sample and a whole hash per tensor, one comparison per tie: pairwise would read ~n/2 × total
  t.true(input.bytes() <= 3 * total, `${input.bytes()} bytes read for ${total} bytes of tensors`);
});

test("a pair alike in its samples is compared byte by byte; small twins by their whole bytes", async (t) => {
  const big = new Uint8Array(20_000).fill(3);
  const almost = big.slice();
  almost[5000] = 4;
  const tiny = new Uint8Array([1, 2, 3, 4]);
  const tensors = [
    memoryTensor("a", Dtype.F32, [5000], big),
    memoryTensor("b", Dtype.F32, [5000], almost), // same samples as a, different bytes
    memoryTensor("c", Dtype.F32, [1], tiny),
    memoryTensor("d", Dtype.F32, [1], tiny.slice()),
    memoryTensor("e", Dtype.I32, [1], tiny.slice()), // same bytes, other dtype
    memoryTensor("f", Dtype.F32, [5000], big.slice()),
    memoryTensor("g", Dtype.F32, [0]),
    memoryTensor("h", Dtype.F32, [0]), // empty tensors are never ties
  ];
  t.deepEqual(await findTiedTensors(tensors), [-1, -1, -1, 2, -1, 0, -1, -1]);
});

test("an aborted signal stops the search", async (t) => {
  const tensors = Array.from({ length: 64 }, (_, i) => memoryTensor(`t${i}`, Dtype.F32, [4], new Uint8Array(16)));
  const controller = new AbortController();
  controller.abort(new Error("stop"));
  await t.throwsAsync(findTiedTensors(tensors, controller.signal), { message: "stop" });
});
