// The scheduling simulator's one command: every policy on the same workloads, a table of mean and
// p99 TTFT, SLO attainment (TTFT ≤ 1 s), cold starts per tier and GPU-seconds, and PNG plots.
//
//   npx tsx bench/sim/run.ts                       trace + bursty + load sweep (a few minutes)
//   npx tsx bench/sim/run.ts --only year           a year of traffic on 1,000 agents
//   npx tsx bench/sim/run.ts --only trace --agents 64 --models 500
//
// Writes bench/out/sim/results.json, results.md and (with matplotlib in .venv) ttft-cdf-*.png and
// gpu-seconds-vs-load.png.
//
// Run through tsx, it bundles itself with esbuild and runs the bundle on plain node: tsx keeps
// function names (esbuild's keepNames), which defines a property on every closure the scheduler
// makes per agent per request, and halves the simulator's speed.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { H200 } from "./hardware.js";
import { POLICIES, type PolicyName } from "./policies.js";
import { mean, quantile, simulate, type SimConfig, type SimResult } from "./simulation.js";
import { azure, bursty, readAzureTrace, type TraceRow } from "./workload.js";

/** This file's folder (bench/sim), also when running as the bundle. */
const HERE = process.env.THAW_SIM_HERE ?? import.meta.dirname;

if (import.meta.url.endsWith(".ts")) {
  const { build } = await import("esbuild");
  const outfile = path.resolve(HERE, "../out/sim/run.mjs");
  await build({ entryPoints: [fileURLToPath(import.meta.url)], bundle: true, platform: "node", format: "esm", target: "node20", packages: "external", outfile, logLevel: "warning" });
  const child = spawnSync(process.execPath, [outfile, ...process.argv.slice(2)], { stdio: "inherit", env: { ...process.env, THAW_SIM_HERE: HERE } });
  process.exit(child.status ?? 1);
}

const { values: args } = parseArgs({
  options: {
    only: { type: "string" },
    agents: { type: "string" },
    models: { type: "string" },
    traces: { type: "string", default: process.env.THAW_TRACES ?? path.resolve(HERE, "../../../shared/traces") },
    out: { type: "string", default: path.resolve(HERE, "../out/sim") },
    policies: { type: "string" },
  },
});

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const policies = (args.policies?.split(",") as PolicyName[] | undefined) ?? POLICIES;
mkdirSync(args.out!, { recursive: true });

interface Row {
  scenario: string;
  load: number;
  keepAliveSeconds: number;
  result: SimResult;
}
const rows: Row[] = [];

function base(agents: number, models: number): Omit<SimConfig, "policy" | "workload" | "warmupMs" | "endMs"> {
  return {
    agents: Number(args.agents ?? agents),
    models: Number(args.models ?? models),
    hardware: H200,
    keepAliveSeconds: 300,
    maxInflightPerAgent: 64,
    maxQueue: 1_000_000,
    diskCopies: 0,
    seed: 1,
  };
}

async function compare(scenario: string, load: number, config: Omit<SimConfig, "policy">, only: PolicyName[] = policies): Promise<void> {
  for (const policy of only) {
    const result = await simulate({ ...config, policy });
    rows.push({ scenario, load, keepAliveSeconds: config.keepAliveSeconds, result });
    console.log(line(scenario, load, result, config.keepAliveSeconds));
  }
}

function line(scenario: string, load: number, r: SimResult, keepAlive: number): string {
  const failed = Object.values(r.failed).reduce((a, b) => a + b, 0);
  return [
    scenario.padEnd(14),
    `×${load}`.padEnd(6),
    `ka ${keepAlive}s`.padEnd(8),
    r.policy.padEnd(14),
    `n=${r.requests}`.padEnd(10),
    `mean ${(mean(r.ttftMs) / 1000).toFixed(3)} s`.padEnd(15),
    `p99 ${(quantile(r.ttftMs, 0.99) / 1000).toFixed(2)} s`.padEnd(14),
    `slo ${(100 * slo(r)).toFixed(1)}%`.padEnd(11),
    `cold dram/disk/remote ${r.coldStarts.dram}/${r.coldStarts.disk}/${r.coldStarts.remote}`.padEnd(36),
    `gpu-s ${Math.round(r.gpuSeconds)}`.padEnd(14),
    failed > 0 ? `failed ${JSON.stringify(r.failed)} ` : "",
    `(${r.wallSeconds.toFixed(1)} s, ${r.events} events)`,
  ].join(" ");
}

/** Share of counted requests whose first token came within 1 s (failures count as misses). */
function slo(r: SimResult): number {
  let met = 0;
  for (const t of r.ttftMs) if (t <= 1000) met++;
  return r.requests === 0 ? NaN : met / r.requests;
}

function trace(name: string): TraceRow[] {
  const file = path.join(args.traces!, `azure-llm-2023-${name}.csv`);
  if (!existsSync(file)) throw new Error(`${file} is missing: pass --traces DIR (the Azure LLM inference trace 2023 CSVs)`);
  return readAzureTrace(file);
}

const only = args.only;
const conv = trace("conv");
const code = trace("code");

if (only === undefined || only === "trace") {
  // The trace's own hour, 10 minutes of warm-up.
  for (const [name, rowsOf] of [["azure-conv", conv], ["azure-code", code]] as const) {
    const c = base(128, 1000);
    await compare(name, 1, { ...c, workload: () => azure(rowsOf, 1, { models: c.models, zipfS: 1.0, seed: 7 }), warmupMs: 10 * 60_000, endMs: HOUR });
  }
}

if (only === undefined || only === "keep-alive") {
  // GPU-seconds are mostly what the keep-alive holds: thaw with shorter ones, against the others at 300 s.
  for (const [name, rowsOf] of [["azure-conv", conv], ["azure-code", code]] as const) {
    for (const keepAliveSeconds of [30, 60, 120]) {
      const c = { ...base(128, 1000), keepAliveSeconds };
      await compare(name, 1, { ...c, workload: () => azure(rowsOf, 1, { models: c.models, zipfS: 1.0, seed: 7 }), warmupMs: 10 * 60_000, endMs: HOUR }, ["thaw"]);
    }
  }
}

if (only === undefined || only === "bursty") {
  const c = base(128, 2000);
  await compare("bursty", 1, {
    ...c,
    workload: () =>
      bursty({ models: c.models, zipfS: 0.9, seed: 11, durationMs: 2 * HOUR, backgroundRate: 2, burstRate: 0.05, burstSize: 40, burstSpanMs: 20_000, diurnal: 0, tokens: conv }),
    warmupMs: 20 * 60_000,
    endMs: 2 * HOUR,
  });
}

if (only === undefined || only === "load") {
  // GPU-seconds against load: the conversation trace made denser or sparser, on an ample fleet.
  for (const load of [0.25, 0.5, 1, 2]) {
    const c = base(256, 1000);
    await compare("load-sweep", load, {
      ...c,
      workload: () => azure(conv, load, { models: c.models, zipfS: 1.0, seed: 13 }),
      warmupMs: (10 * 60_000) / load,
      endMs: HOUR / load,
    });
  }
}

if (only === "year") {
  // A year of serverless traffic: 5,000 models on 1,000 agents, a daily cycle and bursts.
  const c = base(1000, 5000);
  await compare("year", 1, {
    ...c,
    workload: () =>
      bursty({ models: c.models, zipfS: 1.0, seed: 17, durationMs: 365 * DAY, backgroundRate: 0.003, burstRate: 0.0001, burstSize: 20, burstSpanMs: 30_000, diurnal: 0.6, tokens: conv }),
    warmupMs: DAY,
    endMs: 365 * DAY,
  });
}

// ─── output ──────────────────────────────────────────────────────────────────────────────────────

const table = [
  "| scenario | load | keep-alive | policy | requests | mean TTFT | p99 TTFT | SLO (TTFT ≤ 1 s) | cold starts DRAM / disk / remote | GPU-seconds | GPU-hours per 1k requests | failed |",
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ...rows.map(({ scenario, load, keepAliveSeconds, result: r }) =>
    [
      scenario,
      `×${load}`,
      `${keepAliveSeconds} s`,
      r.policy,
      r.requests,
      `${(mean(r.ttftMs) / 1000).toFixed(3)} s`,
      `${(quantile(r.ttftMs, 0.99) / 1000).toFixed(2)} s`,
      `${(100 * slo(r)).toFixed(1)}%`,
      `${r.coldStarts.dram} / ${r.coldStarts.disk} / ${r.coldStarts.remote}`,
      Math.round(r.gpuSeconds).toLocaleString("en-US"),
      ((r.gpuSeconds / 3600 / Math.max(1, r.requests)) * 1000).toFixed(1),
      Object.values(r.failed).reduce((a, b) => a + b, 0),
    ].join(" | ").replace(/^/, "| ").concat(" |"),
  ),
].join("\n");
writeFileSync(path.join(args.out!, "results.md"), table + "\n");
const json = rows.map(({ scenario, load, keepAliveSeconds, result: r }) => ({
  scenario,
  load,
  keepAliveSeconds,
  policy: r.policy,
  requests: r.requests,
  completed: r.completed,
  failed: r.failed,
  meanTtftS: mean(r.ttftMs) / 1000,
  p50TtftS: quantile(r.ttftMs, 0.5) / 1000,
  p99TtftS: quantile(r.ttftMs, 0.99) / 1000,
  slo: slo(r),
  coldStarts: r.coldStarts,
  gpuSeconds: r.gpuSeconds,
  gpuByteSeconds: r.gpuByteSeconds,
  evictions: r.evictions,
  simulatedSeconds: r.simulatedSeconds,
  wallSeconds: r.wallSeconds,
  events: r.events,
  // The CDF, thinned to at most 2,000 points.
  cdfS: Array.from({ length: Math.min(2000, r.ttftMs.length) }, (_, i) => r.ttftMs[Math.floor((i * r.ttftMs.length) / Math.min(2000, r.ttftMs.length))] / 1000),
}));
writeFileSync(path.join(args.out!, "results.json"), JSON.stringify(json, null, 1) + "\n");
console.log(`\n${table}\n\nwrote ${path.join(args.out!, "results.md")} and results.json`);

const python = path.resolve(HERE, "../../.venv/bin/python");
try {
  execFileSync(existsSync(python) ? python : "python3", [path.join(HERE, "plot.py"), args.out!], { stdio: "inherit" });
} catch {
  console.log("no plots: matplotlib is not installed (it is in python/requirements-test.txt; npm ci puts it into .venv)");
}
