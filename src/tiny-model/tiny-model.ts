// `thaw make-tiny-model`: deterministic random-weight models in Hugging Face layout, one per
// architecture family the engine serves, small enough for CPU tests (< 4 MB) and byte-identical on
// every machine, so reference outputs computed once with transformers can be committed as fixtures.
// Weights come from a 32-bit PRNG through plain arithmetic only (no Math.log/cos, whose last bits
// may differ between engines). Names, shapes and config fields follow the checkpoints the Hub
// publishes for each family (fused qkv for Phi-3, per-expert tensors for MoE models, FP8 weights
// with their scales for quantized ones).
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { encodeSafetensors, type F32Tensor, type SafetensorsTensor } from "./safetensors-file.js";
import { BOS_ID, EOS_IDS, tokenizerConfigJson, tokenizerJson } from "./byte-tokenizer.js";
import { E4M3_MAX, encodeE4M3 } from "./float8.js";
import { mulberry32 as prng } from "../shared/prng.js";

export const TINY_ARCHITECTURES = [
  "llama",
  "mistral",
  "qwen2",
  "mistral-sliding",
  "qwen2-sliding",
  "qwen3",
  "qwen3-moe",
  "mixtral",
  "gemma2",
  "gemma3",
  "phi3",
  "qwen3-fp8",
  "llama-fp8",
] as const;
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

/** Sliding window of the tiny sliding-window models: shorter than the longest test prompt (301 tokens). */
const TINY_WINDOW = 48;
/** FP8 block size of the tiny block-quantized model (the Hub's models use 128 × 128). */
const FP8_BLOCK = 32;

const COMMON = {
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

const MISTRAL = { architectures: ["MistralForCausalLM"], model_type: "mistral", ...COMMON, rope_theta: 1000000.0, sliding_window: null, tie_word_embeddings: false };
const QWEN2 = {
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  ...COMMON,
  rope_theta: 1000000.0,
  use_sliding_window: false,
  sliding_window: null,
  max_window_layers: SHAPE.layers,
  tie_word_embeddings: true,
};
const QWEN3 = {
  architectures: ["Qwen3ForCausalLM"],
  model_type: "qwen3",
  ...COMMON,
  rms_norm_eps: 1e-6,
  attention_bias: false,
  rope_theta: 1000000.0,
  // Qwen3's recipe for long context: YaRN over the native window
  rope_scaling: { rope_type: "yarn", factor: 4.0, original_max_position_embeddings: 512 },
  use_sliding_window: false,
  sliding_window: null,
  max_window_layers: SHAPE.layers,
  tie_word_embeddings: false,
};
const LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

function configFor(arch: TinyArchitecture): Record<string, unknown> {
  switch (arch) {
    case "llama":
      return {
        architectures: ["LlamaForCausalLM"],
        model_type: "llama",
        ...COMMON,
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
      return MISTRAL;
    case "qwen2":
      return QWEN2;
    case "mistral-sliding":
      return { ...MISTRAL, sliding_window: TINY_WINDOW };
    case "qwen2-sliding":
      // Qwen2's rule: layers from max_window_layers on use the window
      return { ...QWEN2, use_sliding_window: true, sliding_window: TINY_WINDOW, max_window_layers: 2 };
    case "qwen3":
      return QWEN3;
    case "qwen3-moe":
      // transformers >= 5 style: rope_parameters instead of rope_theta/rope_scaling
      return {
        architectures: ["Qwen3MoeForCausalLM"],
        model_type: "qwen3_moe",
        ...COMMON,
        rms_norm_eps: 1e-6,
        attention_bias: false,
        rope_parameters: { rope_type: "default", rope_theta: 1000000.0 },
        num_experts: 8,
        num_experts_per_tok: 2,
        moe_intermediate_size: 32,
        norm_topk_prob: true,
        decoder_sparse_step: 1,
        mlp_only_layers: [0],
        router_aux_loss_coef: 0.001,
        output_router_logits: false,
        use_sliding_window: false,
        sliding_window: null,
        max_window_layers: SHAPE.layers,
        tie_word_embeddings: false,
      };
    case "mixtral":
      return {
        architectures: ["MixtralForCausalLM"],
        model_type: "mixtral",
        ...COMMON,
        intermediate_size: 64,
        rope_theta: 1000000.0,
        sliding_window: null,
        num_local_experts: 4,
        num_experts_per_tok: 2,
        router_aux_loss_coef: 0.02,
        output_router_logits: false,
        tie_word_embeddings: false,
      };
    case "gemma2":
      return {
        architectures: ["Gemma2ForCausalLM"],
        model_type: "gemma2",
        ...COMMON,
        hidden_act: "gelu_pytorch_tanh",
        hidden_activation: "gelu_pytorch_tanh",
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        attention_bias: false,
        query_pre_attn_scalar: 32,
        sliding_window: TINY_WINDOW,
        // small caps, so that soft-capping changes the tiny model's scores and logits
        attn_logit_softcapping: 2.5,
        final_logit_softcapping: 3.5,
        cache_implementation: "hybrid",
        tie_word_embeddings: true,
      };
    case "gemma3":
      return {
        architectures: ["Gemma3ForCausalLM"],
        model_type: "gemma3_text",
        ...COMMON,
        hidden_act: "gelu_pytorch_tanh",
        hidden_activation: "gelu_pytorch_tanh",
        rms_norm_eps: 1e-6,
        rope_theta: 1000000.0,
        rope_local_base_freq: 10000.0,
        rope_scaling: { rope_type: "linear", factor: 8.0 },
        attention_bias: false,
        query_pre_attn_scalar: 32,
        sliding_window: TINY_WINDOW,
        sliding_window_pattern: 2,
        layer_types: Array.from({ length: SHAPE.layers }, (_, i) => ((i + 1) % 2 ? "sliding_attention" : "full_attention")),
        attn_logit_softcapping: null,
        final_logit_softcapping: null,
        cache_implementation: "hybrid",
        tie_word_embeddings: true,
      };
    case "phi3": {
      const rotaryHalf = (SHAPE.headDim * 0.5) / 2;
      const { head_dim: _unused, ...common } = COMMON;
      return {
        architectures: ["Phi3ForCausalLM"],
        model_type: "phi3",
        ...common,
        max_position_embeddings: SHAPE.maxPositions,
        original_max_position_embeddings: 64,
        partial_rotary_factor: 0.5,
        rope_theta: 10000.0,
        rope_scaling: {
          type: "longrope",
          short_factor: Array.from({ length: rotaryHalf }, (_, i) => 1 + i / 40),
          long_factor: Array.from({ length: rotaryHalf }, (_, i) => 1 + i * 1.5),
        },
        sliding_window: null,
        attention_bias: false,
        pad_token_id: 257,
        tie_word_embeddings: false,
      };
    }
    case "qwen3-fp8":
      return {
        ...QWEN3,
        quantization_config: { quant_method: "fp8", fmt: "e4m3", activation_scheme: "dynamic", weight_block_size: [FP8_BLOCK, FP8_BLOCK] },
      };
    case "llama-fp8":
      // compressed-tensors FP8 "dynamic" (as llm-compressor writes it): per-channel weight scales
      return {
        ...configFor("llama"),
        quantization_config: {
          quant_method: "compressed-tensors",
          format: "float-quantized",
          quantization_status: "compressed",
          config_groups: {
            group_0: {
              targets: ["Linear"],
              weights: { num_bits: 8, type: "float", strategy: "channel", symmetric: true, dynamic: false },
              input_activations: { num_bits: 8, type: "float", strategy: "token", symmetric: true, dynamic: true },
            },
          },
          ignore: ["lm_head"],
        },
      };
  }
}

/** Draws tensors from one seed, in the order they are asked for. */
class Draw {
  private readonly random: () => number;

  constructor(seed: number) {
    this.random = prng(seed);
  }

  uniform(shape: number[], scale: number): Float32Array {
    const n = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.fround((this.random() * 2 - 1) * scale);
    return out;
  }

  nearOne(n: number): Float32Array {
    const out = this.uniform([n], 0.1);
    for (let i = 0; i < n; i++) out[i] = Math.fround(1 + out[i]);
    return out;
  }
}

/** The original three (llama, mistral, qwen2): their draw order is pinned by committed fixtures. */
function llamaTensors(arch: "llama" | "mistral" | "qwen2"): F32Tensor[] {
  const seed = { llama: 0x7ea1, mistral: 0x3157, qwen2: 0x9a2e }[arch];
  const d = new Draw(seed);
  const { vocabSize: V, hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim } = SHAPE;
  const q = heads * headDim;
  const kv = kvHeads * headDim;
  const w = 0.1; // uniform in [-0.1, 0.1]: std ≈ 0.058, enough to keep greedy choices well apart
  const tensors: F32Tensor[] = [{ name: "model.embed_tokens.weight", shape: [V, H], data: d.uniform([V, H], w) }];
  for (let l = 0; l < SHAPE.layers; l++) {
    const p = `model.layers.${l}`;
    tensors.push(
      { name: `${p}.input_layernorm.weight`, shape: [H], data: d.nearOne(H) },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, H], data: d.uniform([q, H], w) },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, H], data: d.uniform([kv, H], w) },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, H], data: d.uniform([kv, H], w) },
    );
    if (arch === "qwen2") {
      tensors.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [q], data: d.uniform([q], w) },
        { name: `${p}.self_attn.k_proj.bias`, shape: [kv], data: d.uniform([kv], w) },
        { name: `${p}.self_attn.v_proj.bias`, shape: [kv], data: d.uniform([kv], w) },
      );
    }
    tensors.push(
      { name: `${p}.self_attn.o_proj.weight`, shape: [H, q], data: d.uniform([H, q], w) },
      { name: `${p}.post_attention_layernorm.weight`, shape: [H], data: d.nearOne(H) },
      { name: `${p}.mlp.gate_proj.weight`, shape: [I, H], data: d.uniform([I, H], w) },
      { name: `${p}.mlp.up_proj.weight`, shape: [I, H], data: d.uniform([I, H], w) },
      { name: `${p}.mlp.down_proj.weight`, shape: [H, I], data: d.uniform([H, I], w) },
    );
  }
  tensors.push({ name: "model.norm.weight", shape: [H], data: d.nearOne(H) });
  // Tied models (qwen2 here) save no lm_head, as transformers does.
  if (arch !== "qwen2") tensors.push({ name: "lm_head.weight", shape: [V, H], data: d.uniform([V, H], w) });
  return tensors;
}

const SEEDS: Record<string, number> = {
  "mistral-sliding": 0x5e1d,
  "qwen2-sliding": 0x2b5d,
  qwen3: 0x03e3,
  "qwen3-moe": 0x30e5,
  mixtral: 0x6a17,
  gemma2: 0x6e22,
  gemma3: 0x6e33,
  phi3: 0xf3f3,
};

/** Every other family, in the Hub's tensor names. */
function familyTensors(arch: TinyArchitecture): F32Tensor[] {
  const cfg = configFor(arch) as Record<string, unknown>;
  const d = new Draw(SEEDS[arch]);
  const { vocabSize: V, hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim } = SHAPE;
  const q = heads * headDim;
  const kv = kvHeads * headDim;
  const w = 0.1;
  const type = cfg.model_type as string;
  const gemma = type === "gemma2" || type === "gemma3_text";
  // Gemma's RMSNorm multiplies by (1 + weight): its weights sit near 0, not near 1
  const norm = (n: number): Float32Array => (gemma ? d.uniform([n], 0.1) : d.nearOne(n));
  const t = (name: string, shape: number[], data?: Float32Array): F32Tensor => ({ name, shape, data: data ?? d.uniform(shape, w) });
  const tensors: F32Tensor[] = [t("model.embed_tokens.weight", [V, H])];
  const mlpOnly = new Set((cfg.mlp_only_layers as number[] | undefined) ?? []);
  for (let l = 0; l < SHAPE.layers; l++) {
    const p = `model.layers.${l}`;
    tensors.push(t(`${p}.input_layernorm.weight`, [H], norm(H)));
    if (type === "phi3") {
      tensors.push(t(`${p}.self_attn.qkv_proj.weight`, [q + 2 * kv, H]));
    } else {
      tensors.push(t(`${p}.self_attn.q_proj.weight`, [q, H]), t(`${p}.self_attn.k_proj.weight`, [kv, H]), t(`${p}.self_attn.v_proj.weight`, [kv, H]));
    }
    if (type === "qwen2") {
      tensors.push(t(`${p}.self_attn.q_proj.bias`, [q]), t(`${p}.self_attn.k_proj.bias`, [kv]), t(`${p}.self_attn.v_proj.bias`, [kv]));
    }
    if (type === "qwen3" || type === "qwen3_moe" || type === "gemma3_text") {
      tensors.push(t(`${p}.self_attn.q_norm.weight`, [headDim], norm(headDim)), t(`${p}.self_attn.k_norm.weight`, [headDim], norm(headDim)));
    }
    tensors.push(t(`${p}.self_attn.o_proj.weight`, [H, q]), t(`${p}.post_attention_layernorm.weight`, [H], norm(H)));
    if (gemma) tensors.push(t(`${p}.pre_feedforward_layernorm.weight`, [H], norm(H)), t(`${p}.post_feedforward_layernorm.weight`, [H], norm(H)));
    if (type === "qwen3_moe" && !mlpOnly.has(l)) {
      const E = cfg.num_experts as number;
      const M = cfg.moe_intermediate_size as number;
      tensors.push(t(`${p}.mlp.gate.weight`, [E, H]));
      for (let e = 0; e < E; e++) {
        const x = `${p}.mlp.experts.${e}`;
        tensors.push(t(`${x}.gate_proj.weight`, [M, H]), t(`${x}.up_proj.weight`, [M, H]), t(`${x}.down_proj.weight`, [H, M]));
      }
    } else if (type === "mixtral") {
      const E = cfg.num_local_experts as number;
      const M = cfg.intermediate_size as number;
      tensors.push(t(`${p}.block_sparse_moe.gate.weight`, [E, H]));
      for (let e = 0; e < E; e++) {
        const x = `${p}.block_sparse_moe.experts.${e}`;
        tensors.push(t(`${x}.w1.weight`, [M, H]), t(`${x}.w2.weight`, [H, M]), t(`${x}.w3.weight`, [M, H]));
      }
    } else if (type === "phi3") {
      tensors.push(t(`${p}.mlp.gate_up_proj.weight`, [2 * I, H]), t(`${p}.mlp.down_proj.weight`, [H, I]));
    } else {
      tensors.push(t(`${p}.mlp.gate_proj.weight`, [I, H]), t(`${p}.mlp.up_proj.weight`, [I, H]), t(`${p}.mlp.down_proj.weight`, [H, I]));
    }
  }
  tensors.push(t("model.norm.weight", [H], norm(H)));
  if (!cfg.tie_word_embeddings) tensors.push(t("lm_head.weight", [V, H]));
  return tensors;
}

/** FP8 e4m3 weights and float32 scales for every Linear inside the decoder layers. */
function quantize(tensors: F32Tensor[], scheme: "block" | "channel"): SafetensorsTensor[] {
  const out: SafetensorsTensor[] = [];
  for (const x of tensors) {
    const m = /^model\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.weight$/.exec(x.name);
    if (m === null || !LINEAR.includes(m[2]) || x.shape.length !== 2) {
      out.push(x);
      continue;
    }
    const [rows, cols] = x.shape;
    const [br, bc] = scheme === "block" ? [FP8_BLOCK, FP8_BLOCK] : [1, cols];
    const gr = Math.ceil(rows / br);
    const gc = Math.ceil(cols / bc);
    const scales = new Float32Array(gr * gc);
    const bytes = new Uint8Array(rows * cols);
    for (let i = 0; i < gr; i++) {
      for (let j = 0; j < gc; j++) {
        let amax = 0;
        for (let r = i * br; r < Math.min(rows, (i + 1) * br); r++) {
          for (let c = j * bc; c < Math.min(cols, (j + 1) * bc); c++) amax = Math.max(amax, Math.abs(x.data[r * cols + c]));
        }
        const scale = Math.fround(amax / E4M3_MAX || 1);
        scales[i * gc + j] = scale;
        for (let r = i * br; r < Math.min(rows, (i + 1) * br); r++) {
          for (let c = j * bc; c < Math.min(cols, (j + 1) * bc); c++) bytes[r * cols + c] = encodeE4M3(x.data[r * cols + c] / scale);
        }
      }
    }
    out.push({ name: x.name, shape: x.shape, dtype: "F8_E4M3", data: bytes });
    // transformers' "fp8" names the dequantization multiplier weight_scale_inv; compressed-tensors weight_scale
    if (scheme === "block") out.push({ name: `${x.name}_scale_inv`, shape: [gr, gc], data: scales });
    else out.push({ name: `${x.name}_scale`, shape: [rows, 1], data: scales });
  }
  return out;
}

function tensorsFor(arch: TinyArchitecture): SafetensorsTensor[] {
  switch (arch) {
    case "llama":
    case "mistral":
    case "qwen2":
      return llamaTensors(arch);
    case "qwen3-fp8":
      return quantize(familyTensors("qwen3"), "block");
    case "llama-fp8":
      return quantize(llamaTensors("llama"), "channel");
    default:
      return familyTensors(arch);
  }
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
