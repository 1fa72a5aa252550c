// `thaw make-tiny-model`: a deterministic random-weight model in Hugging Face layout, small enough
// for CPU tests (≈3.5 MB) and byte-identical on every machine, so reference outputs computed once
// with transformers can be committed as fixtures. Weights come from a 32-bit PRNG through plain
// arithmetic only (no Math.log/cos, whose last bits may differ between engines).
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { encodeSafetensors, type F32Tensor } from "./safetensors-file.js";
import { BOS_ID, EOS_IDS, tokenizerConfigJson, tokenizerJson } from "./byte-tokenizer.js";

export const TINY_ARCHITECTURES = ["llama", "mistral", "qwen2"] as const;
export type TinyArchitecture = (typeof TINY_ARCHITECTURES)[number];

const SHAPE = {
  vocabSize: 512,
  hiddenSize: 128,
  intermediateSize: 352,
  layers: 4,
  heads: 4,
  kvHeads: 2,
  headDim: 32,
  maxPositions: 2048,
};

/** mulberry32: tiny, fast, and defined entirely in 32-bit integer arithmetic. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function configFor(arch: TinyArchitecture): Record<string, unknown> {
  const common = {
    vocab_size: SHAPE.vocabSize,
    hidden_size: SHAPE.hiddenSize,
    intermediate_size: SHAPE.intermediateSize,
    num_hidden_layers: SHAPE.layers,
    num_attention_heads: SHAPE.heads,
    num_key_value_heads: SHAPE.kvHeads,
    head_dim: SHAPE.headDim,
    hidden_act: "silu",
    max_position_embeddings: SHAPE.maxPositions,
    rms_norm_eps: 1e-5,
    initializer_range: 0.02,
    attention_dropout: 0.0,
    use_cache: true,
    torch_dtype: "float32",
    bos_token_id: BOS_ID,
    eos_token_id: EOS_IDS,
  };
  switch (arch) {
    case "llama":
      return {
        architectures: ["LlamaForCausalLM"],
        model_type: "llama",
        ...common,
        rope_theta: 500000.0,
        rope_scaling: {
          rope_type: "llama3",
          factor: 8.0,
          low_freq_factor: 1.0,
          high_freq_factor: 4.0,
          original_max_position_embeddings: 256,
        },
        attention_bias: false,
        mlp_bias: false,
        pretraining_tp: 1,
        tie_word_embeddings: false,
      };
    case "mistral":
      return {
        architectures: ["MistralForCausalLM"],
        model_type: "mistral",
        ...common,
        rope_theta: 1000000.0,
        sliding_window: null,
        tie_word_embeddings: false,
      };
    case "qwen2":
      return {
        architectures: ["Qwen2ForCausalLM"],
        model_type: "qwen2",
        ...common,
        rope_theta: 1000000.0,
        use_sliding_window: false,
        sliding_window: null,
        max_window_layers: SHAPE.layers,
        tie_word_embeddings: true,
      };
  }
}

function tensorsFor(arch: TinyArchitecture): F32Tensor[] {
  const seed = { llama: 0x7ea1, mistral: 0x3157, qwen2: 0x9a2e }[arch];
  const random = prng(seed);
  const uniform = (shape: number[], scale: number): Float32Array => {
    const n = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.fround((random() * 2 - 1) * scale);
    return out;
  };
  const nearOne = (n: number): Float32Array => {
    const out = uniform([n], 0.1);
    for (let i = 0; i < n; i++) out[i] = Math.fround(1 + out[i]);
    return out;
  };
  const { vocabSize: V, hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim } = SHAPE;
  const q = heads * headDim;
  const kv = kvHeads * headDim;
  const w = 0.1; // uniform in [-0.1, 0.1]: std ≈ 0.058, enough to keep greedy choices well apart
  const tensors: F32Tensor[] = [{ name: "model.embed_tokens.weight", shape: [V, H], data: uniform([V, H], w) }];
  for (let l = 0; l < SHAPE.layers; l++) {
    const p = `model.layers.${l}`;
    tensors.push(
      { name: `${p}.input_layernorm.weight`, shape: [H], data: nearOne(H) },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, H], data: uniform([q, H], w) },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, H], data: uniform([kv, H], w) },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, H], data: uniform([kv, H], w) },
    );
    if (arch === "qwen2") {
      tensors.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [q], data: uniform([q], w) },
        { name: `${p}.self_attn.k_proj.bias`, shape: [kv], data: uniform([kv], w) },
        { name: `${p}.self_attn.v_proj.bias`, shape: [kv], data: uniform([kv], w) },
      );
    }
    tensors.push(
      { name: `${p}.self_attn.o_proj.weight`, shape: [H, q], data: uniform([H, q], w) },
      { name: `${p}.post_attention_layernorm.weight`, shape: [H], data: nearOne(H) },
      { name: `${p}.mlp.gate_proj.weight`, shape: [I, H], data: uniform([I, H], w) },
      { name: `${p}.mlp.up_proj.weight`, shape: [I, H], data: uniform([I, H], w) },
      { name: `${p}.mlp.down_proj.weight`, shape: [H, I], data: uniform([H, I], w) },
    );
  }
  tensors.push({ name: "model.norm.weight", shape: [H], data: nearOne(H) });
  // Tied models (qwen2 here) save no lm_head, as transformers does.
  if (arch !== "qwen2") tensors.push({ name: "lm_head.weight", shape: [V, H], data: uniform([V, H], w) });
  return tensors;
}

/** The files of the tiny model, by name. */
export function tinyModelFiles(arch: TinyArchitecture = "llama"): Map<string, Buffer> {
  const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value, null, 2) + "\n");
  return new Map([
    ["config.json", json(configFor(arch))],
    ["generation_config.json", json({ bos_token_id: BOS_ID, eos_token_id: EOS_IDS, do_sample: false })],
    ["model.safetensors", encodeSafetensors(tensorsFor(arch), { format: "pt" })],
    ["tokenizer.json", json(tokenizerJson())],
    ["tokenizer_config.json", json(tokenizerConfigJson(SHAPE.maxPositions))],
    ["special_tokens_map.json", json({ bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" })],
  ]);
}

/** Writes the tiny model into `dir` (created if needed). */
export async function makeTinyModel(dir: string, arch: TinyArchitecture = "llama"): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, bytes] of tinyModelFiles(arch)) await writeFile(path.join(dir, name), bytes);
}
