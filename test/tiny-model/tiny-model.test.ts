import test from "ava";
import { createHash } from "node:crypto";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { tinyModelFiles, TINY_ARCHITECTURES } from "../../src/tiny-model/tiny-model.js";

// The same bytes on every machine: fixtures computed once with transformers depend on it.
const PINNED_SHA256: Record<string, string> = {
  llama: "2d2b956a792aef7894ecd25d1026a1c5bff3a61755f1e6644001c53a114cba01",
  mistral: "a6fb88fe2d28779224753b3c569d984bd27352d83227347a2133dc337df28a47",
  qwen2: "cefe15e5322bba86d97eadb80e27d5ea3b87209110913596f2949b07e6b5da2c",
  "mistral-sliding": "4d8ca2740869ce52556eab6e306ab945607ed1d3187bf5d2570b29b094914f8f",
  "qwen2-sliding": "0bd203da68a763d0ba0e5f3f09cbcd0440c1ee52c5894f4cad9e729892c22c52",
  qwen3: "591330a946366777eab6c9739e7e2f01984eafa768dae36dc1fb7789a3751dff",
  "qwen3-moe": "3df7b614bd59032646be6d6ba5e11c4b3789d52827fa9f404fcb57bd7363bcaf",
  mixtral: "78b2adb1d6c45957102927f2af98a7eb7d00f85b9d1fc5b6749a7061786609b3",
  gemma2: "adfba72a1905db6ca10760f7ae6cb5049b1253b74268204788000b6da95b5061",
  gemma3: "5a232eebcd5c1fbdbc82f2f249f1b00c7bd9c94131d7352c47d09d859a3410ad",
  phi3: "8f876b64f36067c91e09bd02bf2e921c014bf0f2fae44f524bc4a61ec895b750",
  "qwen3-fp8": "a0d1ae94cabda4e32c8aec04dce78cc674a250ca34296440c97089aa949f0c35",
  "llama-fp8": "a83858c5f2fc550a1da26fe0b0cf3c23905a4ffc22fd2b6575688f685d6097a7",
};

for (const arch of TINY_ARCHITECTURES) {
  test(`${arch} weights are pinned`, (t) => {
    const weights = tinyModelFiles(arch).get("model.safetensors")!;
    t.is(createHash("sha256").update(weights).digest("hex"), PINNED_SHA256[arch]);
    t.true(weights.byteLength < 4 * 1024 * 1024);
  });
}

test("config describes a GQA Llama with llama3 rope scaling", (t) => {
  const config = JSON.parse(tinyModelFiles("llama").get("config.json")!.toString());
  t.deepEqual(config.architectures, ["LlamaForCausalLM"]);
  t.is(config.num_key_value_heads * 2, config.num_attention_heads);
  t.is(config.rope_scaling.rope_type, "llama3");
  const qwen = JSON.parse(tinyModelFiles("qwen2").get("config.json")!.toString());
  t.true(qwen.tie_word_embeddings);
});

test("each family has the Hub's layout: fused Phi-3 projections, per-expert MoE tensors, Gemma's sandwich norms, FP8 scales", (t) => {
  const names = (arch: (typeof TINY_ARCHITECTURES)[number]): Set<string> => {
    const bytes = tinyModelFiles(arch).get("model.safetensors")!;
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString());
    return new Set(Object.keys(header));
  };
  t.true(names("phi3").has("model.layers.0.self_attn.qkv_proj.weight"));
  t.true(names("phi3").has("model.layers.0.mlp.gate_up_proj.weight"));
  t.true(names("qwen3-moe").has("model.layers.1.mlp.experts.7.down_proj.weight"));
  t.true(names("qwen3-moe").has("model.layers.0.mlp.gate_proj.weight")); // mlp_only_layers [0]
  t.true(names("mixtral").has("model.layers.0.block_sparse_moe.experts.3.w2.weight"));
  t.true(names("gemma3").has("model.layers.0.post_feedforward_layernorm.weight"));
  t.true(names("qwen3").has("model.layers.0.self_attn.k_norm.weight"));
  t.true(names("qwen3-fp8").has("model.layers.0.self_attn.q_proj.weight_scale_inv"));
  t.true(names("llama-fp8").has("model.layers.0.mlp.down_proj.weight_scale"));
  const fp8 = tinyModelFiles("qwen3-fp8").get("model.safetensors")!;
  const header = JSON.parse(fp8.subarray(8, 8 + Number(fp8.readBigUInt64LE(0))).toString());
  t.is(header["model.layers.0.self_attn.q_proj.weight"].dtype, "F8_E4M3");
  t.deepEqual(header["model.layers.0.mlp.gate_proj.weight_scale_inv"].shape, [11, 4]); // ceil(352/32) x ceil(128/32)
});

test("tokenizer is byte-level and round-trips any UTF-8 text", (t) => {
  const files = tinyModelFiles("llama");
  const tokenizer = new Tokenizer(
    JSON.parse(files.get("tokenizer.json")!.toString()),
    JSON.parse(files.get("tokenizer_config.json")!.toString()),
  );
  const text = "Héllo, wörld! 🧊 thaw";
  const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
  t.deepEqual(ids, [...Buffer.from(text, "utf8")]);
  t.is(tokenizer.decode(ids), text);
  t.deepEqual(tokenizer.encode("hi").ids, [256, 104, 105]); // BOS added by the post-processor
});

test("chat template renders Llama-3 style turns", (t) => {
  const config = JSON.parse(tinyModelFiles("llama").get("tokenizer_config.json")!.toString());
  const rendered = new Template(config.chat_template).render({
    messages: [{ role: "user", content: " hi " }],
    add_generation_prompt: true,
    bos_token: config.bos_token,
  });
  t.is(
    rendered,
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  );
});
