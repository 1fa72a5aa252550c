// The whole system's cold start, per start tier: an OpenAI streaming chat request to `thaw serve`
// (converter, orchestrator with its OpenAI edge, one agent, its engine worker, a local store — what
// `thaw serve` starts, started here in-process through the same startSystem()) for a model whose
// weights start in one tier, timed to the first streamed chunk with the official `openai` SDK.
//
//   npx tsx bench/system/cold-start.ts [--layers 32 --hidden 4096 --inter 14336 --heads 32 --kv-heads 8
//       --vocab 128256 --dtype bfloat16] [--engines auto] [--python PY] [--dram-bytes 20G]
//       [--disk-bytes 48G] [--reps 3] [--hf] [--out DIR]
// On the GPU machine: sh bench/system/gpu-run.sh (it says what to carry).
//
// Start tiers, in this order (each repeated --reps times, remote and disk cold at most twice):
//   first request   nothing converted yet: convert (safetensors → store) + remote → GPU
//   gpu             the model resident on the engine (warm)
//   dram            AgentService.UnloadModel(down_to GPU): weights stay in the pinned pool
//   disk (page cache)  UnloadModel(down_to DRAM), chunk files read into the page cache first
//   disk (cold)     UnloadModel(down_to DRAM), page cache dropped (/proc/sys/vm/drop_caches, else dd nocache)
//   remote          UnloadModel(down_to DISK), page cache dropped: store folder → disk tier → pool → GPU
// Each request's model_load_seconds{tier} (the agent's /metrics, before and after) is
// recorded beside its TTFT, so every row shows which tier the agent really loaded from.
// Baselines in the same run: transformers from_pretrained(device_map) + one token, with the page
// cache dropped and warm (--hf); torch pinned host→GPU GB/s; `dd iflag=direct` of the chunk files,
// 4 streams (the disk bound) and `cat` of them from the page cache.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdir, readdir, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import OpenAI from "openai";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { AgentService } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { tcpClient } from "../../src/agent/rpc-clients.js";
import { parseSize } from "../../src/cli/agent-command.js";
import { startSystem } from "../../src/cli/serve-command.js";
import { tinyModelFiles } from "../../src/tiny-model/tiny-model.js";

const { values } = parseArgs({
  options: {
    layers: { type: "string", default: "32" },
    hidden: { type: "string", default: "4096" },
    inter: { type: "string", default: "14336" },
    heads: { type: "string", default: "32" },
    "kv-heads": { type: "string", default: "8" },
    vocab: { type: "string", default: "128256" },
    dtype: { type: "string", default: "bfloat16" },
    engines: { type: "string", default: "auto" },
    python: { type: "string", default: process.env.THAW_PYTHON ?? "python3" },
    "dram-bytes": { type: "string", default: "20G" },
    "disk-bytes": { type: "string", default: "48G" },
    reps: { type: "string", default: "3" },
    "max-tokens": { type: "string", default: "8" },
    hf: { type: "boolean", default: false },
    "hf-device": { type: "string", default: "cuda" },
    out: { type: "string", default: "bench/out/system" },
  },
});
const REPS = Number(values.reps);
const out = path.resolve(values.out);
const MODEL = "llama8b";
const here = path.dirname(new URL(import.meta.url).pathname);
// The bundle lives in .device/; the Python helpers stay beside this source file.
const pyDir = [here, path.resolve("bench/system")].find((d) => spawnSync("test", ["-f", path.join(d, "make_model.py")]).status === 0)!;

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
async function filesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) found.push(...(await filesUnder(p)));
    else if (e.isFile()) found.push(p);
  }
  return found;
}
async function bytesOf(files: string[]): Promise<number> {
  let n = 0;
  for (const f of files) n += (await stat(f)).size;
  return n;
}

let dropMethod = "";
/** Drops the page cache: the whole of it where /proc/sys/vm/drop_caches is writable, else the files given. */
async function dropCaches(files: string[]): Promise<void> {
  execFileSync("sync");
  try {
    await writeFile("/proc/sys/vm/drop_caches", "3");
    dropMethod ||= "echo 3 > /proc/sys/vm/drop_caches";
    return;
  } catch {
    dropMethod = "dd iflag=nocache per file (drop_caches not writable)";
  }
  for (const f of files) execFileSync("dd", [`if=${f}`, "iflag=nocache", "count=0", "status=none"]);
}

function python(args: string[], timeoutS: number): Record<string, unknown> {
  const t = process.hrtime.bigint();
  const r = spawnSync(values.python, args, { encoding: "utf8", timeout: timeoutS * 1000, maxBuffer: 64 << 20 });
  const wall = seconds(t);
  const line = r.stdout.trim().split("\n").pop() ?? "";
  try {
    return { ...JSON.parse(line), process_wall_s: wall };
  } catch {
    throw new Error(`${values.python} ${args.join(" ")}: exit ${r.status}${r.signal ? ` (${r.signal})` : ""}\n${r.stdout}\n${r.stderr.slice(-3000)}`);
  }
}

/** model_load_seconds{tier} sum and count from the agent's /metrics (every load it made). */
async function loadMetrics(url: string): Promise<Map<string, { sum: number; count: number }>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new Map<string, { sum: number; count: number }>();
  for (const line of text.split("\n")) {
    const r = /^model_load_seconds_(sum|count)\{[^}]*tier="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
    if (!r) continue;
    const e = m.get(r[2]) ?? { sum: 0, count: 0 };
    e[r[1] as "sum" | "count"] += Number(r[3]);
    m.set(r[2], e);
  }
  return m;
}

interface Row {
  scenario: string;
  ttft: number;
  total: number;
  chunks: number;
  loadTier: string;
  loadSeconds: number;
}

async function main(): Promise<void> {
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const hf = path.join(out, "hf");
  const shape = ["--layers", values.layers!, "--hidden", values.hidden!, "--inter", values.inter!, "--heads", values.heads!, "--kv-heads", values["kv-heads"]!, "--vocab", values.vocab!, "--dtype", values.dtype!];
  const made = python([path.join(pyDir, "make_model.py"), "--out", hf, ...shape], 300);
  const tiny = tinyModelFiles("llama");
  for (const name of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) await writeFile(path.join(hf, name), tiny.get(name)!);
  const modelBytes = Number(made.bytes);
  console.log(`model: ${(modelBytes / 1e9).toFixed(3)} GB (${values.layers} layers, hidden ${values.hidden}, vocab ${values.vocab}, ${values.dtype}), safetensors made in ${Number(made.process_wall_s).toFixed(1)} s on ${made.device}`);

  const results: Record<string, unknown> = { modelBytes, made };
  if (values.hf) {
    const hfFiles = await filesUnder(hf);
    await dropCaches(hfFiles);
    const attempt = (args: string[]): Record<string, unknown> => {
      try {
        return python(args, 240);
      } catch (err) {
        console.log(`transformers baseline failed: ${String(err)}`);
        return { error: String(err).slice(0, 2000) };
      }
    };
    const cold = attempt([path.join(pyDir, "hf_baseline.py"), "--model", hf, "--device", values["hf-device"]!]);
    const warm = attempt([path.join(pyDir, "hf_baseline.py"), "--model", hf, "--device", values["hf-device"]!, "--h2d-gib", values["hf-device"]!.startsWith("cuda") ? "4" : "0"]);
    results.hf = { cold, warm };
    console.log(`transformers (page cache dropped): ${JSON.stringify(cold)}`);
    console.log(`transformers (page cache warm):    ${JSON.stringify(warm)}`);
  }

  let t = process.hrtime.bigint();
  const stateDir = path.join(out, "state");
  const system = await startSystem({
    stateDir,
    port: 0,
    models: [{ id: MODEL, source: hf }],
    engines: values.engines,
    python: values.python,
    dramBytes: parseSize(values["dram-bytes"]!, "--dram-bytes"),
    diskBytes: parseSize(values["disk-bytes"]!, "--disk-bytes"),
    log: (line) => {
      if (!line.includes(" INFO ")) process.stderr.write(`[serve] ${line}\n`);
    },
  });
  await system.agent.enginesReady();
  const startup = seconds(t);
  console.log(`thaw serve up (edge ${system.url}, engines ${values.engines}, pool ${values["dram-bytes"]}) and engine worker ready in ${startup.toFixed(1)} s`);
  const openai = new OpenAI({ baseURL: `${system.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 300_000 });
  const { client: agent, close: closeAgent } = tcpClient(AgentService, system.agent.url);
  const ref = { modelId: MODEL };
  const rows: Row[] = [];
  // Unloads through the agent, then waits until the orchestrator's view (heartbeats, 1 s) shows the
  // model at the expected cache level (1 DRAM, 2 disk, 3 remote), as after a keep-alive unload: the
  // request then takes the scheduler's own load path (LoadModel, then inference).
  const unloadTo = async (downTo: Tier, level: number): Promise<void> => {
    await agent.unloadModel({ ref, downTo });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (system.orchestrator.scheduler.explain(MODEL).some((s) => s.cacheLevel === level)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`the orchestrator never saw ${MODEL} at cache level ${level}: ${JSON.stringify(system.orchestrator.scheduler.explain(MODEL))}`);
  };

  const request = async (scenario: string): Promise<Row> => {
    const before = await loadMetrics(system.agent.url);
    const t0 = process.hrtime.bigint();
    const stream = await openai.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Why do serverless models start slowly?" }],
      max_tokens: Number(values["max-tokens"]),
      stream: true,
      // vLLM's field, which the edge takes: random weights must not stop at once
      ...({ ignore_eos: true } as object),
    });
    let ttft = NaN;
    let chunks = 0;
    for await (const chunk of stream) {
      if (chunks++ === 0) ttft = seconds(t0);
      void chunk;
    }
    const total = seconds(t0);
    const after = await loadMetrics(system.agent.url);
    let loadTier = "none";
    let loadSeconds = 0;
    for (const [tier, a] of after) {
      const b = before.get(tier) ?? { sum: 0, count: 0 };
      if (a.count > b.count) {
        loadTier = tier;
        loadSeconds = a.sum - b.sum;
      }
    }
    const row = { scenario, ttft, total, chunks, loadTier, loadSeconds };
    rows.push(row);
    console.log(`${scenario.padEnd(20)} TTFT ${ttft.toFixed(3)} s  (${chunks} chunks in ${total.toFixed(3)} s; load from ${loadTier}: ${loadSeconds.toFixed(3)} s)`);
    return row;
  };

  const chunkDir = async (): Promise<string[]> => filesUnder(path.join(stateDir, "agent", "models"));
  const storeFiles = async (): Promise<string[]> => filesUnder(path.join(stateDir, "store"));

  await request("first request");
  if (values.hf) await rm(hf, { recursive: true, force: true }); // room on the disk; the store has it now
  for (let i = 0; i < REPS; i++) await request("gpu (warm)");
  for (let i = 0; i < REPS; i++) {
    await unloadTo(Tier.GPU, 1);
    await request("dram");
  }
  for (let i = 0; i < REPS; i++) {
    await unloadTo(Tier.DRAM, 2);
    const chunks = await chunkDir();
    execFileSync("sh", ["-c", `cat ${chunks.map((c) => `'${c}'`).join(" ")} > /dev/null`]);
    await request("disk (page cache)");
  }
  for (let i = 0; i < Math.min(REPS, 2); i++) {
    await unloadTo(Tier.DRAM, 2);
    await dropCaches(await chunkDir());
    await request("disk (cold)");
  }
  for (let i = 0; i < Math.min(REPS, 2); i++) {
    await unloadTo(Tier.DISK, 3);
    await dropCaches(await storeFiles());
    await request("remote (store)");
  }
  closeAgent();
  await system.close();

  // Physical bounds, same run: O_DIRECT reads of the chunk files, 4 streams; then cat from the page cache.
  const chunks = (await filesUnder(path.join(stateDir, "store"))).filter((f) => !f.endsWith(".json") && !f.endsWith(".idx"));
  const chunkBytes = await bytesOf(chunks);
  const list = path.join(out, "chunks.txt");
  await writeFile(list, chunks.join("\n") + "\n");
  await dropCaches(chunks);
  t = process.hrtime.bigint();
  let ddCmd = `xargs -P4 -I{} dd if={} of=/dev/null bs=64M iflag=direct status=none < '${list}'`;
  try {
    execFileSync("sh", ["-c", ddCmd]);
  } catch {
    ddCmd = `xargs -P4 -I{} cat {} < '${list}' > /dev/null`;
    execFileSync("sh", ["-c", ddCmd]);
  }
  const ddS = seconds(t);
  execFileSync("sh", ["-c", `xargs cat < '${list}' > /dev/null`]);
  t = process.hrtime.bigint();
  execFileSync("sh", ["-c", `xargs -P4 -I{} cat {} < '${list}' > /dev/null`]);
  const catS = seconds(t);

  const scen = [...new Set(rows.map((r) => r.scenario))];
  const table = scen.map((s) => {
    const rs = rows.filter((r) => r.scenario === s);
    return {
      scenario: s,
      n: rs.length,
      ttft_median_s: median(rs.map((r) => r.ttft)),
      ttft_s: rs.map((r) => Number(r.ttft.toFixed(3))),
      load_tier: [...new Set(rs.map((r) => r.loadTier))].join(","),
      load_median_s: median(rs.map((r) => r.loadSeconds)),
    };
  });
  const h2d = values.hf ? Number((results.hf as { warm: { h2d_gbps?: number } }).warm.h2d_gbps) : NaN;
  Object.assign(results, {
    startupSeconds: startup,
    dropMethod,
    rows,
    table,
    bounds: { chunkBytes, ddDirect4: { cmd: ddCmd, seconds: ddS, gbps: chunkBytes / ddS / 1e9 }, cat4PageCache: { seconds: catS, gbps: chunkBytes / catS / 1e9 }, h2dGbps: h2d },
  });
  await writeFile(path.join(out, "results.json"), JSON.stringify(results, null, 2));
  console.log(`\npage cache dropped with: ${dropMethod || "(not needed)"}`);
  console.log("| start tier | n | TTFT median s | TTFT each s | agent loaded from | load s (median) |");
  console.log("|---|---:|---:|---|---|---:|");
  for (const r of table) console.log(`| ${r.scenario} | ${r.n} | ${r.ttft_median_s.toFixed(3)} | ${r.ttft_s.join(", ")} | ${r.load_tier} | ${r.load_median_s.toFixed(3)} |`);
  console.log(`bounds: ${(chunkBytes / 1e9).toFixed(3)} GB of chunks; disk O_DIRECT 4 streams ${(chunkBytes / ddS / 1e9).toFixed(2)} GB/s (${ddS.toFixed(2)} s); page cache cat 4 streams ${(chunkBytes / catS / 1e9).toFixed(2)} GB/s (${catS.toFixed(2)} s); pinned H2D ${h2d.toFixed(2)} GB/s → ${(chunkBytes / h2d / 1e9).toFixed(3)} s`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
