// Stop strings: held back while a match is possible, cut before the match (or after it, when asked).
import test from "ava";
import { StopStringMatcher } from "../../src/agent/stop-strings.js";

test("text passes through when there are no stop strings", (t) => {
  const m = new StopStringMatcher([]);
  t.deepEqual(m.push("abc"), { text: "abc" });
  t.true(m.empty);
});

test("a stop string split across pushes is held back, then cut", (t) => {
  const m = new StopStringMatcher(["STOP"]);
  t.deepEqual(m.push("hello S"), { text: "hello " });
  t.deepEqual(m.push("TO"), { text: "" });
  t.deepEqual(m.push("P and more"), { text: "", stopped: "STOP" });
  t.deepEqual(m.push("ignored"), { text: "" });
});

test("a partial match that does not complete is released", (t) => {
  const m = new StopStringMatcher(["STOP"]);
  t.deepEqual(m.push("ST"), { text: "" });
  t.deepEqual(m.push("ale"), { text: "STale" });
  t.deepEqual(m.push("S"), { text: "" });
  t.is(m.flush(), "S");
});

test("include_stop_str_in_output keeps the match", (t) => {
  const m = new StopStringMatcher(["</s>"], true);
  t.deepEqual(m.push("end</"), { text: "end" });
  t.deepEqual(m.push("s>tail"), { text: "end".slice(3) + "</s>", stopped: "</s>" });
});

test("the earliest of several stop strings wins; multi-byte stop strings work", (t) => {
  const m = new StopStringMatcher(["world", "o w", "。"]);
  t.deepEqual(m.push("hello world"), { text: "hell", stopped: "o w" });
  const cjk = new StopStringMatcher(["。"]);
  t.deepEqual(cjk.push("你好"), { text: "你好" });
  t.deepEqual(cjk.push("。再见"), { text: "", stopped: "。" });
});

test("overlapping prefixes: holds the longest suffix that could still match", (t) => {
  const m = new StopStringMatcher(["aab"]);
  t.deepEqual(m.push("xaa"), { text: "x" });
  t.deepEqual(m.push("a"), { text: "a" }); // "aaa": the last "aa" may still become "aab"
  t.deepEqual(m.push("b"), { text: "", stopped: "aab" });
});
