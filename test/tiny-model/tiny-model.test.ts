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
