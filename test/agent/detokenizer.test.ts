// Incremental detokenisation with the tiny model's byte-level tokenizer: multi-byte characters
// split across tokens are held back until complete, and nothing is lost or duplicated.
import test from "ava";
import { tinyModelFiles } from "../../src/tiny-model/tiny-model.js";
import { ModelText } from "../../src/agent/model-text.js";
import { IncrementalDetokenizer, type TokenDecoder } from "../../src/agent/detokenizer.js";

const files = tinyModelFiles("llama");
const text = new ModelText({
  tokenizerJson: files.get("tokenizer.json"),
  tokenizerConfigJson: files.get("tokenizer_config.json"),
  generationConfigJson: files.get("generation_config.json"),
  configJson: files.get("config.json"),
});

/** Token ids of the tiny model for `s`: one token per UTF-8 byte. */
const bytesOf = (s: string): number[] => [...Buffer.from(s, "utf8")];

test("multi-byte characters split across tokens are emitted whole, once complete", (t) => {
  const detok = new IncrementalDetokenizer(text, [], false);
  const deltas = bytesOf("a中é😀b").map((id) => detok.push(id));
  // 中 is 3 bytes, é 2, 😀 4: the deltas before the last byte of each are empty.
  t.deepEqual(deltas, ["a", "", "", "中", "", "é", "", "", "", "😀", "b"]);
  t.is(detok.flush(), "");
});

test("no delta ever contains a replacement character for a valid stream", (t) => {
  const sample = "Grüße, 世界! Ünïcödé ✓ 🎉🎉 done";
  const detok = new IncrementalDetokenizer(text, bytesOf("prompt: "), false);
  let out = "";
  for (const id of bytesOf(sample)) {
    const d = detok.push(id);
    t.false(d.includes("\uFFFD"), `delta ${JSON.stringify(d)}`);
    out += d;
  }
  out += detok.flush();
  t.is(out, sample);
});

test("an incomplete character at the end is flushed as U+FFFD", (t) => {
  const detok = new IncrementalDetokenizer(text, [], false);
  t.is(detok.push(104), "h");
  t.is(detok.push(0xe4), "");
  t.is(detok.push(0xb8), "");
  t.is(detok.flush(), "\uFFFD");
});

test("special tokens are skipped or kept as asked", (t) => {
  const skip = new IncrementalDetokenizer(text, [], true);
  const keep = new IncrementalDetokenizer(text, [], false);
  const ids = [...bytesOf("hi"), 260, ...bytesOf("!")];
  t.is(ids.map((id) => skip.push(id)).join("") + skip.flush(), "hi!");
  t.is(ids.map((id) => keep.push(id)).join("") + keep.flush(), "hi<|eot_id|>!");
});

test("the prompt's last tokens are context only, never output", (t) => {
  const detok = new IncrementalDetokenizer(text, bytesOf("中文 prompt \xe4"), false);
  t.is(bytesOf("ok").map((id) => detok.push(id)).join(""), "ok");
});

test("a SentencePiece-like decoder that drops a leading space keeps spaces through the window", (t) => {
  // Pieces "▁Hello", "▁world": decoding a list strips the first piece's leading space, as Llama 2 does.
  const pieces = ["▁Hello", "▁world", "!"];
  const decoder: TokenDecoder = {
    decode: (ids) => ids.map((id) => pieces[id]).join("").replaceAll("▁", " ").replace(/^ /, ""),
  };
  const detok = new IncrementalDetokenizer(decoder, [0], false);
  t.deepEqual([1, 2].map((id) => detok.push(id)), [" world", "!"]);
});
