// Two real agents on loopback (`thaw agent` processes, each with its Python engine worker on
// CPU), a converter and an orchestrator, all sharing an internal token as a deployment does: the
// agents prove it before they are placed on (and to each other as chunk peers), the scheduler
// places by score (asserted through ExplainPlacement), and an agent killed mid-stream gives the
// client an in-band error while the next request goes to the other agent.
import test from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import type { ConnectRouter } from "@connectrpc/connect";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { AgentService } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { ConverterService } from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { ConverterServiceImpl } from "../../src/converter/converter-service.js";
import { CONVERTER_ACCESS, converterDeps } from "../../src/converter/routes.js";
import { authorize } from "../../src/shared/auth.js";
import { ThawClient } from "../../src/client/thaw-client.js";
import { startOrchestrator, type RunningOrchestrator } from "../../src/orchestrator/orchestrator.js";
import { grpcClient } from "../../src/shared/clients.js";
import { startServer, type RunningServer } from "../../src/shared/server.js";
import { LocalStore } from "../../src/store/local-store.js";
import { makeTinyModel } from "../../src/tiny-model/tiny-model.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs("thaw-two-agents-");
const logs: string[] = [];
let converter: RunningServer;
let orchestrator: RunningOrchestrator;
let thaw: ThawClient;
const agents = new Map<string, ChildProcess>();
const TOKEN = "two-agents-internal-token";
const ADMIN = "two-agents-admin-token";

function startAgentProcess(id: string, dir: string, store: string, scheduler: string): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      path.resolve("src/cli/thaw.js"),
      "agent",
      "--port", "0",
      "--agent-id", id,
      "--dir", path.join(dir, id),
      "--store", store,
      "--scheduler", scheduler,
      "--engines", "cpu",
      "--python", process.env.THAW_PYTHON ?? "/usr/bin/python3",
      "--dram-bytes", "64M",
      "--disk-bytes", "1G",
      "--engine-arg=--threads=1",
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, THAW_INTERNAL_TOKEN: TOKEN, THAW_ADMIN_TOKEN: "" } },
  );
  child.stdout!.on("data", (d) => logs.push(`${id}: ${d}`));
  child.stderr!.on("data", (d) => logs.push(`${id}: ${d}`));
  agents.set(id, child);
  return child;
}

async function until<T>(what: string, get: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const status = async (id: string) => (await thaw.listAgents()).find((a) => a.status?.agentId === id && !a.expired)?.status;

test.before(async () => {
  const dir = await dirs.make();
  const models = path.join(dir, "models");
  await makeTinyModel(path.join(models, "tiny"));
  const store = await LocalStore.open(path.join(dir, "store"));
  converter = await startServer({
    routes: (router: ConnectRouter) => router.service(ConverterService, new ConverterServiceImpl(converterDeps({ store, localRoots: [models] }))),
    interceptors: [authorize({ internalToken: TOKEN }, CONVERTER_ACCESS)],
  });
  orchestrator = await startOrchestrator({
    port: 0,
    modelsFile: null,
    converter: `127.0.0.1:${converter.port}`,
    heartbeatIntervalMs: 200,
    agentExpiryMs: 1500,
    token: TOKEN,
    adminToken: ADMIN,
    models: [{ id: "tiny", source: path.join(models, "tiny") }],
    log: (line) => logs.push(`orchestrator: ${line}`),
  });
  thaw = new ThawClient({ baseUrl: orchestrator.url, token: ADMIN });
  const scheduler = `127.0.0.1:${orchestrator.port}`;
  for (const id of ["agent-a", "agent-b"]) startAgentProcess(id, dir, path.join(dir, "store"), scheduler);
  // Both agents heartbeating with a warm engine worker.
  for (const id of ["agent-a", "agent-b"]) {
    await until(`${id} with a warm engine`, async () => {
      const s = await status(id);
      return s !== undefined && s.engines.length > 0 && s.engines.every((e) => e.state === 2) ? s : undefined;
    });
  }
});

test.after.always(async () => {
  for (const child of agents.values()) child.kill("SIGKILL");
  await orchestrator?.close();
  await converter?.close();
  await dirs.cleanup();
});

test.afterEach.always((t) => {
  if (!t.passed) t.log(logs.join(""));
});

test.serial("the scheduler places by score: the agent that holds the model on its engine wins", async (t) => {
  // The first request converts tiny and cold-starts it on one agent (a tie between two cold
  // agents goes to the lower id); from then on that agent holds it on its engine.
  await thaw.chatText("tiny", [{ role: "user", content: "warm" }], { maxTokens: 1 });
  const a = (await status("agent-a"))!;
  const b = (await status("agent-b"))!;
  const warm = (await thaw.listModels())[0].placements.find((p) => p.tier === Tier.GPU)?.agentId;
  const [onGpu, other] = warm === "agent-b" ? [b, a] : [a, b];
  // Only that agent has it (the other may hold chunks if it helped download them: drop them).
  await grpcClient(AgentService, other.address, { token: TOKEN })
    .unloadModel({ ref: { modelId: "tiny", revision: "main" }, downTo: Tier.DISK })
    .catch(() => undefined);
  await until("heartbeats to show the cache", async () => {
    const scores = (await thaw.explainPlacement("tiny")).scores;
    return scores.length === 2 && scores.find((s) => s.agentId === other.agentId)!.cacheLevel >= 2 && scores.find((s) => s.agentId === onGpu.agentId)!.cacheLevel === 0 ? scores : undefined;
  }, 10_000);

  const explained = await thaw.explainPlacement("tiny");
  const chosen = explained.scores.find((s) => s.chosen)!;
  t.is(chosen.agentId, onGpu.agentId);
  t.is(chosen.cacheLevel, 0);
  const loser = explained.scores.find((s) => !s.chosen)!;
  t.true(loser.total > chosen.total);
  t.is(loser.cacheTerm, explained.alpha * loser.cacheLevel);
  t.true(loser.transferSeconds > 0, "the cold agent pays the transfer term");
  const done = await thaw.chatText("tiny", [{ role: "user", content: "hi" }], { maxTokens: 4 });
  t.deepEqual(done.agentIds, [chosen.agentId]);
});

test.serial("an agent killed mid-stream: in-band error, then the next request goes to the other agent", async (t) => {
  const victim = (await thaw.explainPlacement("tiny")).scores.find((s) => s.chosen)!.agentId;
  const survivor = victim === "agent-a" ? "agent-b" : "agent-a";
  const res = await fetch(`${orchestrator.url}/v1/completions`, {
    method: "POST",
    body: JSON.stringify({ model: "tiny", prompt: "Once upon a time", max_tokens: 1900, ignore_eos: true, temperature: 0, stream: true }),
  });
  t.is(res.status, 200);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let killed = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    if (!killed && text.split("\n\n").length > 4) {
      killed = true;
      agents.get(victim)!.kill("SIGKILL");
    }
  }
  const events = text.split("\n\n").filter((e) => e !== "");
  t.true(killed);
  t.is(events.at(-1), "data: [DONE]");
  const error = JSON.parse(events.at(-2)!.slice("data: ".length));
  t.is(error.error.type, "server_error");
  t.regex(error.error.message, new RegExp(`agent ${victim} failed while generating`));
  t.false(events.some((e) => e.includes('"finish_reason":"length"')), "the stream did not finish normally");

  const next = await thaw.chatText("tiny", [{ role: "user", content: "hi" }], { maxTokens: 4 });
  t.deepEqual(next.agentIds, [survivor]);
  t.true(next.usage.completionTokens > 0);
  const explained = await thaw.explainPlacement("tiny");
  t.regex(explained.scores.find((s) => s.agentId === victim)!.ineligibleReason, /suspect|expired/);
});
