import test from "ava";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeIndex, encodeIndex } from "../../src/checkpoint/index-codec.js";
import {
  type CheckpointIndex,
  CheckpointIndexSchema,
  ChecksumAlgorithm,
  Dtype,
} from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";

function valid(): CheckpointIndex {
  return create(CheckpointIndexSchema, {
    formatVersion: 1,
    ref: { modelId: "org/m", revision: "main" },
    modelKey: "org--m@main",
    alignment: 4096n,
    chunkSize: 8192n,
    tensors: [
      { name: "a", dtype: Dtype.F32, shape: [2n, 3n], chunk: 0, offset: 0n, byteLength: 24n, aliases: ["a2"] },
      { name: "b", dtype: Dtype.BF16, shape: [2048n], chunk: 0, offset: 4096n, byteLength: 4096n },
      { name: "c", dtype: Dtype.U8, shape: [5000n], chunk: 1, offset: 0n, byteLength: 5000n },
    ],
    chunks: [
      { fileName: "chunk-00000.bin", byteLength: 8192n, checksum: { algorithm: ChecksumAlgorithm.CRC32C, value: 1n } },
      { fileName: "chunk-00001.bin", byteLength: 8192n, checksum: { algorithm: ChecksumAlgorithm.CRC32C, value: 2n } },
    ],
    totalBytes: 16384n,
    extraFiles: [{ name: "config.json", size: 2n, sha256: "x" }],
  });
}

test("a valid index round-trips", (t) => {
  const index = valid();
  const back = decodeIndex(encodeIndex(index));
  t.is(back.tensors[1].offset, 4096n);
  t.deepEqual(back.tensors[0].aliases, ["a2"]);
  t.is(back.modelKey, "org--m@main");
});

const broken: [string, (i: CheckpointIndex) => void, RegExp][] = [
  ["version", (i) => (i.formatVersion = 2), /format version 2/],
  ["alignment", (i) => (i.alignment = 512n), /alignment/],
  ["model key", (i) => (i.modelKey = "../x@main"), /model key/],
  ["tensor outside chunk", (i) => (i.tensors[2].offset = 4096n), /runs past/],
  ["unaligned tensor", (i) => (i.tensors[1].offset = 100n), /not aligned/],
  ["overlap", (i) => { i.tensors[1].offset = 0n; }, /overlap/],
  ["duplicate name", (i) => (i.tensors[2].name = "a"), /used twice/],
  ["alias clashes with a name", (i) => (i.tensors[0].aliases = ["b"]), /used twice/],
  ["bad chunk index", (i) => (i.tensors[2].chunk = 7), /chunk 7/],
  ["shape mismatch", (i) => (i.tensors[0].byteLength = 25n), /shape/],
  ["unknown dtype", (i) => (i.tensors[0].dtype = Dtype.UNSPECIFIED), /dtype/],
  ["unaligned chunk", (i) => { i.chunks[1].byteLength = 5000n; i.totalBytes = 13192n; }, /not aligned/],
  ["total", (i) => (i.totalBytes = 1n), /total_bytes/],
  ["chunk escapes folder", (i) => (i.chunks[0].fileName = "../evil.bin"), /file name/],
  ["side file escapes folder", (i) => (i.extraFiles[0].name = "/etc/passwd"), /file name/],
  ["side file named like the index", (i) => (i.extraFiles[0].name = "model.idx"), /used twice/],
  ["no checksum", (i) => (i.chunks[0].checksum = undefined), /checksum/],
];

for (const [what, breakIt, message] of broken) {
  test(`decode rejects: ${what}`, (t) => {
    const index = valid();
    breakIt(index);
    const err = t.throws(() => encodeIndex(index), { instanceOf: ConnectError });
    t.is(err?.code, Code.DataLoss);
    t.regex(err!.message, message);
  });
}

test("garbage bytes are DataLoss", (t) => {
  const err = t.throws(() => decodeIndex(new Uint8Array([0xff, 0xff, 0xff, 0xff])), { instanceOf: ConnectError });
  t.is(err?.code, Code.DataLoss);
});
