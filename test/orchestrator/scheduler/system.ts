// A scheduler over real servers for tests: an orchestrator on a loopback port and TestAgents (real
// AgentService servers with scripted behaviour) heartbeating to it.
import type { ExecutionContext } from "ava";
import { create } from "@bufbuild/protobuf";
import { CheckpointIndexSchema, type CheckpointIndex } from "../../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { ThawClient } from "../../../src/client/thaw-client.js";
import { startOrchestrator, type OrchestratorOptions } from "../../../src/orchestrator/orchestrator.js";
import { sleep, TestAgent, type TestAgentOptions } from "../test-agent.js";

/** The operators' secret of the orchestrators these tests start (RegisterModel, ExplainPlacement need it). */
export const ADMIN = "admin-secret";

export async function system(t: ExecutionContext, agents: Omit<TestAgentOptions, "scheduler">[], options: OrchestratorOptions = {}) {
  const orchestrator = await startOrchestrator({
    port: 0,
    modelsFile: null,
    heartbeatIntervalMs: 100,
    // Generous: ava runs test files in parallel on few cores, and heartbeats can be late.
    agentExpiryMs: 5000,
    sweepIntervalMs: 50,
    agentWaitMs: 1000,
    models: [{ id: "m" }],
    log: () => {},
    adminToken: ADMIN,
    ...options,
  });
  const started: TestAgent[] = [];
  for (const a of agents) started.push(await TestAgent.start({ heartbeatMs: 50, ...a, scheduler: orchestrator.url }));
  t.teardown(async () => {
    for (const a of started) await a.close();
    await orchestrator.close();
  });
  return { orchestrator, agents: started, client: new ThawClient({ baseUrl: orchestrator.url, token: ADMIN }) };
}

/** Polls `cond` until it holds (for state only observable from outside, such as another process's view). */
export async function until(cond: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await sleep(10);
  }
}

export async function heartbeatRound(agents: TestAgent[]): Promise<void> {
  const seen = agents.map((a) => a.heartbeats);
  await until(() => agents.every((a, i) => a.heartbeats >= seen[i] + 2));
}

/** An index of `chunks` chunks of 4096 bytes (or of `totalBytes` in all), for the model `modelId`. */
export function index(chunks: number, modelId = "m", totalBytes = 4096 * chunks): CheckpointIndex {
  return create(CheckpointIndexSchema, {
    formatVersion: 1,
    ref: { modelId, revision: "main" },
    modelKey: `${modelId}@main`,
    totalBytes: BigInt(totalBytes),
    chunks: Array.from({ length: chunks }, (_, i) => ({ fileName: `chunk-${String(i).padStart(5, "0")}.bin`, byteLength: BigInt(Math.ceil(totalBytes / chunks)) })),
  });
}
