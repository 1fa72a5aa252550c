// Many models per GPU, through the whole system: `thaw serve` (started in-process through the same
// startSystem()) and the official `openai` SDK, on one engine device. N models of one shape with
// different random weights; the device budget decides how many fit at once.
//
//   npx tsx bench/multimodel/run.ts [--models 8] [--layers 32 --hidden 4096 --inter 14336 --heads 32
//       --kv-heads 8 --vocab 128256] [--gpu-bytes SIZE] [--kv-pool-bytes SIZE] [--kv-floor-bytes SIZE]
//       [--dram-bytes SIZE] [--trace conv] [--requests 200] [--rate 4] [--max-context 2048]
//       [--max-gen 256] [--engines auto] [--python PY] [--out DIR] [--store DIR] [--same-source]
//       [--traces DIR (default ../shared/traces)] [--configs many,one]
// On the GPU machine: sh bench/multimodel/gpu-run.sh (it says what to carry).
//
// Two configurations, same models, same workloads, same run:
//   many   the device hosts as many models as its budget holds (--gpu-bytes, else the worker's)
//   one    one model per device (the budget holds one model: today's behaviour before 2026-12)
// Per configuration:
//   resident      TTFT of a model already on the device (others resident too), sequential
//   swap-in       TTFT of a model in the DRAM tier while the device is full: the LRU idle model leaves
//   throughput    1 model × 32 streams, then 4 models × 8 streams (256 tokens each, 128-token prompts)
//   trace         the Azure LLM inference trace 2023 (--trace conv|code; context and generated token
//                 counts, arrival times scaled to --rate requests/s), models picked uniformly, then
//                 by Zipf(1.0); TTFT split by where the model was when the request was sent
// Each row says how many swaps (GPU evictions) it caused and the device memory in use after it.
// Bounds in the same run: the pinned host→GPU copy of one model (torch, 4 GiB pinned buffer).
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import OpenAI from "openai";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { parseSize } from "../../src/cli/agent-command.js";
import { type RunningSystem, startSystem } from "../../src/cli/serve-command.js";
import { mulberry32 as rng } from "../../src/shared/prng.js";
import { tinyModelFiles } from "../../src/tiny-model/tiny-model.js";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "8" },
    layers: { type: "string", default: "32" },
    hidden: { type: "string", default: "4096" },
    inter: { type: "string", default: "14336" },
    heads: { type: "string", default: "32" },
    "kv-heads": { type: "string", default: "8" },
    vocab: { type: "string", default: "128256" },
    "gpu-bytes": { type: "string" },
    "kv-pool-bytes": { type: "string" },
    "kv-floor-bytes": { type: "string", default: "1G" },
    "dram-bytes": { type: "string", default: "40G" },
    "disk-bytes": { type: "string", default: "200G" },
    trace: { type: "string", default: "conv" },
    requests: { type: "string", default: "200" },
    rate: { type: "string", default: "4" },
    "max-context": { type: "string", default: "2048" },
    "max-gen": { type: "string", default: "256" },
    engines: { type: "string", default: "auto" },
    python: { type: "string", default: process.env.THAW_PYTHON ?? "python3" },
    out: { type: "string", default: "bench/out/multimodel" },
    store: { type: "string" },
    "same-source": { type: "boolean", default: false },
    configs: { type: "string", default: "many,one" },
    traces: { type: "string" },
  },
});
const N = Number(values.models);
const out = path.resolve(values.out);
const here = path.dirname(new URL(import.meta.url).pathname);
const traceDir = [values.traces, path.resolve(here, "../../../shared/traces"), path.resolve("../shared/traces")].find((d) =>
  d !== undefined &&
  spawnSync("test", ["-f", path.join(d, "azure-llm-2023-conv.csv")]).status === 0,
);
const makeModel = [path.resolve(here, "../system/make_model.py"), path.resolve("bench/system/make_model.py")].find(
  (f) => spawnSync("test", ["-f", f]).status === 0,
)!;
const modelIds = Array.from({ length: N }, (_, i) => `m${i}`);

// ─── small statistics ────────────────────────────────────────────────────────────────────────────

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
function spread(xs: number[]): string {
  return xs.length === 0 ? "—" : `${quantile(xs, 0.5).toFixed(3)} / ${quantile(xs, 0.99).toFixed(3)} (n=${xs.length})`;
}
function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}
// ─── the workload ────────────────────────────────────────────────────────────────────────────────

interface TraceRequest {
  atS: number;
  context: number;
  generated: number;
}

/** The first `count` requests of the trace, arrival times rescaled to `rate` requests/s on average. */
function loadTrace(name: string, count: number, rate: number): TraceRequest[] {
  if (traceDir === undefined) throw new Error("the Azure trace (shared/traces) was not found");
  const lines = readFileSync(path.join(traceDir, `azure-llm-2023-${name}.csv`), "utf8").trim().split("\n").slice(1, count + 1);
  const rows = lines.map((l) => {
    const [ts, ctx, gen] = l.split(",");
    return { t: Date.parse(ts.replace(" ", "T").slice(0, 23) + "Z"), context: Number(ctx), generated: Number(gen) };
  });
  const t0 = rows[0].t;
  const spanS = Math.max(1e-3, (rows[rows.length - 1].t - t0) / 1000);
  const scale = count / rate / spanS;
  const maxContext = Number(values["max-context"]);
  const maxGen = Number(values["max-gen"]);
  return rows.map((r) => ({
    atS: ((r.t - t0) / 1000) * scale,
    context: Math.max(1, Math.min(maxContext, r.context)),
    generated: Math.max(1, Math.min(maxGen, r.generated)),
  }));
}

/** Zipf(s) over n items: item k (0-based) with probability ∝ 1/(k+1)^s. */
function zipfPicker(n: number, s: number, random: () => number): () => number {
  const w = Array.from({ length: n }, (_, k) => 1 / (k + 1) ** s);
  const total = w.reduce((a, b) => a + b, 0);
  return () => {
    let x = random() * total;
    for (let k = 0; k < n; k++) if ((x -= w[k]) <= 0) return k;
    return n - 1;
  };
}

function prompt(len: number, random: () => number, vocab: number): number[] {
  // Ids above the byte tokenizer's range decode to nothing; the prompt is token ids anyway.
  return Array.from({ length: len }, () => 1 + Math.floor(random() * (vocab - 2)));
}

// ─── one request ─────────────────────────────────────────────────────────────────────────────────

interface Sample {
  model: string;
  tier: string;
  ttft: number;
  tokens: number;
  seconds: number;
  error?: string;
}

const TIER_NAMES: Record<number, string> = { [Tier.GPU]: "resident", [Tier.DRAM]: "dram", [Tier.DISK]: "disk", [Tier.REMOTE]: "remote" };

function tierNow(system: RunningSystem, model: string): string {
  const entry = system.agent.status().models.find((m) => m.ref?.modelId === model);
  return TIER_NAMES[entry?.tier ?? Tier.REMOTE] ?? "remote";
}

async function stream(openai: OpenAI, system: RunningSystem, model: string, ids: number[], maxTokens: number): Promise<Sample> {
  const tier = tierNow(system, model);
  const t0 = process.hrtime.bigint();
  let ttft = NaN;
  let tokens = 0;
  try {
    const s = await openai.completions.create({
      model,
      prompt: ids,
      max_tokens: maxTokens,
      stream: true,
      temperature: 0,
      // a chunk per token even when its text is empty (random weights, byte tokenizer)
      logprobs: 0,
      ...({ ignore_eos: true } as object),
    });
    for await (const chunk of s) {
      const n = chunk.choices[0]?.logprobs?.tokens?.length ?? 0;
      if (n > 0 && Number.isNaN(ttft)) ttft = seconds(t0);
      tokens += n;
    }
    return { model, tier, ttft, tokens, seconds: seconds(t0) };
  } catch (err) {
    return { model, tier, ttft, tokens, seconds: seconds(t0), error: String(err).slice(0, 300) };
  }
}

// ─── measurements ────────────────────────────────────────────────────────────────────────────────

async function gpuEvictions(system: RunningSystem): Promise<number> {
  const text = await system.agent.registry.metrics();
  const m = /^evictions_total\{[^}]*tier="gpu"[^}]*\}\s+(\S+)/m.exec(text);
  return m ? Number(m[1]) : 0;
}

function gpuMemoryUsedGB(): number {
  try {
    const mib = execFileSync("nvidia-smi", ["--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"], { encoding: "utf8" });
    return (Number(mib.trim().split("\n")[0]) * 2 ** 20) / 1e9;
  } catch {
    return NaN;
  }
}

function residentModels(system: RunningSystem): string[] {
  return system.agent
    .status()
    .models.filter((m) => m.tier === Tier.GPU)
    .map((m) => m.ref?.modelId ?? "");
}

interface Row {
  config: string;
  phase: string;
  samples: Sample[];
  wallSeconds: number;
  swaps: number;
  gpuMemoryGB: number;
}

async function measure(config: string, phase: string, system: RunningSystem, run: () => Promise<Sample[]>): Promise<Row> {
  const evicted = await gpuEvictions(system);
  const t0 = process.hrtime.bigint();
  const samples = await run();
  const row = { config, phase, samples, wallSeconds: seconds(t0), swaps: (await gpuEvictions(system)) - evicted, gpuMemoryGB: gpuMemoryUsedGB() };
  const ok = samples.filter((s) => s.error === undefined);
  const tokens = ok.reduce((a, s) => a + s.tokens, 0);
  const errors = samples.length - ok.length;
  console.log(
    `${config.padEnd(4)} ${phase.padEnd(22)} TTFT p50/p99 ${spread(ok.map((s) => s.ttft))} s; ${(tokens / row.wallSeconds).toFixed(0)} tok/s; ` +
      `swaps ${row.swaps}; GPU ${Number.isNaN(row.gpuMemoryGB) ? "—" : `${row.gpuMemoryGB.toFixed(1)} GB`}${errors > 0 ? `; ${errors} errors: ${samples.find((s) => s.error)?.error}` : ""}`,
  );
  return row;
}

async function runConfig(config: string, sources: Map<string, string>, modelBytes: number, rows: Row[]): Promise<void> {
  const vocab = Number(values.vocab);
  const dramBytes = parseSize(values["dram-bytes"]!, "--dram-bytes");
  const given = values["gpu-bytes"] === undefined ? undefined : parseSize(values["gpu-bytes"], "--gpu-bytes");
  const floorBytes = parseSize(values["kv-floor-bytes"]!, "--kv-floor-bytes");
  // "one": room for a single model (two would need twice the weights plus two KV floors).
  const gpuBytes = config === "one" ? Math.floor((modelBytes + floorBytes) * 1.9) : given;
  const t = process.hrtime.bigint();
  const system = await startSystem({
    stateDir: path.join(out, "state"),
    store: values.store,
    port: 0,
    models: modelIds.map((id) => ({ id, source: sources.get(id)! })),
    engines: values.engines,
    python: values.python,
    dramBytes,
    diskBytes: parseSize(values["disk-bytes"]!, "--disk-bytes"),
    gpuBytes,
    kvPoolBytes: values["kv-pool-bytes"] === undefined ? undefined : parseSize(values["kv-pool-bytes"], "--kv-pool-bytes"),
    kvFloorBytes: floorBytes,
    orchestrator: { keepAliveSeconds: 3600, maxQueue: 10_000, maxInflightPerAgent: 512 },
    log: (line) => {
      if (!line.includes(" INFO ")) process.stderr.write(`[serve ${config}] ${line}\n`);
    },
  });
  try {
    await system.agent.enginesReady();
    console.log(`\n== ${config}: thaw serve up in ${seconds(t).toFixed(1)} s (device budget ${gpuBytes === undefined ? "the worker's" : `${(gpuBytes / 1e9).toFixed(1)} GB`})`);
    const openai = new OpenAI({ baseURL: `${system.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 600_000 });
    const random = rng(1);

    // Every model once (the very first run converts them), so all are in the DRAM tier.
    await measure(config, "warm (each model once)", system, async () => {
      const got: Sample[] = [];
      for (const id of modelIds) got.push(await stream(openai, system, id, prompt(16, random, vocab), 2));
      return got;
    });
    const fit = residentModels(system).length;
    console.log(`${config}: ${fit} of ${N} models resident after the warm-up: ${residentModels(system).join(" ")}`);

    const resident = residentModels(system)[0] ?? modelIds[0];
    await stream(openai, system, resident, prompt(16, random, vocab), 1);
    rows.push(
      await measure(config, "resident", system, async () => {
        const got: Sample[] = [];
        for (let i = 0; i < 30; i++) got.push(await stream(openai, system, resident, prompt(128, random, vocab), 4));
        return got;
      }),
    );

    // Swap-in: always ask for a model that is not resident (the device stays full).
    rows.push(
      await measure(config, "swap-in from DRAM", system, async () => {
        const got: Sample[] = [];
        for (let i = 0; i < 2 * N && got.length < 12; i++) {
          const away = modelIds.filter((id) => tierNow(system, id) === "dram");
          if (away.length === 0) break;
          got.push(await stream(openai, system, away[i % away.length], prompt(128, random, vocab), 4));
        }
        return got;
      }),
    );

    const together = async (models: string[], perModel: number): Promise<Sample[]> =>
      Promise.all(models.flatMap((m) => Array.from({ length: perModel }, () => stream(openai, system, m, prompt(128, random, vocab), 256))));
    await stream(openai, system, modelIds[0], prompt(16, random, vocab), 1); // resident before it is timed
    rows.push(await measure(config, "1 model × 32 streams", system, () => together([modelIds[0]], 32)));
    if (config === "many" && fit >= 4) {
      // Bring four models on (one request each), then measure them together.
      for (const id of modelIds.slice(0, 4)) await stream(openai, system, id, prompt(16, random, vocab), 1);
      rows.push(await measure(config, "4 models × 8 streams", system, () => together(modelIds.slice(0, 4), 8)));
    }

    const trace = loadTrace(values.trace!, Number(values.requests), Number(values.rate));
    for (const popularity of ["uniform", "zipf"]) {
      const pick = popularity === "zipf" ? zipfPicker(N, 1.0, rng(7)) : ((r) => () => Math.floor(r() * N))(rng(7));
      const words = rng(11);
      const plan = trace.map((r) => ({ ...r, model: modelIds[pick()], ids: prompt(r.context, words, vocab) }));
      rows.push(
        await measure(config, `trace ${values.trace} ${popularity}`, system, async () => {
          const start = performance.now();
          return Promise.all(
            plan.map(async (r) => {
              const wait = r.atS * 1000 - (performance.now() - start);
              if (wait > 0) await new Promise((res) => setTimeout(res, wait));
              return stream(openai, system, r.model, r.ids, r.generated);
            }),
          );
        }),
      );
    }
  } finally {
    await system.close();
  }
}

function pinnedCopyGBps(): number {
  const code =
    "import torch,time,json\n" +
    "n=4<<30\nh=torch.empty(n,dtype=torch.uint8).pin_memory();d=torch.empty(n,dtype=torch.uint8,device='cuda')\n" +
    "d.copy_(h);torch.cuda.synchronize();t=time.perf_counter()\n" +
    "for _ in range(3): d.copy_(h,non_blocking=True)\n" +
    "torch.cuda.synchronize();print(json.dumps({'gbps':3*n/(time.perf_counter()-t)/1e9}))";
  const r = spawnSync(values.python!, ["-c", code], { encoding: "utf8", timeout: 120_000 });
  try {
    return Number(JSON.parse(r.stdout.trim().split("\n").pop() ?? "").gbps);
  } catch {
    return NaN;
  }
}

async function main(): Promise<void> {
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const shape = ["--layers", values.layers!, "--hidden", values.hidden!, "--inter", values.inter!, "--heads", values.heads!, "--kv-heads", values["kv-heads"]!, "--vocab", values.vocab!];
  const tiny = tinyModelFiles("llama");
  const sources = new Map<string, string>();
  let modelBytes = 0;
  const count = values["same-source"] ? 1 : N;
  for (let i = 0; i < count; i++) {
    const dir = path.join(out, "hf", `m${i}`);
    const r = spawnSync(values.python!, [makeModel, "--out", dir, "--seed", String(i), ...shape], { encoding: "utf8", timeout: 600_000 });
    if (r.status !== 0) throw new Error(`make_model.py: ${r.stderr.slice(-2000)}`);
    modelBytes = Number(JSON.parse(r.stdout.trim().split("\n").pop()!).bytes);
    for (const name of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) await writeFile(path.join(dir, name), tiny.get(name)!);
  }
  for (const [i, id] of modelIds.entries()) sources.set(id, path.join(out, "hf", `m${values["same-source"] ? 0 : i}`));
  console.log(
    `${N} models of ${(modelBytes / 1e9).toFixed(2)} GB (${values.layers} layers, hidden ${values.hidden}, vocab ${values.vocab}, bf16)` +
      `${values["same-source"] ? ", registered from one source folder (identical bytes, distinct models to thaw)" : ", different random weights"}`,
  );
  const rows: Row[] = [];
  for (const config of values.configs!.split(",")) await runConfig(config, sources, modelBytes, rows);

  const h2d = pinnedCopyGBps();
  const table = rows.map((r) => {
    const ok = r.samples.filter((s) => s.error === undefined);
    const by = (tier: string) => ok.filter((s) => s.tier === tier).map((s) => s.ttft);
    return {
      config: r.config,
      phase: r.phase,
      requests: r.samples.length,
      errors: r.samples.length - ok.length,
      ttft_p50_s: quantile(ok.map((s) => s.ttft), 0.5),
      ttft_p99_s: quantile(ok.map((s) => s.ttft), 0.99),
      ttft_resident: spread(by("resident")),
      ttft_dram: spread(by("dram")),
      ttft_disk: spread(by("disk")),
      tokens_per_s: ok.reduce((a, s) => a + s.tokens, 0) / r.wallSeconds,
      swaps: r.swaps,
      gpu_memory_gb: r.gpuMemoryGB,
    };
  });
  await writeFile(path.join(out, "results.json"), JSON.stringify({ modelBytes, models: N, h2dGBps: h2d, table, rows }, null, 2));
  console.log(`\nbound: pinned host→GPU ${h2d.toFixed(1)} GB/s → one model in ${(modelBytes / h2d / 1e9).toFixed(3)} s`);
  console.log("| config | phase | n | TTFT p50 / p99 s | resident p50/p99 | DRAM p50/p99 | disk p50/p99 | tok/s | swaps | GPU GB |");
  console.log("|---|---|---:|---|---|---|---|---:|---:|---:|");
  for (const r of table) {
    console.log(
      `| ${r.config} | ${r.phase} | ${r.requests}${r.errors ? ` (${r.errors} err)` : ""} | ${r.ttft_p50_s.toFixed(3)} / ${r.ttft_p99_s.toFixed(3)} | ${r.ttft_resident} | ${r.ttft_dram} | ${r.ttft_disk} | ${r.tokens_per_s.toFixed(0)} | ${r.swaps} | ${r.gpu_memory_gb.toFixed(1)} |`,
    );
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
