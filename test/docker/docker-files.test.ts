// The images' compose file and Kubernetes manifests start thaw with command lines that its CLI
// accepts (no Docker engine here: the files are parsed, and every command line is checked by the
// real `thaw` parser through `--help`).
import test from "ava";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";

const run = promisify(execFile);
const THAW = path.resolve("src/cli/thaw.js");

/** Parses YAML documents with Debian's python3-yaml (no YAML parser among our npm dependencies). */
async function loadYaml(file: string): Promise<unknown[]> {
  const script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
  const { stdout } = await run("/usr/bin/python3", ["-c", script, file]);
  return JSON.parse(stdout) as unknown[];
}

async function accepted(t: import("ava").ExecutionContext, args: string[]): Promise<void> {
  const concrete = args.map((a) => a.replace("$(POD_IP)", "10.0.0.7"));
  const { stdout } = await run(process.execPath, [THAW, ...concrete, "--help"]);
  t.regex(stdout, new RegExp(`usage: thaw ${concrete[0]}`), concrete.join(" "));
}

test("compose services run thaw commands the CLI accepts", async (t) => {
  const [compose] = (await loadYaml("docker/compose.yaml")) as [{ services: Record<string, { command: string[] }> }];
  t.deepEqual(Object.keys(compose.services).sort(), ["agent", "converter", "orchestrator"]);
  for (const service of Object.values(compose.services)) await accepted(t, service.command);
});

test("Kubernetes workloads run thaw commands the CLI accepts", async (t) => {
  type Workload = { kind: string; spec?: { template?: { spec: { containers: { args: string[] }[] } } } };
  const docs = (await loadYaml("docker/k8s/thaw.yaml")) as Workload[];
  const workloads = docs.filter((d) => d.kind === "Deployment" || d.kind === "DaemonSet");
  t.is(workloads.length, 3);
  for (const w of workloads) for (const c of w.spec!.template!.spec.containers) await accepted(t, c.args);
});

test("each image's default command is one the CLI accepts", async (t) => {
  const { readFile } = await import("node:fs/promises");
  for (const file of ["docker/Dockerfile", "docker/Dockerfile.cuda"]) {
    const cmd = /^CMD (\[.*\])$/m.exec(await readFile(file, "utf8"));
    t.truthy(cmd, `${file} has a CMD`);
    await accepted(t, JSON.parse(cmd![1]) as string[]);
  }
});
