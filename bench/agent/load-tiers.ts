// Agent load benchmark: GB/s per tier as LoadModel itself reports it (LoadModelResponse.timings),
// on a synthetic Llama-shaped checkpoint large enough to time, with a CPU engine worker, beside
// baselines measured in the same run (cp of the store folder, cat of cold chunk files).
//
//   npx tsx bench/agent/load-tiers.ts [--layers 12] [--hidden 1024] [--reps 3] [--python PY] [--out DIR]
//                                     [--engines cpu|cuda:0] [--kv-floor-bytes N] [--engine-args "..."]
// It also loads the tiny Llama and prints its greedy tokens for a fixed prompt (the same on every
// engine: a CPU run gives the reference a GPU run is compared with, --expect 1,2,3).
//
// Scenarios, each repeated:
//   remote → engine   the disk tier emptied (UnloadModel down_to DISK): store → disk → pool → engine
//   disk (cold) → engine   pool emptied, chunk files dropped from the page cache: O_DIRECT reads
//   disk (warm) → engine   pool emptied, chunk files in the page cache
//   dram → engine     only the engine copy dropped: pool → engine (a CPU engine maps the pool: no copy)
import { execFileSync } from "node:child_process";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { AgentService, type LoadModelResponse } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { startAgent } from "../../src/agent/start-agent.js";
import { tcpClient } from "../../src/agent/rpc-clients.js";
import { convertModel } from "../../src/converter/convert.js";
import { LocalStore } from "../../src/store/local-store.js";
import { tinyModelFiles } from "../../src/tiny-model/tiny-model.js";
import { type F32Tensor, encodeSafetensors } from "../../src/tiny-model/safetensors-file.js";

const { values } = parseArgs({
  options: {
    layers: { type: "string", default: "12" },
    hidden: { type: "string", default: "1024" },
    reps: { type: "string", default: "3" },
    python: { type: "string", default: process.env.THAW_PYTHON ?? "/usr/bin/python3" },
    out: { type: "string", default: "bench/out/agent" },
    engines: { type: "string", default: "cpu" },
    "kv-floor-bytes": { type: "string", default: String(16 << 20) },
    expect: { type: "string" },
    "engine-args": { type: "string", default: "" },
  },
});
const LAYERS = Number(values.layers);
const H = Number(values.hidden);
const I = Math.round((H * 11) / 4 / 64) * 64;
const V = 32000;
const HEADS = H / 64;
const KV_HEADS = Math.max(1, HEADS / 2);
const REPS = Number(values.reps);
const out = path.resolve(values.out);

const TIER_NAME: Record<number, string> = { [Tier.REMOTE]: "remote", [Tier.DISK]: "disk", [Tier.DRAM]: "dram", [Tier.GPU]: "gpu" };

/** Small random floats from a 32-bit xorshift: fast, and finite (nothing here computes with them). */
function randomTensor(name: string, shape: number[], seed: number): F32Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = ((x >>> 0) / 4294967296 - 0.5) * 0.04;
  }
  return { name, shape, data };
}

async function makeModel(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tensors: F32Tensor[] = [randomTensor("model.embed_tokens.weight", [V, H], 1)];
  const q = HEADS * 64;
  const kv = KV_HEADS * 64;
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}`;
    const s = 100 + l * 16;
    tensors.push(
      { name: `${p}.input_layernorm.weight`, shape: [H], data: new Float32Array(H).fill(1) },
      randomTensor(`${p}.self_attn.q_proj.weight`, [q, H], s + 1),
      randomTensor(`${p}.self_attn.k_proj.weight`, [kv, H], s + 2),
      randomTensor(`${p}.self_attn.v_proj.weight`, [kv, H], s + 3),
      randomTensor(`${p}.self_attn.o_proj.weight`, [H, q], s + 4),
      { name: `${p}.post_attention_layernorm.weight`, shape: [H], data: new Float32Array(H).fill(1) },
      randomTensor(`${p}.mlp.gate_proj.weight`, [I, H], s + 5),
      randomTensor(`${p}.mlp.up_proj.weight`, [I, H], s + 6),
      randomTensor(`${p}.mlp.down_proj.weight`, [H, I], s + 7),
    );
  }
  tensors.push({ name: "model.norm.weight", shape: [H], data: new Float32Array(H).fill(1) }, randomTensor("lm_head.weight", [V, H], 7));
  await writeFile(path.join(dir, "model.safetensors"), encodeSafetensors(tensors, { format: "pt" }));
  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: V,
    hidden_size: H,
    intermediate_size: I,
    num_hidden_layers: LAYERS,
    num_attention_heads: HEADS,
    num_key_value_heads: KV_HEADS,
    head_dim: 64,
    hidden_act: "silu",
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    torch_dtype: "float32",
    tie_word_embeddings: false,
    bos_token_id: 256,
    eos_token_id: [257, 260],
  };
  await writeFile(path.join(dir, "config.json"), JSON.stringify(config, null, 2));
  // The tiny model's byte tokenizer: enough for the agent to read; nothing is generated here.
  const tiny = tinyModelFiles("llama");
  for (const name of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) await writeFile(path.join(dir, name), tiny.get(name)!);
}

/** Drops files from the page cache (GNU dd's nocache flag: posix_fadvise DONTNEED). */
function dropCache(files: string[]): void {
  for (const f of files) execFileSync("dd", [`if=${f}`, "iflag=nocache", "count=0", "status=none"]);
}

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const hf = path.join(out, "hf");
  let t = process.hrtime.bigint();
  await makeModel(hf);
  const store = await LocalStore.open(path.join(out, "store"), { fsync: false });
  const index = await convertModel({ source: hf, modelId: "bench-llama", store });
  await rm(hf, { recursive: true, force: true });
  const total = Number(index.totalBytes);
  console.log(`checkpoint: ${(total / 1e9).toFixed(3)} GB in ${index.chunks.length} chunks (${LAYERS} layers, hidden ${H}), made in ${seconds(t).toFixed(1)} s`);

  t = process.hrtime.bigint();
  const agent = await startAgent({
    dir: path.join(out, "agent"),
    port: 0,
    store,
    engines: values.engines,
    python: values.python,
    dramBytes: Math.ceil((total + (64 << 20)) / 4096) * 4096,
    diskBytes: total * 2,
    kvFloorBytes: Number(values["kv-floor-bytes"]),
    engineArgs: values["engine-args"].split(" ").filter((a) => a !== ""),
    log: (line) => {
      if (!line.includes(" INFO ")) process.stderr.write(`[agent] ${line}\n`);
    },
  });
  await agent.enginesReady();
  console.log(`agent and warm worker up in ${seconds(t).toFixed(1)} s (pool pre-faulted)`);
  const { client, close } = tcpClient(AgentService, agent.url);
  const ref = { modelId: "bench-llama" };
  const chunkDir = path.join(out, "agent", "models", "bench-llama@main");
  const storeDir = store.localPath("bench-llama@main");

  const load = async (): Promise<LoadModelResponse> => {
    let last: LoadModelResponse | undefined;
    for await (const p of client.loadModel({ ref })) last = p;
    return last!;
  };

  // rows[scenario][tier] = GB/s per repetition; totals[scenario] = seconds per repetition
  const rows = new Map<string, Map<string, number[]>>();
  const totals = new Map<string, number[]>();
  const record = (scenario: string, r: LoadModelResponse): void => {
    const byTier = rows.get(scenario) ?? new Map<string, number[]>();
    rows.set(scenario, byTier);
    for (const timing of r.timings) {
      const name = TIER_NAME[timing.tier];
      byTier.set(name, [...(byTier.get(name) ?? []), Number(timing.bytes) / timing.seconds / 1e9]);
    }
    totals.set(scenario, [...(totals.get(scenario) ?? []), r.seconds]);
  };
  const baselines = new Map<string, number[]>();
  const baseline = (name: string, gbps: number): void => void baselines.set(name, [...(baselines.get(name) ?? []), gbps]);

  for (let rep = 0; rep < REPS; rep++) {
    await client.unloadModel({ ref, downTo: Tier.DISK });
    const storeFiles = (await readdir(storeDir)).map((f) => path.join(storeDir, f));
    dropCache(storeFiles);
    record("remote (local store) → engine", await load());

    await client.unloadModel({ ref, downTo: Tier.DRAM });
    const chunks = index.chunks.map((c) => path.join(chunkDir, c.fileName));
    dropCache(chunks);
    record("disk (cold) → engine", await load());

    await client.unloadModel({ ref, downTo: Tier.DRAM });
    execFileSync("sh", ["-c", `cat ${chunks.map((c) => `'${c}'`).join(" ")} > /dev/null`]); // into the page cache
    record("disk (page cache) → engine", await load());

    await client.unloadModel({ ref, downTo: Tier.GPU });
    record("dram → engine", await load());

    const resident = await load();
    totals.set("already on the engine", [...(totals.get("already on the engine") ?? []), resident.seconds]);

    // Baselines: cp of the store folder (cold), cat of the cold chunk files.
    dropCache(storeFiles);
    const copyTo = path.join(out, "cp-baseline");
    await rm(copyTo, { recursive: true, force: true });
    let b = process.hrtime.bigint();
    execFileSync("cp", ["-r", storeDir, copyTo]);
    execFileSync("sync", ["-f", copyTo]);
    baseline("cp -r store folder (cold) + sync", total / seconds(b) / 1e9);
    dropCache(chunks);
    b = process.hrtime.bigint();
    execFileSync("sh", ["-c", `cat ${chunks.map((c) => `'${c}'`).join(" ")} > /dev/null`]);
    baseline("cat chunk files (cold)", total / seconds(b) / 1e9);
    b = process.hrtime.bigint();
    execFileSync("sh", ["-c", `cat ${chunks.map((c) => `'${c}'`).join(" ")} > /dev/null`]);
    baseline("cat chunk files (page cache)", total / seconds(b) / 1e9);
    process.stdout.write(`rep ${rep + 1}/${REPS} done\n`);
  }

  // The tiny Llama through the same agent: greedy tokens for a fixed prompt.
  const { makeTinyModel } = await import("../../src/tiny-model/tiny-model.js");
  await makeTinyModel(path.join(out, "tiny-hf"));
  await convertModel({ source: path.join(out, "tiny-hf"), modelId: "tiny-llama", store });
  const ids: number[] = [];
  let finish = 0;
  for await (const _ of client.loadModel({ ref: { modelId: "tiny-llama" } })); // Infer serves resident models only
  for await (const r of client.infer({ ref: { modelId: "tiny-llama" }, prompt: { case: "text", value: "The quick brown fox" }, sampling: { temperature: 0, maxTokens: 16 } })) {
    ids.push(...r.tokens.map((x) => x.tokenId));
    if (r.finishReason) finish = r.finishReason;
  }
  const engine = agent.status().engines[0];
  console.log(`tiny-llama greedy on ${engine?.device}: ${ids.join(",")} (finish ${finish})`);
  if (values.expect !== undefined) {
    const same = values.expect === ids.join(",");
    console.log(same ? "tokens match the expected ones" : `TOKENS DIFFER from the expected ${values.expect}`);
  }

  const result: Record<string, unknown> = { totalBytes: total, chunks: index.chunks.length, cpus: os.cpus().length, engines: values.engines, tiny: ids, scenarios: {}, baselines: {} };
  console.log(`\n| scenario | tier | GB/s (median of ${REPS}) | LoadModel s (median) |`);
  console.log("|---|---|---|---|");
  for (const [scenario, byTier] of rows) {
    const tiers: Record<string, number> = {};
    for (const [tier, xs] of byTier) {
      tiers[tier] = median(xs);
      console.log(`| ${scenario} | ${tier} | ${median(xs).toFixed(2)} | ${median(totals.get(scenario)!).toFixed(3)} |`);
    }
    (result.scenarios as Record<string, unknown>)[scenario] = { tiers, seconds: median(totals.get(scenario)!) };
  }
  console.log(`| already on the engine | — | — | ${median(totals.get("already on the engine")!).toFixed(4)} |`);
  console.log(`\n| baseline (same run) | GB/s | agent tier / baseline |`);
  console.log("|---|---|---|");
  const agentRemote = median(rows.get("remote (local store) → engine")!.get("remote")!);
  const agentCold = median(rows.get("disk (cold) → engine")!.get("disk")!);
  const agentWarm = median(rows.get("disk (page cache) → engine")!.get("disk")!);
  const ratio: Record<string, number> = {
    "cp -r store folder (cold) + sync": agentRemote,
    "cat chunk files (cold)": agentCold,
    "cat chunk files (page cache)": agentWarm,
  };
  for (const [name, xs] of baselines) {
    console.log(`| ${name} | ${median(xs).toFixed(2)} | ${(ratio[name] / median(xs)).toFixed(2)}× |`);
    (result.baselines as Record<string, number>)[name] = median(xs);
  }
  await writeFile(path.join(out, "results.json"), JSON.stringify(result, null, 2));
  close();
  await agent.close();
  await rm(path.join(out, "cp-baseline"), { recursive: true, force: true });
}

await main();
