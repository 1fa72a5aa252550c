// The images, the compose file and the Kubernetes manifests, checked as far as can be done without
// a Docker engine or a cluster: the manifests against Kubernetes' schemas (kubernetes-validate, its
// schemas shipped inside the package, so no network), the Dockerfiles with hadolint, every command
// line against the real `thaw` parser (through `--help`), and the properties a deployment needs
// (readiness that cannot deadlock, a volume for the registry, GPU requests, a disruption budget,
// the internal token from a Secret, no test-only packages in the CPU image).
// kubernetes-validate and hadolint come from python/requirements-test.txt (npm ci puts them into .venv).
import test from "ava";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import path from "node:path";

const run = promisify(execFile);
const THAW = path.resolve("src/cli/thaw.js");
const VENV = path.resolve(".venv/bin");
const MANIFEST = "docker/k8s/thaw.yaml";

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

// Shapes of the manifest this test reads.
interface Container {
  image: string;
  args: string[];
  env?: { name: string; valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } } }[];
  readinessProbe?: { httpGet?: { path: string } };
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  volumeMounts?: { name: string; mountPath: string }[];
}
interface Doc {
  kind: string;
  metadata: { name: string };
  spec?: {
    selector?: Record<string, unknown>;
    publishNotReadyAddresses?: boolean;
    template?: { spec: { containers: Container[]; volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[] } };
    maxUnavailable?: number;
  };
}

const docs = async () => (await loadYaml(MANIFEST)) as Doc[];
const workload = (all: Doc[], name: string) => all.find((d) => d.metadata.name === name && (d.kind === "Deployment" || d.kind === "DaemonSet"))!;

test("compose services run thaw commands the CLI accepts", async (t) => {
  const [compose] = (await loadYaml("docker/compose.yaml")) as [{ services: Record<string, { command: string[] }> }];
  t.deepEqual(Object.keys(compose.services).sort(), ["agent", "converter", "orchestrator"]);
  for (const service of Object.values(compose.services)) await accepted(t, service.command);
});

test("compose: every part requires the internal token, the agent reserves GPUs, the registry is on a volume", async (t) => {
  type Service = { command: string[]; environment: Record<string, string>; volumes?: string[]; deploy?: { resources: { reservations: { devices: { capabilities: string[] }[] } } } };
  const [compose] = (await loadYaml("docker/compose.yaml")) as [{ services: Record<string, Service>; volumes: Record<string, unknown> }];
  for (const [name, s] of Object.entries(compose.services)) t.regex(s.environment.THAW_INTERNAL_TOKEN, /^\$\{THAW_INTERNAL_TOKEN:\?/, name);
  t.deepEqual(compose.services.agent.deploy!.resources.reservations.devices[0].capabilities, ["gpu"]);
  const o = compose.services.orchestrator;
  const stateDir = o.command[o.command.indexOf("--state-dir") + 1];
  const volume = o.volumes!.map((v) => v.split(":")).find(([, at]) => at === stateDir)![0];
  t.true(volume in compose.volumes);
});

test("Kubernetes workloads run thaw commands the CLI accepts", async (t) => {
  const workloads = (await docs()).filter((d) => d.kind === "Deployment" || d.kind === "DaemonSet");
  t.is(workloads.length, 3);
  for (const w of workloads) for (const c of w.spec!.template!.spec.containers) await accepted(t, c.args);
});

test("each image's default command is one the CLI accepts", async (t) => {
  for (const file of ["docker/Dockerfile", "docker/Dockerfile.cuda"]) {
    const cmd = /^CMD (\[.*\])$/m.exec(await readFile(file, "utf8"));
    t.truthy(cmd, `${file} has a CMD`);
    await accepted(t, JSON.parse(cmd![1]) as string[]);
  }
});

const validator = path.join(VENV, "kubernetes-validate");
(existsSync(validator) ? test : test.skip)("the manifests are valid Kubernetes objects (strict schema validation, offline)", async (t) => {
  const { stdout } = await run(validator, ["--strict", MANIFEST]);
  const passed = stdout.split("\n").filter((l) => / passed for resource /.test(l));
  t.is(passed.length, (await docs()).length, stdout);
});

const hadolint = path.join(VENV, "hadolint");
(existsSync(hadolint) ? test : test.skip)("both Dockerfiles pass hadolint", async (t) => {
  const { stdout } = await run(hadolint, ["docker/Dockerfile", "docker/Dockerfile.cuda"]);
  t.is(stdout.trim(), "");
});

test("readiness cannot deadlock: agents heartbeat through a Service that publishes the not-ready orchestrator", async (t) => {
  const all = await docs();
  const orchestrator = workload(all, "thaw-orchestrator").spec!.template!.spec.containers[0];
  t.is(orchestrator.readinessProbe?.httpGet?.path, "/ready"); // not ready until an agent heartbeats
  const agent = workload(all, "thaw-agent").spec!.template!.spec.containers[0];
  const scheduler = agent.args[agent.args.indexOf("--scheduler") + 1].split(":")[0];
  const service = all.find((d) => d.kind === "Service" && d.metadata.name === scheduler)!;
  t.truthy(service, `the agents' --scheduler ${scheduler} is a Service`);
  t.true(service.spec!.publishNotReadyAddresses);
  t.deepEqual(service.spec!.selector, { app: "thaw-orchestrator" });
});

test("the model registry lives on a persistent volume", async (t) => {
  const all = await docs();
  const spec = workload(all, "thaw-orchestrator").spec!.template!.spec;
  const c = spec.containers[0];
  const stateDir = c.args[c.args.indexOf("--state-dir") + 1];
  const mount = c.volumeMounts!.find((m) => m.mountPath === stateDir)!;
  t.truthy(mount, `${stateDir} is mounted`);
  const claim = spec.volumes!.find((v) => v.name === mount.name)!.persistentVolumeClaim!.claimName;
  t.truthy(all.find((d) => d.kind === "PersistentVolumeClaim" && d.metadata.name === claim));
});

test("agents request GPUs, a disruption budget covers them, every part takes the internal token from a Secret, and images name a registry", async (t) => {
  const all = await docs();
  const agent = workload(all, "thaw-agent").spec!.template!.spec.containers[0];
  t.true(Number(agent.resources!.requests!["nvidia.com/gpu"]) >= 1);
  t.is(agent.resources!.requests!["nvidia.com/gpu"], agent.resources!.limits!["nvidia.com/gpu"]);
  const pdb = all.find((d) => d.kind === "PodDisruptionBudget")!;
  t.deepEqual(pdb.spec!.selector, { matchLabels: { app: "thaw-agent" } });
  for (const name of ["thaw-orchestrator", "thaw-converter", "thaw-agent"]) {
    const c = workload(all, name).spec!.template!.spec.containers[0];
    const token = c.env!.find((e) => e.name === "THAW_INTERNAL_TOKEN")!.valueFrom!.secretKeyRef!;
    t.is(token.name, "thaw-secrets", name);
    t.not(token.optional, true, `${name} does not start without the token`);
    t.regex(c.image, /^[a-z0-9.-]+\.[a-z]+\/.+:\d+\.\d+\.\d+$/, `${name}: a registry and a version`);
  }
});

test("the CPU image carries no test-only packages", async (t) => {
  const dockerfile = await readFile("docker/Dockerfile", "utf8");
  const requirements = await readFile("python/requirements-test.txt", "utf8");
  const testOnly = requirements.split("\n").map((l) => l.trim().split(/[=\[<>]/)[0]).filter((n) => n !== "" && !n.startsWith("#"));
  t.true(testOnly.includes("moto") && testOnly.includes("openai"));
  const installs = dockerfile.split("\n").filter((l) => !l.startsWith("#")).join("\n");
  t.notRegex(installs, /setup-system\.sh|requirements-test\.txt|pip install/);
  for (const name of testOnly) t.notRegex(installs, new RegExp(`\\b${name}\\b`), name);
  t.regex(installs, /npm ci --omit=dev/);
  // `COPY . .` must not bring a checkout's test environment along.
  const ignored = (await readFile(".dockerignore", "utf8")).split("\n");
  for (const p of [".venv", "node_modules"]) t.true(ignored.includes(p), p);
});
