import test from "ava";
import { checkModelConfig, ModelConfigError, SERVED_ARCHITECTURES } from "../../src/converter/model-config.js";

const llama = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 64,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_hidden_layers: 2,
  intermediate_size: 128,
  vocab_size: 256,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  eos_token_id: 2,
  bos_token_id: 1,
};

function refusal(t: import("ava").ExecutionContext, config: Record<string, unknown>, field: string, message: RegExp): void {
  const err = t.throws(() => checkModelConfig(config), { instanceOf: ModelConfigError });
  t.is(err?.field, field);
  t.regex(err?.message ?? "", message);
}

test("a sound config passes; absent and null fields are not required", (t) => {
  t.notThrows(() => checkModelConfig(llama));
  t.notThrows(() => checkModelConfig({ ...llama, num_key_value_heads: null, head_dim: null, eos_token_id: [2, 3] }));
  t.notThrows(() => checkModelConfig({ architectures: ["LlamaForCausalLM"], hidden_size: 32, vocab_size: 64 }));
  // head_dim given: hidden_size need not be heads × head_dim (Mistral Nemo: 5120, 32 × 128)
  t.notThrows(() => checkModelConfig({ ...llama, hidden_size: 5120, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128 }));
  t.notThrows(() => checkModelConfig({ ...llama, rope_theta: undefined, rope_parameters: { rope_theta: 500000, rope_type: "default" } }));
});

test("head counts: zero, negative, fractional and non-divisors are refused naming the field", (t) => {
  refusal(t, { ...llama, num_key_value_heads: 0 }, "num_key_value_heads", /num_key_value_heads must be a positive integer, got 0/);
  refusal(t, { ...llama, num_attention_heads: 0 }, "num_attention_heads", /positive integer, got 0/);
  refusal(t, { ...llama, num_attention_heads: -4 }, "num_attention_heads", /got -4/);
  refusal(t, { ...llama, num_key_value_heads: 1.5 }, "num_key_value_heads", /got 1\.5/);
  refusal(t, { ...llama, num_key_value_heads: "2" }, "num_key_value_heads", /got "2"/);
  refusal(t, { ...llama, num_key_value_heads: 3 }, "num_key_value_heads", /num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)/);
});

test("sizes: hidden_size divisible by heads, head_dim even for rotary models, positive sizes", (t) => {
  refusal(t, { ...llama, hidden_size: 66 }, "hidden_size", /hidden_size \(66\) must be divisible by num_attention_heads \(4\)/);
  refusal(t, { ...llama, hidden_size: 36 }, "hidden_size", /head_dim \(9\) must be even/);
  refusal(t, { ...llama, head_dim: 7 }, "head_dim", /head_dim \(7\) must be even/);
  refusal(t, { ...llama, head_dim: 0 }, "head_dim", /positive integer/);
  for (const field of ["hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "max_position_embeddings"]) {
    refusal(t, { ...llama, [field]: 0 }, field, new RegExp(`${field} must be a positive integer`));
  }
  refusal(t, { ...llama, vocab_size: 1e300 }, "vocab_size", /positive integer/);
  refusal(t, { ...llama, rms_norm_eps: 0 }, "rms_norm_eps", /positive number/);
  refusal(t, { ...llama, rope_theta: -1 }, "rope_theta", /positive number/);
  refusal(t, { ...llama, rope_scaling: { rope_type: "linear", factor: 0 } }, "rope_scaling.factor", /rope_scaling\.factor must be a positive number/);
  refusal(t, { ...llama, sliding_window: -5 }, "sliding_window", /positive integer/);
});

test("an architecture the engine does not serve is refused, naming those it serves", (t) => {
  const err = t.throws(() => checkModelConfig({ ...llama, architectures: ["GPT2LMHeadModel"] }), { instanceOf: ModelConfigError });
  t.is(err?.field, "architectures");
  t.regex(err?.message ?? "", /GPT2LMHeadModel is not served by the thaw engine \(it serves LlamaForCausalLM, .*Qwen3MoeForCausalLM.*Gemma3ForCausalLM.*Phi3ForCausalLM\)/);
  refusal(t, { model_type: "gpt2", hidden_size: 64 }, "model_type", /model_type "gpt2" is not served/);
  for (const arch of Object.keys(SERVED_ARCHITECTURES)) t.notThrows(() => checkModelConfig({ ...llama, architectures: [arch] }));
});

test("quantizations other than FP8 e4m3 are refused", (t) => {
  t.notThrows(() => checkModelConfig({ ...llama, quantization_config: { quant_method: "fp8", fmt: "e4m3", weight_block_size: [128, 128] } }));
  const ct = { quant_method: "compressed-tensors", config_groups: { g: { weights: { num_bits: 8, type: "float", strategy: "channel" } } } };
  t.notThrows(() => checkModelConfig({ ...llama, quantization_config: ct }));
  refusal(t, { ...llama, quantization_config: { quant_method: "awq", bits: 4 } }, "quantization_config.quant_method", /quantization "awq" is not served/);
  refusal(t, { ...llama, quantization_config: { quant_method: "fp8", fmt: "e5m2" } }, "quantization_config", /only e4m3/);
  const int4 = { quant_method: "compressed-tensors", config_groups: { g: { weights: { num_bits: 4, type: "int", strategy: "group" } } } };
  refusal(t, { ...llama, quantization_config: int4 }, "quantization_config", /only 8-bit float/);
});

test("token ids of eos and bos lie inside the vocabulary", (t) => {
  refusal(t, { ...llama, eos_token_id: 256 }, "eos_token_id", /eos_token_id 256 is outside the vocabulary \(vocab_size 256\)/);
  refusal(t, { ...llama, eos_token_id: [2, 9999] }, "eos_token_id", /9999 is outside/);
  refusal(t, { ...llama, bos_token_id: -1 }, "bos_token_id", /non-negative integer/);
});

test("config.json must be an object", (t) => {
  for (const bad of [null, [], "text", 3]) t.throws(() => checkModelConfig(bad), { instanceOf: ModelConfigError, message: /JSON object/ });
});
