// The Python client package (python/thaw_client, over python/gen) against an orchestrator with a
// TestAgent behind it. The whole system with a real agent and engine is in test/e2e.
import test from "ava";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { startOrchestrator, type RunningOrchestrator } from "../../src/orchestrator/orchestrator.js";
import { TestAgent } from "../orchestrator/test-agent.js";
import { PYTHON, PYTHON_ENV } from "./python.js";

/** The operators' secret; thaw_client sends its `token` (default THAW_INTERNAL_TOKEN) as the Bearer credential. */
const ADMIN = "admin-secret";

const run = promisify(execFile);

let orchestrator: RunningOrchestrator;
let agent: TestAgent;

test.before(async () => {
  orchestrator = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentExpiryMs: 5000, adminToken: ADMIN, models: [{ id: "m" }], log: () => {} });
  agent = await TestAgent.start({ id: "a", models: { m: Tier.GPU }, scheduler: orchestrator.url, heartbeatMs: 50 });
});

test.after.always(async () => {
  await agent?.close();
  await orchestrator?.close();
});

test("thaw_client: models, agents, explain, chat, completions, errors", async (t) => {
  const { stdout } = await run(PYTHON, ["test/client/python_client_check.py", `127.0.0.1:${orchestrator.port}`, "m"], { env: { ...PYTHON_ENV, THAW_INTERNAL_TOKEN: ADMIN } });
  const out = JSON.parse(stdout);
  t.deepEqual(out.models, ["m"]);
  t.deepEqual(out.agents, ["a"]);
  t.deepEqual(out.chosen, ["a"]);
  t.deepEqual(out.chat, { text: "Hello, world!", finish: ["length"], completion_tokens: 4, agents: ["a"] });
  t.deepEqual(out.complete, { indexes: [0, 1], finished: 2 });
  t.is(out.not_found, "NOT_FOUND");
  t.deepEqual(out.registered, ["extra", "org/extra", 42]);
  t.is(agent.infers.find((i) => i.request.prompt.case === "chat")?.request.sampling?.seed, 3n);
});
