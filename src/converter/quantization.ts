// The quantization a checkpoint carries, read from config.json's quantization_config and checked
// against the tensors: FP8 e4m3 weights are converted as they are (never dequantized), each with
// its scale tensor beside it, and the index records what they are (CheckpointIndex.quantization).
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Dtype, type QuantizationSchema, ScaleGranularity } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import type { TensorInput } from "../checkpoint/tensor-input.js";
import { ModelConfigError, quantizationOf } from "./model-config.js";

/** The scale suffixes of the two FP8 layouts: transformers' fp8 and compressed-tensors. */
const SCALE_SUFFIXES = ["_scale_inv", "_scale"];

/**
 * What CheckpointIndex.quantization records for a model, or undefined when config.json declares no
 * quantization. Throws ModelConfigError when the tensors do not match what the config declares
 * (no FP8 tensor, an FP8 weight without its scale, a scale that tiles no block).
 */
export function describeQuantization(
  config: Record<string, unknown>,
  tensors: readonly TensorInput[],
): MessageInitShape<typeof QuantizationSchema> | undefined {
  const q = config.quantization_config;
  if (q === undefined || q === null || typeof q !== "object") return undefined;
  const spec = quantizationOf(q as Record<string, unknown>);
  if (typeof spec === "string") throw new ModelConfigError("quantization_config", spec);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const e5m2 = tensors.find((t) => t.dtype === Dtype.F8_E5M2);
  if (e5m2 !== undefined) throw new ModelConfigError("quantization_config", `${e5m2.name} is float8 e5m2: only e4m3 weights are served`);
  const quantized = tensors.filter((t) => t.dtype === Dtype.F8_E4M3);
  if (quantized.length === 0) throw new ModelConfigError("quantization_config", `config.json declares ${spec.method} quantization but no tensor is F8_E4M3`);
  let granularity = spec.granularity;
  let blockSize = spec.blockSize;
  let bytes = 0;
  for (const t of quantized) {
    const scale = SCALE_SUFFIXES.map((s) => byName.get(t.name + s)).find((s) => s !== undefined);
    if (scale === undefined) throw new ModelConfigError("quantization_config", `${t.name} is FP8 but has no ${t.name}_scale_inv or ${t.name}_scale beside it`);
    if (t.shape.length !== 2) throw new ModelConfigError("quantization_config", `${t.name}: FP8 weights must be matrices, got shape [${t.shape.join(", ")}]`);
    const [rows, cols] = t.shape;
    const kind = scaleKind(scale.shape, rows, cols, blockSize);
    if (kind === undefined) {
      throw new ModelConfigError("quantization_config", `${scale.name} of shape [${scale.shape.join(", ")}] fits no scale layout of a [${rows}, ${cols}] weight`);
    }
    if (granularity === "") granularity = kind.granularity;
    if (granularity === "block" && blockSize.length === 0) blockSize = kind.blockSize;
    bytes += t.byteLength + scale.byteLength;
  }
  const granularities = { tensor: ScaleGranularity.TENSOR, channel: ScaleGranularity.CHANNEL, block: ScaleGranularity.BLOCK, "": ScaleGranularity.UNSPECIFIED };
  return {
    method: spec.method,
    weightDtype: Dtype.F8_E4M3,
    granularity: granularities[granularity],
    blockSize,
    quantizedTensors: quantized.length,
    quantizedBytes: BigInt(bytes),
  };
}

function scaleKind(
  shape: readonly number[],
  rows: number,
  cols: number,
  block: readonly number[],
): { granularity: "tensor" | "channel" | "block"; blockSize: number[] } | undefined {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n === 1) return { granularity: "tensor", blockSize: [] };
  if (n === rows && (shape.length === 1 || (shape.length === 2 && shape[1] === 1))) return { granularity: "channel", blockSize: [] };
  if (shape.length !== 2) return undefined;
  const [br, bc] = block.length === 2 ? block : [Math.ceil(rows / shape[0]), Math.ceil(cols / shape[1])];
  if (Math.ceil(rows / br) !== shape[0] || Math.ceil(cols / bc) !== shape[1]) return undefined;
  return { granularity: "block", blockSize: [br, bc] };
}
