import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { checkFileName, checkModelKey, modelKey, parseModelKey } from "../../src/checkpoint/model-key.js";

function throwsInvalid(t: import("ava").ExecutionContext, fn: () => unknown, what: string): void {
  const err = t.throws(fn, { instanceOf: ConnectError }, what);
  t.is(err?.code, Code.InvalidArgument, what);
}

test("model ids and revisions become path-safe keys and parse back", (t) => {
  t.is(modelKey("meta-llama/Llama-3.1-8B", "main"), "meta-llama--Llama-3.1-8B@main");
  t.is(modelKey("tiny"), "tiny@main");
  t.is(modelKey("Qwen/Qwen2.5-0.5B-Instruct", "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"), "Qwen--Qwen2.5-0.5B-Instruct@a1b2c3d4e5f60718293a4b5c6d7e8f9012345678");
  t.deepEqual(parseModelKey("meta-llama--Llama-3.1-8B@v1.0"), { modelId: "meta-llama/Llama-3.1-8B", revision: "v1.0" });
  t.deepEqual(parseModelKey("tiny@main"), { modelId: "tiny", revision: "main" });
  t.notThrows(() => checkModelKey("org--name@main"));
});

test("ids that could leave the store root or collide are rejected", (t) => {
  for (const id of ["", "..", "../x", "a/../b", "/abs", "a/b/c", "a\0b", "a\\b", ".hidden", "a--b/c", "org/na--me", "a b", "a@b", "-x", "x.", "a/", "/"]) {
    throwsInvalid(t, () => modelKey(id, "main"), JSON.stringify(id));
  }
});

test("revisions with separators or dots-only are rejected", (t) => {
  for (const rev of ["..", ".", "refs/pr/1", "a\\b", "a\0", "x@y", "../../etc", " main"]) {
    throwsInvalid(t, () => modelKey("org/name", rev), JSON.stringify(rev));
  }
});

test("keys that modelKey() would not produce are rejected", (t) => {
  for (const key of ["", "@main", "org--name", "org--name@", "a@b@c", "../x@main", "org/name@main", "a--b--c@main", ".tmp", "x@main/..", "x@.."]) {
    throwsInvalid(t, () => checkModelKey(key), JSON.stringify(key));
  }
});

test("file names must be one plain component", (t) => {
  for (const ok of ["chunk-00000.bin", "config.json", "tokenizer.model", "chat_template.jinja", "model.idx", "vocab.txt", "merges.txt"]) {
    t.notThrows(() => checkFileName(ok), ok);
  }
  for (const bad of ["", ".", "..", "../config.json", "/etc/passwd", "a/b", "a\\b", "a\0b", ".hidden", "a..b", "x".repeat(300), "a b"]) {
    throwsInvalid(t, () => checkFileName(bad), JSON.stringify(bad));
  }
});
