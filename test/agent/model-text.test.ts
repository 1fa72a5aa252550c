// Chat templates, tokenisation and end-of-sequence ids from a model's side files.
import test from "ava";
import { tinyModelFiles } from "../../src/tiny-model/tiny-model.js";
import { ModelText } from "../../src/agent/model-text.js";

const files = tinyModelFiles("llama");
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const text = new ModelText({
  tokenizerJson: files.get("tokenizer.json"),
  tokenizerConfigJson: files.get("tokenizer_config.json"),
  generationConfigJson: files.get("generation_config.json"),
  configJson: files.get("config.json"),
});

test("the chat template renders with bos_token and add_generation_prompt", (t) => {
  const rendered = text.renderChat([{ role: "user", content: " hi " }], true);
  t.is(rendered, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  t.false(text.renderChat([{ role: "user", content: "hi" }], false).endsWith("assistant<|end_header_id|>\n\n"));
});

test("after a template no BOS is added; plain prompts get one", (t) => {
  const ids = text.encode(text.renderChat([{ role: "user", content: "hi" }], true), false);
  t.is(ids[0], 256);
  t.is(ids.filter((id) => id === 256).length, 1);
  t.deepEqual(text.encode("hi", true), [256, 104, 105]);
  t.deepEqual(text.encode("hi", false), [104, 105]);
});

test("eos ids come from generation_config.json, then config.json, then the eos token", (t) => {
  t.deepEqual(text.eosTokenIds, [257, 260]);
  const fromConfig = new ModelText({ tokenizerJson: files.get("tokenizer.json"), configJson: json({ eos_token_id: 7 }) });
  t.deepEqual(fromConfig.eosTokenIds, [7]);
  const fromToken = new ModelText({ tokenizerJson: files.get("tokenizer.json"), tokenizerConfigJson: json({ eos_token: { content: "<|eot_id|>" } }) });
  t.deepEqual(fromToken.eosTokenIds, [260]);
});

test("a request's own template and a list of named templates", (t) => {
  t.is(text.renderChat([{ role: "user", content: "x" }], false, "{{ eos_token }}{{ messages[0].content }}"), "<|eot_id|>x");
  const named = new ModelText({
    tokenizerJson: files.get("tokenizer.json"),
    tokenizerConfigJson: json({ chat_template: [{ name: "tool_use", template: "T" }, { name: "default", template: "D{{ messages|length }}" }] }),
  });
  t.is(named.renderChat([{ role: "user", content: "x" }], true), "D1");
});

test("missing template or tokenizer are FAILED_PRECONDITION", (t) => {
  const bare = new ModelText({});
  t.throws(() => bare.renderChat([{ role: "user", content: "x" }], true), { message: /no chat template/ });
  t.throws(() => bare.encode("x", true), { message: /no tokenizer/ });
  t.false(bare.hasTokenizer);
});

test("token text for logprobs: whole characters as text, partial ones as vLLM's bytes: form", (t) => {
  t.is(text.tokenText(104), "h");
  t.is(text.tokenText(260), "<|eot_id|>");
  t.is(text.tokenText(0xe4), "bytes:\\xe4"); // first byte of a 3-byte character
  const fallback = new ModelText({
    tokenizerJson: json({
      version: "1.0",
      model: { type: "BPE", vocab: { "<0xE2>": 0, a: 1 }, merges: [], byte_fallback: true, unk_token: null },
      decoder: { type: "Sequence", decoders: [{ type: "ByteFallback" }, { type: "Fuse" }] },
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      added_tokens: [],
    }),
  });
  t.is(fallback.tokenText(1), "a");
  t.is(fallback.tokenText(0), "bytes:\\xe2");
});
