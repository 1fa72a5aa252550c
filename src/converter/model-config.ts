// Checks a model's config.json at conversion, so a config no engine can serve is refused once,
// with the field named, instead of converting and then failing every request (num_key_value_heads
// 0 used to reach the engine as a division by zero). Fields that are absent (or null) are not
// required here: a converter stores any safetensors model, and each engine asks for what it needs.
// Fields that are present must make sense, alone and together.

/** A config.json field that no engine could use; `field` names it (dotted for nested ones). */
export class ModelConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = "ModelConfigError";
  }
}

/**
 * The architectures the thaw engine serves (python/thaw_engine/config.py SUPPORTED_ARCHITECTURES,
 * kept equal by a test there), with their model_type. Every one applies rotary embeddings.
 */
export const SERVED_ARCHITECTURES: Readonly<Record<string, string>> = {
  LlamaForCausalLM: "llama",
  MistralForCausalLM: "mistral",
  Qwen2ForCausalLM: "qwen2",
  Qwen3ForCausalLM: "qwen3",
  Qwen3MoeForCausalLM: "qwen3_moe",
  MixtralForCausalLM: "mixtral",
  Gemma2ForCausalLM: "gemma2",
  Gemma3ForCausalLM: "gemma3_text",
  Gemma3ForConditionalGeneration: "gemma3",
  Phi3ForCausalLM: "phi3",
};
const SERVED_MODEL_TYPES = new Set(Object.values(SERVED_ARCHITECTURES));
/** Quantizations the engine serves: FP8 e4m3 weights with their scales. */
const SERVED_QUANTIZATIONS = ["fp8", "compressed-tensors"];

const POSITIVE_INTEGERS = [
  "hidden_size",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
  "num_hidden_layers",
  "intermediate_size",
  "vocab_size",
  "max_position_embeddings",
] as const;

/**
 * Throws ModelConfigError naming the first field that is out of range or inconsistent, or an
 * architecture (or quantization) the engine does not serve, listing those it does.
 */
export function checkModelConfig(config: unknown): void {
  if (config === null || typeof config !== "object" || Array.isArray(config)) throw new ModelConfigError("", "config.json must hold a JSON object");
  let raw = config as Record<string, unknown>;
  checkServed(raw);
  checkQuantization(raw.quantization_config);
  // Gemma 3's multimodal checkpoints keep their language model's fields in text_config
  if (raw.model_type === "gemma3" && raw.text_config !== null && typeof raw.text_config === "object") raw = raw.text_config as Record<string, unknown>;
  const ints: Partial<Record<(typeof POSITIVE_INTEGERS)[number], number>> = {};
  for (const field of POSITIVE_INTEGERS) ints[field] = positiveInteger(raw, field);

  const { hidden_size: hidden, num_attention_heads: heads, num_key_value_heads: kvHeads, head_dim: headDim } = ints;
  if (heads !== undefined && kvHeads !== undefined && heads % kvHeads !== 0) {
    throw new ModelConfigError("num_key_value_heads", `num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads})`);
  }
  if (headDim === undefined && hidden !== undefined && heads !== undefined && hidden % heads !== 0) {
    throw new ModelConfigError("hidden_size", `hidden_size (${hidden}) must be divisible by num_attention_heads (${heads}) when head_dim is not given`);
  }
  const effectiveHeadDim = headDim ?? (hidden !== undefined && heads !== undefined ? hidden / heads : undefined);
  if (effectiveHeadDim !== undefined && usesRotary(raw) && effectiveHeadDim % 2 !== 0) {
    const field = headDim === undefined ? "hidden_size" : "head_dim";
    throw new ModelConfigError(field, `head_dim (${effectiveHeadDim}) must be even: rotary embeddings rotate pairs of the head's dimensions`);
  }

  positiveNumber(raw, "rms_norm_eps");
  positiveNumber(raw, "rope_theta");
  const rope = raw.rope_parameters ?? raw.rope_scaling;
  if (rope !== undefined && rope !== null && typeof rope === "object" && !Array.isArray(rope)) {
    const params = rope as Record<string, unknown>;
    const prefix = raw.rope_parameters !== undefined && raw.rope_parameters !== null ? "rope_parameters" : "rope_scaling";
    positiveNumber(params, "rope_theta", prefix);
    positiveNumber(params, "factor", prefix);
  }
  if (raw.sliding_window !== undefined && raw.sliding_window !== null && raw.sliding_window !== false) positiveInteger(raw, "sliding_window");

  const vocab = ints.vocab_size;
  for (const field of ["eos_token_id", "bos_token_id"]) {
    const value = raw[field];
    if (value === undefined || value === null) continue;
    const ids = Array.isArray(value) ? value : [value];
    for (const id of ids) {
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
        throw new ModelConfigError(field, `${field} must be a token id (a non-negative integer) or a list of them, got ${show(value)}`);
      }
      if (vocab !== undefined && id >= vocab) throw new ModelConfigError(field, `${field} ${id} is outside the vocabulary (vocab_size ${vocab})`);
    }
  }
}

function usesRotary(raw: Record<string, unknown>): boolean {
  const archs = Array.isArray(raw.architectures) ? raw.architectures : [];
  return archs.some((a) => typeof a === "string" && a in SERVED_ARCHITECTURES) || (archs.length === 0 && SERVED_MODEL_TYPES.has(raw.model_type as string));
}

/** Refuses an architecture (or, without one, a model_type) the engine does not serve. */
function checkServed(raw: Record<string, unknown>): void {
  const served = Object.keys(SERVED_ARCHITECTURES).join(", ");
  const archs = raw.architectures;
  if (archs !== undefined && archs !== null) {
    if (!Array.isArray(archs) || archs.some((a) => typeof a !== "string")) throw new ModelConfigError("architectures", `architectures must be a list of names, got ${show(archs)}`);
    if (archs.length > 0 && !archs.some((a) => a in SERVED_ARCHITECTURES)) {
      throw new ModelConfigError("architectures", `architecture ${archs.join(", ")} is not served by the thaw engine (it serves ${served})`);
    }
    if (archs.length > 0) return;
  }
  const type = raw.model_type;
  if (type !== undefined && type !== null && !SERVED_MODEL_TYPES.has(type as string)) {
    throw new ModelConfigError("model_type", `model_type ${show(type)} is not served by the thaw engine (it serves ${served})`);
  }
}

/** Refuses a quantization the engine cannot serve (only FP8 e4m3 weights with their scales). */
function checkQuantization(q: unknown): void {
  if (q === undefined || q === null) return;
  if (typeof q !== "object" || Array.isArray(q)) throw new ModelConfigError("quantization_config", "quantization_config must be an object");
  const method = (q as Record<string, unknown>).quant_method;
  if (typeof method !== "string" || !SERVED_QUANTIZATIONS.includes(method)) {
    throw new ModelConfigError("quantization_config.quant_method", `quantization ${show(method)} is not served by the thaw engine (it serves ${SERVED_QUANTIZATIONS.join(", ")} with float8 e4m3 weights)`);
  }
  const spec = quantizationOf(q as Record<string, unknown>);
  if (typeof spec === "string") throw new ModelConfigError("quantization_config", spec);
}

/** What a served quantization_config says: method, weight scale granularity, block shape. */
export interface QuantizationSpec {
  method: string;
  /** "block" when the config names a block shape; otherwise "tensor" or "channel" as declared, or "" when the tensors tell. */
  granularity: "tensor" | "channel" | "block" | "";
  blockSize: number[];
}

/** The quantization a config declares, or a sentence saying why it is not served. */
export function quantizationOf(q: Record<string, unknown>): QuantizationSpec | string {
  const method = q.quant_method as string;
  if (method === "fp8") {
    if (q.fmt !== undefined && q.fmt !== "e4m3") return `fp8 format ${show(q.fmt)} is not served (only e4m3)`;
    const block = q.weight_block_size;
    if (block === undefined || block === null) return { method, granularity: "", blockSize: [] };
    if (!Array.isArray(block) || block.length !== 2 || !block.every((b) => Number.isSafeInteger(b) && (b as number) > 0)) return `weight_block_size must be two positive integers, got ${show(block)}`;
    return { method, granularity: "block", blockSize: block as number[] };
  }
  const groups = q.config_groups;
  if (groups === null || typeof groups !== "object") return "compressed-tensors needs config_groups";
  let granularity: QuantizationSpec["granularity"] = "";
  let blockSize: number[] = [];
  for (const [name, group] of Object.entries(groups as Record<string, unknown>)) {
    const w = (group as { weights?: Record<string, unknown> } | null)?.weights;
    if (w === undefined || w === null || w.num_bits !== 8 || w.type !== "float") return `compressed-tensors group ${name}: only 8-bit float (FP8) weights are served, got ${show(w)}`;
    if (w.strategy !== "tensor" && w.strategy !== "channel" && w.strategy !== "block") return `compressed-tensors group ${name}: weight strategy ${show(w.strategy)} is not served (tensor, channel, block)`;
    granularity = w.strategy;
    if (w.strategy === "block") blockSize = Array.isArray(w.block_structure) ? (w.block_structure as number[]) : [];
  }
  return { method, granularity, blockSize };
}

function positiveInteger(raw: Record<string, unknown>, field: string): number | undefined {
  const value = raw[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw new ModelConfigError(field, `${field} must be a positive integer, got ${show(value)}`);
  }
  return value;
}

function positiveNumber(raw: Record<string, unknown>, field: string, prefix = ""): void {
  const value = raw[field];
  if (value === undefined || value === null) return;
  const name = prefix === "" ? field : `${prefix}.${field}`;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) throw new ModelConfigError(name, `${name} must be a positive number, got ${show(value)}`);
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
