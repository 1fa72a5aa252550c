// The external-runtime mode with thaw's own edge as the upstream OpenAI-compatible server: the
// agent launches `thaw serve` (orchestrator, converter, agent and a Python engine worker serving the
// tiny model) as its subprocess, waits for its /health, and forwards Infer to it over HTTP.
import test from "ava";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { AgentService, type InferRequestSchema, type InferResponse } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { FinishReason } from "../../src/gen/thaw/engine/v1/engine_pb.js";
import { type RunningAgent, startAgent } from "../../src/agent/start-agent.js";
import { type OwnedClient, tcpClient } from "../../src/agent/rpc-clients.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs("thaw-agent-ext-thaw-");
const ref = { modelId: "upstream-tiny" };
let agent: RunningAgent;
let owned: OwnedClient<typeof AgentService>;

test.before(async () => {
  const dir = await dirs.make();
  const serve = [process.execPath, path.resolve("src/cli/thaw.js"), "serve", "--port", "{port}", "--state-dir", path.join(dir, "upstream"), "--dram-bytes", "64M"];
  agent = await startAgent({
    dir: path.join(dir, "agent"),
    port: 0,
    engines: "none",
    dramBytes: 0,
    externalModels: [{ modelId: ref.modelId, command: serve, servedModelName: "tiny", startTimeoutMs: 120_000 }],
    allowLaunch: true,
    log: () => {},
  });
  owned = tcpClient(AgentService, agent.url);
});

test.after.always(async () => {
  owned?.close();
  await agent?.close();
  await dirs.cleanup();
});

async function infer(request: Omit<MessageInitShape<typeof InferRequestSchema>, "ref">): Promise<InferResponse[]> {
  const out: InferResponse[] = [];
  for await (const r of owned.client.infer({ ...request, ref } as MessageInitShape<typeof InferRequestSchema>)) out.push(r);
  return out;
}

test.serial("the agent launches thaw serve and streams completions from its edge", async (t) => {
  let last;
  for await (const p of owned.client.loadModel({ ref })) last = p;
  t.true(last!.ready);

  const text = await infer({ prompt: { case: "text", value: "Hello" }, sampling: { maxTokens: 6, temperature: 0 } });
  const end = text.at(-1)!;
  t.is(end.finishReason, FinishReason.LENGTH);
  t.is(end.usage?.completionTokens, 6);
  t.true((end.usage?.promptTokens ?? 0) > 0);

  // Greedy output is deterministic: the same request through the same edge gives the same text.
  const again = await infer({ prompt: { case: "text", value: "Hello" }, sampling: { maxTokens: 6, temperature: 0 } });
  t.is(again.map((r) => r.text).join(""), text.map((r) => r.text).join(""));

  const chat = await infer({
    prompt: { case: "chat", value: { messages: [{ role: "user", content: "hi" }], addGenerationPrompt: true } },
    sampling: { maxTokens: 4, temperature: 0 },
  });
  t.is(chat.at(-1)!.usage?.completionTokens, 4);
});
