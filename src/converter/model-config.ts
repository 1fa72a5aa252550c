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

/** Model types whose attention applies rotary embeddings to the whole head (the thaw engine's). */
const ROTARY_MODEL_TYPES = new Set(["llama", "mistral", "qwen2"]);
const ROTARY_ARCHITECTURES = new Set(["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]);

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

/** Throws ModelConfigError naming the first field that is out of range or inconsistent. */
export function checkModelConfig(config: unknown): void {
  if (config === null || typeof config !== "object" || Array.isArray(config)) throw new ModelConfigError("", "config.json must hold a JSON object");
  const raw = config as Record<string, unknown>;
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
  return archs.some((a) => ROTARY_ARCHITECTURES.has(a as string)) || (archs.length === 0 && ROTARY_MODEL_TYPES.has(raw.model_type as string));
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
