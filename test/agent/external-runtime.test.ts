// External runtimes are tied to the agent's life: the server and whatever it starts run in a process
// group of their own (runtime-guardian.js) that is stopped whole when the runtime is stopped, and
// when the agent dies, even by SIGKILL. Real processes; a runtime that starts a helper of its own.
import test from "ava";
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { ExternalRuntime } from "../../src/agent/external-runtime.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const SERVER = path.join(here, "fixtures/runtime-with-helper.mjs");

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Polls until none of `pids` is alive (another process's state is only observable from outside). */
async function gone(pids: number[], ms = 15_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (pids.some(alive)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

function pidsIn(lines: string[]): number[] {
  const m = lines.map((l) => /pids (\d+) (\d+)/.exec(l)).find((x) => x !== null);
  if (!m) throw new Error(`no pids line in ${JSON.stringify(lines)}`);
  return [Number(m[1]), Number(m[2])];
}

test("stopping a runtime stops every process it started", async (t) => {
  const lines: string[] = [];
  const runtime = new ExternalRuntime({ modelId: "m", command: [process.execPath, SERVER, "{port}"], startTimeoutMs: 20_000 }, (l) => lines.push(l));
  t.teardown(() => runtime.stop());
  await runtime.start();
  const pids = pidsIn(lines);
  t.true(pids.every(alive));
  t.true(await runtime.stop());
  t.true(await gone(pids), "the server and its helper are gone");
});

test("an agent killed with SIGKILL takes its runtimes with it, helpers included", async (t) => {
  const holder = spawn(process.execPath, ["--import=tsx", path.join(here, "fixtures/external-runtime-holder.ts")], { stdio: ["ignore", "pipe", "inherit"] });
  t.teardown(() => holder.kill("SIGKILL"));
  const lines: string[] = [];
  for await (const line of createInterface({ input: holder.stdout! })) {
    lines.push(line);
    if (line === "healthy") break;
  }
  const pids = pidsIn(lines);
  t.true(pids.every(alive));
  holder.kill("SIGKILL");
  t.true(await gone(pids), "the server and its helper did not outlive the agent");
});
