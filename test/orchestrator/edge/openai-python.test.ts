// The edge through the official OpenAI SDK for Python (.venv, python/requirements-test.txt),
// against an orchestrator with TestAgents: chat, streaming with usage, completions, and the SDK's
// typed errors (NotFoundError, BadRequestError, AuthenticationError, RateLimitError).
import test from "ava";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Tier } from "../../../src/gen/thaw/agent/v1/agent_pb.js";
import { startOrchestrator, type RunningOrchestrator } from "../../../src/orchestrator/orchestrator.js";
import { PYTHON } from "../../client/python.js";
import { sleep, TestAgent } from "../test-agent.js";

const run = promisify(execFile);
const KEY = "sk-python";

async function check(baseUrl: string, checks: string): Promise<Record<string, any>> {
  const { stdout } = await run(PYTHON, ["test/e2e/openai_python_check.py", `${baseUrl}/v1`, "m", KEY, checks]);
  return JSON.parse(stdout);
}

let orchestrator: RunningOrchestrator;
let agent: TestAgent;

test.before(async () => {
  orchestrator = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentExpiryMs: 5000, apiKeys: [KEY], models: [{ id: "m" }], log: () => {} });
  agent = await TestAgent.start({ id: "a", models: { m: Tier.GPU }, scheduler: orchestrator.url, heartbeatMs: 50, maxModelLen: 1000 });
});

test.after.always(async () => {
  await agent?.close();
  await orchestrator?.close();
});

test.serial("chat, streaming, completions and typed errors", async (t) => {
  const out = await check(orchestrator.url, "chat,stream,completions,errors,auth");
  t.deepEqual(out.chat, { object: "chat.completion", content_type: "str", finish: "length", usage: 8, request_id: true });
  t.deepEqual(out.stream, { first_role: "assistant", finish: ["length"], usage_last: 6, usage_choices: 0 });
  t.deepEqual(out.completions, { indexes: [0, 1, 2, 3], logprobs: 3, prompt_tokens: 2 });
  t.is(out.token_prompt, "length");
  t.deepEqual(out.errors, { not_found: "model_not_found", bad_request: "temperature", context_length: "context_length_exceeded" });
  t.is(out.auth, "invalid_api_key");
});

test.serial("RateLimitError with Retry-After when the queue is full", async (t) => {
  const full = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentExpiryMs: 5000, apiKeys: [KEY], maxInflightPerAgent: 1, maxQueue: 0, models: [{ id: "m" }], log: () => {} });
  const slow = await TestAgent.start({ id: "slow", models: { m: Tier.GPU }, scheduler: full.url, heartbeatMs: 50, tokenDelayMs: 50 });
  t.teardown(async () => {
    await slow.close();
    await full.close();
  });
  const ctl = new AbortController();
  const busy = fetch(`${full.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "x" }], max_tokens: 400, stream: true }),
    signal: ctl.signal,
  });
  while (slow.inflight === 0) await sleep(5);
  const out = await check(full.url, "ratelimit");
  t.is(out.ratelimit.code, "rate_limit_exceeded");
  t.regex(out.ratelimit.retry_after, /^\d+$/);
  t.is((await busy).status, 200);
  ctl.abort();
});
