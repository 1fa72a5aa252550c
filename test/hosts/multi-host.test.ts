// thaw on several hosts: Linux network namespaces made by this test (test/hosts/network.ts), each
// with its own address on one bridge — the orchestrator on one, the converter on another, the S3
// store (moto) on a third, three agents (real `thaw agent` processes with CPU engine workers and the tiny
// model) on three more — all with the internal token on, as a deployment runs. Links are cut at
// the switch as a failing cable or host would be: no RST, packets just vanish.
// Skipped (and counted) where `ip netns` is not available; everything it made is removed
// afterwards, also when a test fails.
import test from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { AgentService } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { ConverterService } from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { ThawClient } from "../../src/client/thaw-client.js";
import { grpcClient } from "../../src/shared/clients.js";
import { makeTinyModel } from "../../src/tiny-model/tiny-model.js";
import { startS3Server, type S3TestServer } from "../fixtures/object-servers.js";
import { tempDirs } from "../fixtures/temp-dir.js";
import { netnsUnavailable, TestNetwork, type Host } from "./network.js";

const unavailable = netnsUnavailable();
const serial = unavailable === undefined ? test.serial : test.serial.skip;
if (unavailable !== undefined) console.log(`# multi-host test skipped: ${unavailable}`);

const TOKEN = "multi-host-internal-token";
const ADMIN = "multi-host-admin-token";
const HEARTBEAT_MS = 1000;
const dirs = tempDirs("thaw-hosts-");
const logs: string[] = [];
const children = new Set<ChildProcess>();
let net: TestNetwork | undefined;
let s3: S3TestServer | undefined;
let orchestratorHost: Host;
let storeHost: Host;
let converterHost: Host;
const agentHosts: Host[] = [];
let orchestrator: ChildProcess | undefined;
let dir: string;
let thaw: ThawClient;
const ref = { modelId: "tiny", revision: "main" };
/** The host that served the first request (set by the first test). */
let firstHolder: string | undefined;

function run(host: Host, name: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(net!.exec(host)[0], [...net!.exec(host).slice(1), process.execPath, path.resolve("src/cli/thaw.js"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, THAW_INTERNAL_TOKEN: TOKEN, ...env },
  });
  child.stdout!.on("data", (d) => logs.push(`${name}: ${d}`));
  child.stderr!.on("data", (d) => logs.push(`${name}: ${d}`));
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

function startOrchestrator(): ChildProcess {
  const a = orchestratorHost.address;
  return run(
    orchestratorHost,
    "orchestrator",
    ["orchestrator", "--host", a, "--port", "8000", "--converter", `${converterHost.address}:50061`, "--state-dir", path.join(dir, "orchestrator"), "--heartbeat-interval", String(HEARTBEAT_MS), "--agent-expiry", String(3 * HEARTBEAT_MS), "--model", `tiny=${path.join(dir, "models/tiny")}`],
    { THAW_ADMIN_TOKEN: ADMIN },
  );
}

async function until<T>(what: string, get: () => Promise<T | undefined>, ms = 90_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The agents the orchestrator lists as live, by id. */
async function liveAgents(): Promise<Map<string, string>> {
  const listed = await thaw.listAgents();
  return new Map(listed.filter((a) => !a.expired && a.status !== undefined).map((a) => [a.status!.agentId, a.status!.address]));
}

const agentClient = (h: Host) => grpcClient(AgentService, `${h.address}:50071`, { token: TOKEN });

async function chunkNames(): Promise<string[]> {
  const converter = grpcClient(ConverterService, `${converterHost.address}:50061`, { token: TOKEN });
  const index = (await converter.getCheckpoint({ ref })).index!;
  return index.chunks.map((c) => c.fileName);
}

test.before(async () => {
  if (unavailable !== undefined) return;
  dir = await dirs.make();
  await makeTinyModel(path.join(dir, "models/tiny"));
  net = TestNetwork.create();
  orchestratorHost = net.addHost("orch");
  converterHost = net.addHost("conv");
  storeHost = net.addHost("store");
  for (const name of ["h1", "h2", "h3"]) agentHosts.push(net.addHost(name));

  s3 = await startS3Server({ host: storeHost.address, prefix: net.exec(storeHost) });
  await new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: s3 }).send(new CreateBucketCommand({ Bucket: "thaw" }));
  const s3env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, THAW_S3_ENDPOINT: s3.endpoint };
  run(converterHost, "converter", ["converter", "--host", converterHost.address, "--port", "50061", "--store", "s3://thaw/checkpoints", "--allow-local", path.join(dir, "models")], s3env);
  orchestrator = startOrchestrator();
  thaw = new ThawClient({ baseUrl: `http://${orchestratorHost.address}:8000`, token: ADMIN });
  for (const h of agentHosts) {
    run(h, h.name, [
      "agent", "--host", h.address, "--port", "50071", "--agent-id", h.name, "--dir", path.join(dir, h.name),
      "--store", "s3://thaw/checkpoints", "--converter", `${converterHost.address}:50061`, "--scheduler", `${orchestratorHost.address}:8000`,
      "--engines", "cpu", "--python", process.env.THAW_PYTHON ?? "/usr/bin/python3",
      "--dram-bytes", "64M", "--disk-bytes", "1G", "--engine-arg=--threads=1",
    ], s3env);
  }
  await until("three agents with warm engines", async () => {
    const listed = await thaw.listAgents();
    const warm = listed.filter((a) => !a.expired && a.status!.engines.length > 0 && a.status!.engines.every((e) => e.state === 2));
    return warm.length === 3 ? warm : undefined;
  }, 180_000);
});

test.after.always(async () => {
  const exited = [...children].map((c) => new Promise((r) => c.once("exit", r)));
  for (const c of children) c.kill("SIGKILL");
  await Promise.race([Promise.all(exited), new Promise((r) => setTimeout(r, 5000))]);
  await s3?.stop();
  net?.destroy();
  await dirs.cleanup();
});

test.afterEach.always((t) => {
  if (!t.passed) t.log(logs.join("").slice(-20_000));
});

serial("placement across hosts: each agent heartbeats from its own address, and a request is served on one of them", async (t) => {
  const live = await liveAgents();
  t.deepEqual([...live.keys()].sort(), ["h1", "h2", "h3"]);
  t.deepEqual([...live.values()].sort(), agentHosts.map((h) => `${h.address}:50071`).sort());
  const done = await thaw.chatText("tiny", [{ role: "user", content: "hi" }], { maxTokens: 4 });
  t.true(done.usage.completionTokens > 0);
  const served = done.agentIds[0];
  t.true(live.has(served));
  firstHolder = served;
  // That host now holds it on its engine; placement prefers it over the two cold hosts.
  const explained = await until("the warm host to lead", async () => {
    const e = await thaw.explainPlacement("tiny");
    return e.scores.find((s) => s.chosen)?.agentId === served && e.scores.find((s) => s.chosen)!.cacheLevel === 0 ? e : undefined;
  });
  t.is(explained.scores.length, 3);
  t.true(explained.scores.filter((s) => !s.chosen).every((s) => s.cacheLevel > 0));
});

serial("chunks come from a peer agent on another host", async (t) => {
  const holder = agentHosts.find((h) => h.name === firstHolder)!;
  const other = agentHosts.find((h) => h !== holder)!;
  const sources = new Set<string>();
  for await (const r of agentClient(other).downloadChunks({ ref, fileNames: await chunkNames(), peers: [`${holder.address}:50071`] })) {
    if (r.source !== "") sources.add(r.source);
  }
  t.true([...sources].some((s) => s.includes(holder.address)), `sources: ${[...sources].join(", ")}`);
});

serial("a host cut off from the store but not from its peers still loads from them", async (t) => {
  // The index, which every chunk is checked against, comes from the origin only (here the converter,
  // on a host of its own); the chunks come from the peer.
  const holder = agentHosts.find((h) => h.name === firstHolder)!;
  const isolated = agentHosts.filter((h) => h !== holder)[1];
  net!.partition(isolated, storeHost.address);
  try {
    const sources = new Set<string>();
    for await (const r of agentClient(isolated).downloadChunks({ ref, fileNames: await chunkNames(), peers: [`${holder.address}:50071`] })) {
      if (r.source !== "") sources.add(r.source);
    }
    t.true([...sources].every((s) => s.includes(holder.address)), `sources: ${[...sources].join(", ")}`);
    let ready = false;
    for await (const p of agentClient(isolated).loadModel({ ref, peers: [`${holder.address}:50071`] })) ready ||= p.ready;
    t.true(ready);
    const status = (await agentClient(isolated).getStatus({})).status!;
    t.is(status.models.find((m) => m.ref?.modelId === "tiny")?.tier, Tier.GPU);
  } finally {
    net!.heal(isolated, storeHost.address);
  }
});

serial("a link cut mid-stream: the client gets an in-band error, the next request is served by another host, and the host rejoins once its link is back", async (t) => {
  const victimId = (await thaw.explainPlacement("tiny")).scores.find((s) => s.chosen)!.agentId;
  const victim = agentHosts.find((h) => h.name === victimId)!;
  const res = await fetch(`http://${orchestratorHost.address}:8000/v1/completions`, {
    method: "POST",
    body: JSON.stringify({ model: "tiny", prompt: "Once upon a time", max_tokens: 1900, ignore_eos: true, temperature: 0, stream: true }),
  });
  t.is(res.status, 200);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let cut = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      if (!cut && text.split("\n\n").length > 4) {
        cut = true;
        net!.cut(victim);
      }
    }
    const events = text.split("\n\n").filter((e) => e !== "");
    t.true(cut);
    t.is(events.at(-1), "data: [DONE]");
    const error = JSON.parse(events.at(-2)!.slice("data: ".length));
    t.is(error.error.type, "server_error");
    t.regex(error.error.message, new RegExp(`agent ${victimId} failed while generating: agent ${victimId} stopped heartbeating`));
    t.false(events.some((e) => e.includes('"finish_reason":"length"')));

    const next = await thaw.chatText("tiny", [{ role: "user", content: "hi" }], { maxTokens: 4 });
    t.not(next.agentIds[0], victimId);
  } finally {
    net!.restore(victim);
  }
  // Back: heartbeats resume, the suspicion clears on a probe, and placement may use it again.
  await until(`${victimId} to be placeable again`, async () => {
    const s = (await thaw.explainPlacement("tiny")).scores.find((x) => x.agentId === victimId);
    return s !== undefined && s.ineligibleReason === "" ? s : undefined;
  }, 60_000);
  t.pass();
});

serial("a restarted orchestrator knows every agent again within two heartbeats, and serves", async (t) => {
  const old = orchestrator!;
  const gone = new Promise((r) => old.once("exit", r));
  old.kill("SIGTERM");
  await gone;
  orchestrator = startOrchestrator();
  // Ready to answer (its registry and port are back), then count heartbeats.
  await until("the orchestrator to answer", async () => ((await fetch(`http://${orchestratorHost.address}:8000/health`)).ok ? true : undefined), 60_000);
  const answered = Date.now();
  await until("every agent known again", async () => ((await liveAgents()).size === 3 ? true : undefined), 30_000);
  const ms = Date.now() - answered;
  // Two heartbeat intervals, and a second for the proof each agent gives and a loaded machine.
  t.true(ms <= 2 * HEARTBEAT_MS + 1000, `known again after ${ms} ms`);
  const done = await thaw.chatText("tiny", [{ role: "user", content: "again" }], { maxTokens: 4 });
  t.true(done.usage.completionTokens > 0);
});

