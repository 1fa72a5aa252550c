import test from "ava";
import { planLayout } from "../../src/checkpoint/layout.js";

const MiB = 1 << 20;

test("tensors are aligned, never split, and chunks are padded", (t) => {
  const lengths = [10, 4096, 5000, 1, 0, 3 * MiB, 2 * MiB];
  const { placements, chunkLengths } = planLayout(lengths, 4 * MiB);
  for (const [i, p] of placements.entries()) {
    t.is(p.offset % 4096, 0, `tensor ${i} aligned`);
    t.true(p.offset + lengths[i] <= chunkLengths[p.chunk], `tensor ${i} inside its chunk`);
  }
  for (const len of chunkLengths) t.is(len % 4096, 0);
  t.deepEqual(placements.slice(0, 4), [
    { chunk: 0, offset: 0 },
    { chunk: 0, offset: 4096 },
    { chunk: 0, offset: 8192 },
    { chunk: 0, offset: 16384 },
  ]);
  // 3 MiB fits behind the first 20 KiB; the 2 MiB tensor then needs a new chunk.
  t.is(placements[5].chunk, 0);
  t.is(placements[6].chunk, 1);
  t.is(placements[6].offset, 0);
  t.deepEqual(chunkLengths, [20480 + 3 * MiB, 2 * MiB]);
});

test("a tensor larger than the target gets a chunk of its own", (t) => {
  const { placements, chunkLengths } = planLayout([100, 10 * MiB, 100], 4 * MiB);
  t.deepEqual(placements.map((p) => p.chunk), [0, 1, 2]);
  t.deepEqual(chunkLengths, [4096, 10 * MiB, 4096]);
  const first = planLayout([10 * MiB + 1, 100], 4 * MiB);
  t.deepEqual(first.placements, [{ chunk: 0, offset: 0 }, { chunk: 1, offset: 0 }]);
  t.deepEqual(first.chunkLengths, [10 * MiB + 4096, 4096]);
});

test("a tensor that exactly fills the target leaves no hole", (t) => {
  const { placements, chunkLengths } = planLayout([4 * MiB, 4 * MiB, 1], 4 * MiB);
  t.deepEqual(placements.map((p) => p.chunk), [0, 1, 2]);
  t.deepEqual(chunkLengths, [4 * MiB, 4 * MiB, 4096]);
});

test("only empty tensors give one empty chunk; invalid sizes throw", (t) => {
  t.deepEqual(planLayout([0, 0], 4096), { placements: [{ chunk: 0, offset: 0 }, { chunk: 0, offset: 0 }], chunkLengths: [0] });
  t.deepEqual(planLayout([], 4096), { placements: [], chunkLengths: [] });
  t.throws(() => planLayout([1], 100), { instanceOf: RangeError });
  t.throws(() => planLayout([-1], 4096), { instanceOf: RangeError });
});
