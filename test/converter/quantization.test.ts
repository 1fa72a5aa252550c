import test from "ava";
import path from "node:path";
import { readFile, writeFile } from "node:fs/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { CheckpointReader } from "../../src/checkpoint/checkpoint-reader.js";
import { convertModel } from "../../src/converter/convert.js";
import { Dtype, ScaleGranularity } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { LocalStore } from "../../src/store/local-store.js";
import { makeTinyModel } from "../../src/tiny-model/tiny-model.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs();
test.after.always(() => dirs.cleanup());

async function tiny(arch: "qwen3-fp8" | "llama-fp8" | "qwen3"): Promise<string> {
  const dir = path.join(await dirs.make(), arch);
  await makeTinyModel(dir, arch);
  return dir;
}

test("FP8 block-wise weights are converted as they are and the index records the quantization", async (t) => {
  const store = await LocalStore.open(await dirs.make());
  const index = await convertModel({ source: await tiny("qwen3-fp8"), store });
  const q = index.quantization!;
  t.is(q.method, "fp8");
  t.is(q.weightDtype, Dtype.F8_E4M3);
  t.is(q.granularity, ScaleGranularity.BLOCK);
  t.deepEqual(q.blockSize, [32, 32]);
  t.is(q.quantizedTensors, 4 * 7); // q, k, v, o, gate, up, down in each of 4 layers
  const reader = await CheckpointReader.open(store, index.modelKey);
  const w = reader.entry("model.layers.0.self_attn.q_proj.weight");
  t.is(w.dtype, Dtype.F8_E4M3);
  t.is(w.byteLength, 128n * 128n); // one byte a weight: not dequantized
  t.is(reader.entry("model.layers.0.self_attn.q_proj.weight_scale_inv").dtype, Dtype.F32);
  // half the bytes of the same model in bf16 would be a quarter of its float32 bytes here
  const plain = await convertModel({ source: await tiny("qwen3"), store: await LocalStore.open(await dirs.make()) });
  t.is(plain.quantization, undefined);
  t.true(index.totalBytes < plain.totalBytes / 2n);
});

test("compressed-tensors per-channel FP8 is recorded as such", async (t) => {
  const index = await convertModel({ source: await tiny("llama-fp8"), store: await LocalStore.open(await dirs.make()) });
  t.is(index.quantization?.method, "compressed-tensors");
  t.is(index.quantization?.granularity, ScaleGranularity.CHANNEL);
  t.deepEqual(index.quantization?.blockSize, []);
});

test("an FP8 config whose tensors lack scales, or that holds no FP8 tensor, is refused", async (t) => {
  const noFp8 = await tiny("qwen3");
  const cfg = JSON.parse(await readFile(path.join(noFp8, "config.json"), "utf8"));
  await writeFile(path.join(noFp8, "config.json"), JSON.stringify({ ...cfg, quantization_config: { quant_method: "fp8", fmt: "e4m3" } }));
  const store = await LocalStore.open(await dirs.make());
  const err = await t.throwsAsync(convertModel({ source: noFp8, store }), { instanceOf: ConnectError });
  t.is(err?.code, Code.InvalidArgument);
  t.regex(err?.rawMessage ?? "", /declares fp8 quantization but no tensor is F8_E4M3/);

  const awq = await tiny("qwen3");
  await writeFile(path.join(awq, "config.json"), JSON.stringify({ ...cfg, quantization_config: { quant_method: "awq", bits: 4 } }));
  const err2 = await t.throwsAsync(convertModel({ source: awq, store }), { instanceOf: ConnectError });
  t.regex(err2?.rawMessage ?? "", /quantization "awq" is not served by the thaw engine/);
  t.deepEqual(await store.list(), []);
});

test("an architecture the engine does not serve is refused at conversion", async (t) => {
  const dir = await tiny("qwen3");
  const cfg = JSON.parse(await readFile(path.join(dir, "config.json"), "utf8"));
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ ...cfg, architectures: ["MambaForCausalLM"], model_type: "mamba" }));
  const err = await t.throwsAsync(convertModel({ source: dir, store: await LocalStore.open(await dirs.make()) }), { instanceOf: ConnectError });
  t.is(err?.code, Code.InvalidArgument);
  t.regex(err?.rawMessage ?? "", /MambaForCausalLM is not served by the thaw engine \(it serves LlamaForCausalLM, .*Phi3ForCausalLM\)/);
});

test("routed experts are written grouped by projection, in expert order, evenly spaced", async (t) => {
  const dir = path.join(await dirs.make(), "moe");
  await makeTinyModel(dir, "qwen3-moe");
  const index = await convertModel({ source: dir, store: await LocalStore.open(await dirs.make()) });
  const gate = index.tensors.filter((x) => /^model\.layers\.1\.mlp\.experts\.\d+\.gate_proj\.weight$/.test(x.name));
  t.deepEqual(gate.map((x) => Number(/experts\.(\d+)/.exec(x.name)![1])), [0, 1, 2, 3, 4, 5, 6, 7]);
  const first = index.tensors.indexOf(gate[0]);
  t.deepEqual(index.tensors.slice(first, first + 8), gate); // consecutive in the index
  const at = (x: (typeof gate)[number]): bigint => BigInt(x.chunk) * (1n << 40n) + x.offset;
  const steps = new Set(gate.slice(1).map((x, i) => at(x) - at(gate[i])));
  t.is(steps.size, 1, "evenly spaced (one chunk here)");
});
