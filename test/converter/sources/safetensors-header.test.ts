import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { headerLength, parseSafetensorsHeader } from "../../../src/converter/sources/safetensors-header.js";
import { Dtype } from "../../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";

const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));

function parse(header: unknown, dataBytes: number) {
  const json = enc(header);
  return parseSafetensorsHeader(json, 8 + json.length + dataBytes, "m.safetensors");
}

function refuses(t: import("ava").ExecutionContext, fn: () => unknown, message: RegExp): void {
  const err = t.throws(fn, { instanceOf: ConnectError });
  t.is(err?.code, Code.InvalidArgument);
  t.regex(err!.rawMessage, /^m\.safetensors: /);
  t.regex(err!.rawMessage, message);
}

test("a valid header parses, tensors in data order, metadata kept", (t) => {
  const header = {
    b: { dtype: "BF16", shape: [2, 3], data_offsets: [8, 20] },
    a: { dtype: "F8_E4M3", shape: [8], data_offsets: [0, 8] },
    s: { dtype: "F64", shape: [], data_offsets: [20, 28] },
    e: { dtype: "BOOL", shape: [0], data_offsets: [28, 28] },
    __metadata__: { format: "pt" },
  };
  const h = parse(header, 28);
  t.deepEqual(h.tensors.map((x) => x.name), ["a", "b", "s", "e"]);
  t.is(h.tensors[1].dtype, Dtype.BF16);
  t.deepEqual(h.metadata, { format: "pt" });
  t.is(h.dataStart, 8 + enc(header).length);
});

test("the length prefix must fit the file", (t) => {
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, 1000n, true);
  refuses(t, () => headerLength(prefix, 500, "m.safetensors"), /header length 1000 runs past the end of the file \(500 bytes\)/);
  refuses(t, () => headerLength(prefix, 4, "m.safetensors"), /shorter than the 8-byte/);
  new DataView(prefix.buffer).setBigUint64(0, 2n ** 63n, true);
  refuses(t, () => headerLength(prefix, 500, "m.safetensors"), /runs past/);
  new DataView(prefix.buffer).setBigUint64(0, 10n, true);
  t.is(headerLength(prefix, 100, "m.safetensors"), 10);
});

test("bad headers are refused with the reason", (t) => {
  refuses(t, () => parseSafetensorsHeader(new TextEncoder().encode("{not json"), 100, "m.safetensors"), /not valid UTF-8 JSON/);
  refuses(t, () => parseSafetensorsHeader(new Uint8Array([0x7b, 0xff, 0x7d]), 100, "m.safetensors"), /not valid UTF-8/);
  refuses(t, () => parse([1, 2], 0), /not a JSON object/);
  refuses(t, () => parse({ a: { dtype: "F4", shape: [1], data_offsets: [0, 1] } }, 1), /unsupported dtype "F4" \(thaw supports BF16/);
  refuses(t, () => parse({ a: { shape: [1], data_offsets: [0, 1] } }, 1), /dtype is missing/);
  refuses(t, () => parse({ a: { dtype: "U8", shape: [1.5], data_offsets: [0, 1] } }, 2), /shape/);
  refuses(t, () => parse({ a: { dtype: "U8", shape: [1], data_offsets: [0] } }, 1), /data_offsets/);
  refuses(t, () => parse({ a: { dtype: "U8", shape: [4], data_offsets: [0, 4] } }, 3), /out of range of the 3 data bytes/);
  refuses(t, () => parse({ a: { dtype: "U8", shape: [4], data_offsets: [4, 0] } }, 8), /out of range/);
  refuses(t, () => parse({ a: { dtype: "F32", shape: [2], data_offsets: [0, 4] } }, 8), /hold 4 bytes, but shape \[2\] of F32 needs 8/);
  refuses(t, () => parse({ a: { dtype: "U8", shape: [4], data_offsets: [0, 4] }, b: { dtype: "U8", shape: [4], data_offsets: [2, 6] } }, 8), /a and b overlap/);
  refuses(t, () => parse({ __metadata__: { n: 1 } }, 0), /__metadata__\.n is not a string/);
  refuses(t, () => parse({ "": { dtype: "U8", shape: [1], data_offsets: [0, 1] } }, 1), /empty name/);
  refuses(t, () => parse({ a: { dtype: "U8", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 1] } }, 1), /too large/);
});
