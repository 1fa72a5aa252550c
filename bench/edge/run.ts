// bench/edge: what the edge and the scheduler add over calling an agent's Infer directly, and how
// many concurrent SSE streams the edge holds without errors. One command:
//   npx tsx bench/edge/run.ts [--requests 2000] [--levels 500,1000,2000,4000,6000] [--stream-seconds 5]
// (--requests 0 skips the latency part.)
// Three processes: this driver (the clients), the orchestrator, and a scripted agent (no engine,
// so only the path through thaw is measured). Latency: the same 16-token completion, requests one
// at a time and interleaved — (a) AgentService.Infer over gRPC straight to the agent, (b) the
// edge's POST /v1/completions streamed as SSE over HTTP/1.1 keep-alive, (c) the edge without
// streaming, (d) SchedulerService.Completion over gRPC. Concurrency: K clients each hold one SSE
// stream of 16 tokens spread over --stream-seconds; a level passes when every stream ends with
// [DONE] and all its tokens.
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import os from "node:os";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AgentService } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { SchedulerService } from "../../src/gen/thaw/scheduler/v1/scheduler_service_pb.js";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "2000" },
    levels: { type: "string", default: "500,1000,2000,4000,6000" },
    "stream-seconds": { type: "string", default: "5" },
  },
});
const REQUESTS = Number(values.requests);
const LEVELS = values.levels!.split(",").map(Number);
const STREAM_SECONDS = Number(values["stream-seconds"]);
const TOKENS = 16;

const children: ChildProcess[] = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

/** Starts a bench process and resolves with the port it prints. */
function startProcess(script: string, args: string[] = []): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /port (\d+)/.exec(out);
      if (m) resolve({ port: Number(m[1]), child });
    });
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: Infinity });

/** POSTs JSON and reads the whole body; for SSE, checks it ends with [DONE] and counts the events. */
function post(port: number, path: string, body: object, agent: http.Agent = keepAlive): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({ host: "127.0.0.1", port, path, method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(data) } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(data);
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summary(samples: number[]): { p50: number; p99: number; mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

const ms = (x: number) => x.toFixed(3);

async function latency(agentPort: number, edgePort: number, tokens: number): Promise<void> {
  const agent = createClient(AgentService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${agentPort}` }));
  const scheduler = createClient(SchedulerService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${edgePort}` }));
  const ref = { modelId: "m", revision: "main" };
  const runs: Record<string, () => Promise<void>> = {
    "agent Infer (gRPC, direct)": async () => {
      let n = 0;
      for await (const r of agent.infer({ ref, prompt: { case: "text", value: "hello" }, sampling: { maxTokens: tokens } })) n += r.tokens.length;
      if (n !== tokens) throw new Error(`direct: ${n} tokens`);
    },
    "edge /v1/completions, stream (SSE)": async () => {
      const r = await post(edgePort, "/v1/completions", { model: "m", prompt: "hello", max_tokens: tokens, stream: true });
      if (r.status !== 200 || !r.text.endsWith("data: [DONE]\n\n")) throw new Error(`edge stream: ${r.status} ${r.text.slice(0, 200)}`);
    },
    "edge /v1/completions, no stream": async () => {
      const r = await post(edgePort, "/v1/completions", { model: "m", prompt: "hello", max_tokens: tokens });
      if (r.status !== 200) throw new Error(`edge: ${r.status} ${r.text.slice(0, 200)}`);
    },
    "SchedulerService.Completion (gRPC)": async () => {
      let n = 0;
      for await (const r of scheduler.completion({ model: "m", prompt: { case: "text", value: "hello" }, sampling: { maxTokens: tokens } })) n += r.tokens.length;
      if (n !== tokens) throw new Error(`scheduler: ${n} tokens`);
    },
  };
  const names = Object.keys(runs);
  const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let i = 0; i < 300; i++) for (const n of names) await runs[n](); // warm-up: JIT, connections
  for (let i = 0; i < REQUESTS; i++) {
    for (const n of names) {
      const t0 = process.hrtime.bigint();
      await runs[n]();
      samples[n].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const base = summary(samples[names[0]]);
  console.log(`\nLatency of one ${tokens}-token completion, ${REQUESTS} requests per path, interleaved (ms):`);
  console.log("| path | p50 | p99 | mean | added p50 | added p99 |");
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const n of names) {
    const s = summary(samples[n]);
    const added = n === names[0] ? ["—", "—"] : [ms(s.p50 - base.p50), ms(s.p99 - base.p99)];
    console.log(`| ${n} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.mean)} | ${added[0]} | ${added[1]} |`);
  }
}

/** K concurrent SSE streams, each on its own connection; returns how many ended cleanly. */
async function concurrency(edgePort: number, k: number): Promise<{ ok: number; errors: string[]; seconds: number; peak: number }> {
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const started = Date.now();
  const errors: string[] = [];
  let ok = 0;
  let open = 0;
  let peak = 0;
  const rampMs = Math.max(200, k / 4); // connections open over k/4 ms (4000 → 1 s), as clients would arrive
  await Promise.all(
    Array.from({ length: k }, async (_, i) => {
      await new Promise((r) => setTimeout(r, (i / k) * rampMs));
      open++;
      peak = Math.max(peak, open);
      try {
        const r = await Promise.race([
          post(edgePort, "/v1/completions", { model: "m", prompt: "hello", max_tokens: TOKENS, stream: true }, agent),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error("stream not done after 120 s")), 120_000).unref()),
        ]);
        const tokens = r.text.split("\n\n").filter((e) => e.startsWith('data: {"id"')).length;
        if (r.status === 200 && r.text.endsWith("data: [DONE]\n\n") && tokens === TOKENS) ok++;
        else errors.push(`status ${r.status}, ${tokens} tokens: ${r.text.slice(-200)}`);
      } catch (err) {
        errors.push((err as Error).message);
      } finally {
        open--;
      }
    }),
  );
  agent.destroy();
  return { ok, errors, seconds: (Date.now() - started) / 1000, peak };
}

async function main(): Promise<void> {
  console.log(`bench/edge on ${os.cpus().length} cores (${os.cpus()[0]?.model}), Node ${process.version}`);

  // Phase 1: latency against an agent that answers at once.
  const orchestrator = await startProcess("bench/edge/orchestrator-process.ts");
  const edgeUrl = `http://127.0.0.1:${orchestrator.port}`;
  let agent = await startProcess("bench/edge/agent-process.ts", ["--scheduler", edgeUrl]);
  if (REQUESTS > 0) for (const tokens of [1, TOKENS]) await latency(agent.port, orchestrator.port, tokens);
  await stop(agent.child);

  // Phase 2: concurrent streams against an agent that spreads each reply over STREAM_SECONDS.
  const delay = Math.round((STREAM_SECONDS * 1000) / TOKENS);
  agent = await startProcess("bench/edge/agent-process.ts", ["--scheduler", edgeUrl, "--token-delay", String(delay), "--id", "bench-agent-slow"]);
  await new Promise((r) => setTimeout(r, 4000)); // the fast agent expires (3.5 s without heartbeats)
  console.log(`\nConcurrent SSE streams (${TOKENS} tokens over ${STREAM_SECONDS} s each, one HTTP/1.1 connection per stream):`);
  console.log("| streams | ok | errors | peak open at once | wall s (ideal ≈ " + STREAM_SECONDS + " + ramp) |");
  console.log("|---:|---:|---:|---:|---:|");
  let best = 0;
  for (const k of LEVELS) {
    const r = await concurrency(orchestrator.port, k);
    console.log(`| ${k} | ${r.ok} | ${r.errors.length} | ${r.peak} | ${r.seconds.toFixed(1)} |`);
    if (r.errors.length > 0) {
      console.log(`  first error: ${r.errors[0]}`);
      break;
    }
    best = k;
  }
  console.log(`\nMost concurrent streams held without errors: ${best}`);
  await stop(agent.child);
  await stop(orchestrator.child);
}

await main();
