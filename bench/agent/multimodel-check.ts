// A check (not a benchmark) of the agent's GPU tier on a CUDA device, where CI cannot go: the tiny
// Llama, Mistral and Qwen2 resident at once in one CUDA worker through the agent (AllocateWeights
// per model, the native IPC copy, LoadWeights by name); interleaved greedy streams equal
// one-at-a-time runs; unloading one model beside a running stream; the device budget taken from the
// worker's weights_budget_bytes; then, under a small --gpu-bytes budget, a fourth model evicting the
// least recently used idle one and a model that fits nowhere. Prints each check and exits non-zero
// on the first failure.
//
//   npx tsx bench/agent/multimodel-check.ts [--engines cuda:0] [--python python3] [--out DIR]
// On the GPU machine through the device tool, as bench/agent/gpu-run.sh runs load-tiers.ts (bundle
// it to .device/multimodel-check.mjs the same way). All checks passed on the H200 on 2026-12-03
// (worker weights budget 130.8 GB with a 1 GiB KV pool; greedy tokens equal to the CPU run's).
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { AgentService, type LoadModelResponse } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { type RunningAgent, startAgent } from "../../src/agent/start-agent.js";
import { tcpClient } from "../../src/agent/rpc-clients.js";
import { convertModel } from "../../src/converter/convert.js";
import { LocalStore } from "../../src/store/local-store.js";
import { makeTinyModel } from "../../src/tiny-model/tiny-model.js";

const { values } = parseArgs({
  options: {
    engines: { type: "string", default: "cuda:0" },
    python: { type: "string", default: process.env.THAW_PYTHON ?? "python3" },
    out: { type: "string", default: "bench/out/agent-multimodel" },
  },
});
const out = path.resolve(values.out!);
const MiB = 1 << 20;
const FLOOR = 64 * MiB;
const MODELS = ["llama", "mistral", "qwen2"];

function check(what: string, ok: () => void): void {
  ok();
  console.log(`ok   ${what}`);
}

async function main(): Promise<void> {
  await rm(out, { recursive: true, force: true });
  const store = await LocalStore.open(path.join(out, "store"), { fsync: false });
  const sizes = new Map<string, number>();
  // A fourth model: the Llama's weights under another name.
  for (const [name, arch] of [["llama", "llama"], ["mistral", "mistral"], ["qwen2", "qwen2"], ["llama-2", "llama"]] as const) {
    const source = path.join(out, "hf", name);
    await makeTinyModel(source, arch);
    sizes.set(name, Number((await convertModel({ source, modelId: `tiny-${name}`, store, chunkSize: MiB })).totalBytes));
  }

  const run = async (name: string, gpuBytes: number | undefined, body: (agent: RunningAgent, client: ReturnType<typeof tcpClient<typeof AgentService>>["client"]) => Promise<void>) => {
    const agent = await startAgent({
      dir: path.join(out, name),
      port: 0,
      store,
      engines: values.engines,
      python: values.python,
      dramBytes: 256 * MiB,
      gpuBytes,
      kvFloorBytes: FLOOR,
      kvPoolBytes: 1 << 30,
      log: (line) => {
        if (!line.includes(" INFO ")) process.stderr.write(`[${name}] ${line}\n`);
      },
    });
    const owned = tcpClient(AgentService, agent.url);
    try {
      await agent.enginesReady();
      await body(agent, owned.client);
    } finally {
      owned.close();
      await agent.close();
    }
  };
  type Client = ReturnType<typeof tcpClient<typeof AgentService>>["client"];
  const load = async (client: Client, model: string): Promise<LoadModelResponse> => {
    let last: LoadModelResponse | undefined;
    for await (const p of client.loadModel({ ref: { modelId: `tiny-${model}` } })) last = p;
    return last!;
  };
  const infer = async (client: Client, model: string, maxTokens = 32): Promise<number[]> => {
    const ids: number[] = [];
    const prompt = { case: "text" as const, value: "The quick brown fox" };
    for await (const r of client.infer({ ref: { modelId: `tiny-${model}` }, prompt, sampling: { temperature: 0, maxTokens, ignoreEos: true } })) {
      ids.push(...r.tokens.map((x) => x.tokenId));
    }
    return ids;
  };

  const alone = new Map<string, number[]>();
  await run("default-budget", undefined, async (agent, client) => {
    for (const m of MODELS) {
      const r = await load(client, m);
      check(`${m} loaded onto ${r.device} from ${Tier[r.startTier]} in ${r.seconds.toFixed(3)} s, nothing evicted`, () => {
        assert.equal(r.device, values.engines);
        assert.deepEqual(r.evicted, []);
      });
    }
    const device = agent.status().devices[0];
    console.log(
      `     device ${device.device}: budget ${device.budgetBytes} (the worker's weights budget), used ${device.usedBytes}, free ${device.freeBytes}, ` +
        `KV pool ${device.kvPoolBytes}, largest model ${device.maxModelBytes}`,
    );
    check("three models resident in one worker, the budget from the worker", () => {
      assert.equal(device.resident.length, 3);
      assert.equal(agent.status().engines.length, 1);
      assert.ok(device.budgetBytes > 0n);
      assert.equal(device.usedBytes, BigInt(MODELS.reduce((s, m) => s + sizes.get(m)! + FLOOR, 0)));
    });
    for (const m of MODELS) alone.set(m, await infer(client, m));
    console.log(`     greedy tokens: ${MODELS.map((m) => `${m} ${alone.get(m)!.slice(0, 8).join(",")}…`).join("; ")}`);
    const order = [...MODELS, ...MODELS, ...MODELS, ...MODELS];
    const together = await Promise.all(order.map((m) => infer(client, m)));
    check(`${order.length} interleaved streams equal one-at-a-time runs`, () => order.forEach((m, i) => assert.deepEqual(together[i], alone.get(m))));
    const streaming = infer(client, "llama", 256);
    const unloaded = await client.unloadModel({ ref: { modelId: "tiny-qwen2" } });
    const tokens = await streaming;
    check("unloading qwen2 beside a running llama stream leaves the stream intact", () => {
      assert.ok(unloaded.unloaded);
      assert.deepEqual(tokens.slice(0, 32), alone.get("llama"));
      assert.equal(tokens.length, 256);
    });
  });

  const largest = Math.max(...sizes.values());
  const small = 3 * (largest + FLOOR) + MiB;
  await run("small-budget", small, async (agent, client) => {
    for (const m of MODELS) await load(client, m);
    for (const m of MODELS) await infer(client, m, 1); // llama is the least recently used
    const r = await load(client, "llama-2");
    check(`a fourth model under a ${small}-byte budget evicts the least recently used idle model`, () => {
      assert.deepEqual(r.evicted.map((e) => e.modelId), ["tiny-llama"]);
      assert.equal(agent.status().models.find((m) => m.ref?.modelId === "tiny-llama")?.tier, Tier.DRAM);
    });
    const back = await load(client, "llama");
    assert.equal(back.startTier, Tier.DRAM);
    assert.deepEqual(await infer(client, "llama"), alone.get("llama"));
    console.log(`ok   llama back from DRAM in ${back.seconds.toFixed(3)} s (evicted ${back.evicted.map((e) => e.modelId).join(",")}), same tokens`);
  });
  console.log("all checks passed");
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`FAILED: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
