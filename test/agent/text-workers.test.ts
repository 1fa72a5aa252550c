// Prompts are rendered and tokenised in worker threads, each job bounded: a hostile template (a huge
// range, a loop past the step budget) is INVALID_ARGUMENT, a job past its time or memory limit too
// (its worker is replaced), a prompt too long for the context is refused before any tokenising,
// and a normal request beside all of them is answered, with the event loop free meanwhile.
import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { InferRequestSchema } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { promptIds } from "../../src/agent/inference.js";
import { ModelText } from "../../src/agent/model-text.js";
import { TextWorkers } from "../../src/agent/text-workers.js";
import type { TextJob } from "../../src/agent/text-worker.js";
import { tinyModelFiles } from "../../src/tiny-model/tiny-model.js";

const files = tinyModelFiles("llama");
const text = new ModelText({ tokenizerJson: files.get("tokenizer.json"), tokenizerConfigJson: files.get("tokenizer_config.json"), configJson: files.get("config.json") });
const hi = { role: "user", content: "hi" };
const HELLO_CHAT = text.encode(text.renderChat([hi], true), false);
const pools: TextWorkers[] = [];
const pool = (options?: ConstructorParameters<typeof TextWorkers>[0]) => {
  const p = new TextWorkers(options);
  pools.push(p);
  return p;
};
test.after.always(async () => {
  for (const p of pools) await p.close();
});

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected a refusal");
}

const chat = (template?: string): TextJob => ({ kind: "chat", messages: [hi], addGenerationPrompt: true, template });

test("a chat renders and tokenises in a worker exactly as in this thread", async (t) => {
  const workers = pool();
  const out = await workers.tokenize(text, chat());
  t.deepEqual(out.ids, HELLO_CHAT);
  t.is(out.text, text.renderChat([hi], true));
  t.deepEqual((await workers.tokenize(text, { kind: "text", text: "hi", addSpecialTokens: true })).ids, [256, 104, 105]);
});

test("hostile templates are INVALID_ARGUMENT, and a normal request beside them is answered", async (t) => {
  const workers = pool();
  const hostile = [
    "{% for i in range(100000000) %}x{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{{ 'x' * 1000 }}{% for m in messages %}",
  ];
  const refusals = hostile.map((template) => refusal(workers.tokenize(text, chat(template))));
  const normal = workers.tokenize(text, chat());
  const errors = await Promise.all(refusals);
  t.deepEqual(errors.map((e) => e.code), hostile.map(() => Code.InvalidArgument));
  t.regex(errors[0].rawMessage, /asked for a range of 100000000 numbers/);
  t.regex(errors[1].rawMessage, /ran more than \d+ steps/);
  t.deepEqual((await normal).ids, HELLO_CHAT);
});

test("a job past its time limit is INVALID_ARGUMENT; its worker is replaced and the next job is answered", async (t) => {
  // No step budget to speak of: a loop of 10^10 empty steps only the time limit can end.
  const workers = pool({ workers: 1, timeoutMs: 2000, limits: { maxSteps: 1e12, maxOutputChars: 1 << 20 } });
  const endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
  const slow = await refusal(workers.tokenize(text, chat(endless)));
  t.is(slow.code, Code.InvalidArgument);
  t.regex(slow.rawMessage, /took longer than 2000 ms/);
  t.deepEqual((await workers.tokenize(text, chat())).ids, HELLO_CHAT);
});

test("a job past its worker's memory is INVALID_ARGUMENT, and the process lives on", async (t) => {
  const workers = pool({ workers: 1, memoryMb: 16 });
  const big = await refusal(workers.tokenize(text, { kind: "text", text: "ab".repeat(2_000_000), addSpecialTokens: true }));
  t.is(big.code, Code.InvalidArgument);
  t.regex(big.rawMessage, /needed more than 16 MiB/);
  t.deepEqual((await workers.tokenize(text, chat())).ids, HELLO_CHAT);
});

test("a prompt too long for the context is refused before any tokenising; the event loop stays free during a long one", async (t) => {
  const asked: TextJob[] = [];
  const workers = pool();
  const spy = { tokenize: (m: ModelText, job: TextJob, signal?: AbortSignal) => (asked.push(job), workers.tokenize(m, job, signal)) } as TextWorkers;
  const huge = "x".repeat(30 << 20);
  const request = (init: MessageInitShape<typeof InferRequestSchema>) => create(InferRequestSchema, init);
  const tooLong = await refusal(promptIds(request({ prompt: { case: "text", value: huge } }), text, spy));
  t.is(tooLong.code, Code.InvalidArgument);
  t.regex(tooLong.rawMessage, /maximum context length of 2048 tokens/);
  const chatTooLong = await refusal(promptIds(request({ prompt: { case: "chat", value: { messages: [{ role: "user", content: huge }] } } }), text, spy));
  t.is(chatTooLong.code, Code.InvalidArgument);
  t.is(asked.length, 0, "nothing was sent to be tokenised");
  // Under the cap, a long prompt tokenises in a worker: this thread keeps running meanwhile.
  let finished = false;
  const long = promptIds(request({ prompt: { case: "text", value: "ab".repeat(30_000) } }), text, spy).then((p) => ((finished = true), p));
  await new Promise((resolve) => setImmediate(resolve));
  t.false(finished, "the event loop turned while the prompt was being tokenised");
  t.is((await long).ids.length, 60_001);
  const normal = await promptIds(request({ prompt: { case: "chat", value: { messages: [hi], addGenerationPrompt: true } } }), text, spy);
  t.deepEqual(normal.ids, HELLO_CHAT);
});
