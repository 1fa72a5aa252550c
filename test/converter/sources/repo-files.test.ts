import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { chooseWeightFiles, parseShardIndex, sideFileNames } from "../../../src/converter/sources/repo-files.js";

test("weights: index first, then the single file, then bare shards", (t) => {
  t.deepEqual(chooseWeightFiles(["config.json", "model.safetensors", "model.safetensors.index.json"], "x"), { kind: "indexed", indexFile: "model.safetensors.index.json" });
  t.deepEqual(chooseWeightFiles(["config.json", "model.safetensors", "pytorch_model.bin"], "x"), { kind: "single", files: ["model.safetensors"] });
  t.deepEqual(chooseWeightFiles(["config.json", "model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"], "x"), {
    kind: "shards",
    files: ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
  });
});

test("pickle-only, no weights and no config are FailedPrecondition", (t) => {
  for (const [names, message] of [
    [["config.json", "pytorch_model.bin"], /only pickle weights \(pytorch_model\.bin\)/],
    [["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json"], /only pickle weights/],
    [["config.json", "consolidated.pth"], /only pickle/],
    [["config.json", "model.ckpt"], /only pickle/],
    [["config.json", "tf_model.h5"], /found tf_model\.h5/],
    [["config.json"], /no model\.safetensors/],
    [["model.safetensors"], /has no config\.json/],
  ] as const) {
    const err = t.throws(() => chooseWeightFiles(names, "repo"), { instanceOf: ConnectError });
    t.is(err?.code, Code.FailedPrecondition);
    t.regex(err!.rawMessage, message);
  }
});

test("side files: tokenizer, configs, templates; not weights or code", (t) => {
  t.deepEqual(
    sideFileNames([
      "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
      "vocab.json", "merges.txt", "chat_template.jinja", "qwen.tiktoken", "model.safetensors", "modeling_x.py", "README.md", "pytorch_model.bin",
    ]),
    ["chat_template.jinja", "config.json", "generation_config.json", "merges.txt", "qwen.tiktoken", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json"],
  );
});

test("shard index: files in order; escapes and junk refused", (t) => {
  const enc = (o: unknown) => new TextEncoder().encode(typeof o === "string" ? o : JSON.stringify(o));
  const idx = parseShardIndex(enc({ metadata: { total_size: 3 }, weight_map: { a: "m-2.safetensors", b: "m-1.safetensors", c: "m-2.safetensors" } }), "i");
  t.deepEqual(idx.files, ["m-1.safetensors", "m-2.safetensors"]);
  t.is(idx.weightMap.get("c"), "m-2.safetensors");
  for (const bad of ["{", { weight_map: [] }, { weight_map: {} }, { weight_map: { a: "../x.safetensors" } }, { weight_map: { a: "/abs.safetensors" } }, { weight_map: { a: "sub/x.safetensors" } }, { weight_map: { a: "x.bin" } }, { weight_map: { a: 1 } }]) {
    const err = t.throws(() => parseShardIndex(enc(bad), "i"), { instanceOf: ConnectError }, JSON.stringify(bad));
    t.is(err?.code, Code.InvalidArgument);
  }
});
