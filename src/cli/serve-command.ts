// thaw serve (= npm start): the whole system on one machine — converter, orchestrator (edge on
// :8000), one agent and its engine worker — with a local store under ./.thaw. With no model
// configured it makes the tiny demo model and registers it as "tiny", so
//   curl localhost:8000/v1/chat/completions -d '{"model":"tiny","messages":[{"role":"user","content":"hi"}]}'
// answers on the first try.
import { access, mkdir } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { startAgent, type RunningAgent } from "../agent/start-agent.js";
import converterRoutes, { CONVERTER_ACCESS } from "../converter/routes.js";
import { ModelSpecSchema } from "../gen/thaw/scheduler/v1/scheduler_pb.js";
import { startOrchestrator, type RunningOrchestrator } from "../orchestrator/orchestrator.js";
import { authorize, newToken } from "../shared/auth.js";
import { DEFAULT_HOST, STATE_DIR } from "../shared/defaults.js";
import { startServer, type RunningServer } from "../shared/server.js";
import { openStore } from "../store/open-store.js";
import { makeTinyModel } from "../tiny-model/tiny-model.js";
import { GPU_TIER_OPTIONS, gpuTierFlags, parseSize } from "./agent-command.js";
import { CONNECTION_USAGE, EDGE_PORT, numberFlag, ORCHESTRATOR_OPTIONS, orchestratorFlags } from "./orchestrator-command.js";
import { TOKEN_USAGE, serverAdminToken } from "./credentials.js";
import { exitAfter, stopLine, untilStopped } from "./until-signal.js";

const USAGE = `usage: thaw serve [options]

Runs the whole system on this machine: the converter, the orchestrator (OpenAI API and
SchedulerService on one port), one agent and its engine worker, with a local checkpoint store.
With no model registered and no --model, makes the tiny demo model and registers it as "tiny".
  --host HOST                 interface of the edge (default ${DEFAULT_HOST}; THAW_HOST)
  --port PORT                 port of the edge (default ${EDGE_PORT})
  --state-dir DIR             state: store, agent tiers, model registry (default ${STATE_DIR}; THAW_HOME)
  --store URL                 checkpoint store (default <state-dir>/store; s3:// and az:// work too)
  --model ID[=SOURCE]         serve this model (repeatable; SOURCE: a Hub id or a local folder; default ID)
  --api-key KEY               API key required on /v1/* (repeatable; also THAW_API_KEYS); grants /v1/* only
${TOKEN_USAGE}; when none is given, one is
                              made and kept in <state-dir>/admin-token, where thaw models/agents/explain find it
                              The internal token, when not given, is made afresh for this run: every part runs here
  --engines LIST              agent engines: auto (one per GPU, else CPU), cpu, cuda:0, … (default auto)
  --python PATH               Python with torch for the engine worker (default THAW_PYTHON, else python3 with torch)
  --dram-bytes SIZE           the agent's pinned pool (default 1G)
  --disk-bytes SIZE           the agent's disk tier budget (default 64G)
  --gpu-bytes SIZE            the agent's GPU tier budget per device: weights plus a KV floor per
                              resident model (default: what the worker reports; CPU: the pool)
  --kv-floor-bytes SIZE       KV cache guaranteed to each resident model (default 1G on a GPU, 32M on CPU)
  --kv-pool-bytes SIZE        KV cache pool each engine worker shares between its models (default: the worker's)
  --converter-port PORT       port of the converter (default: a free one)
  --agent-port PORT           port of the agent (default: a free one)
  Scheduler flags of 'thaw orchestrator' apply too: --alpha … --epsilon, --keep-alive, --max-queue,
  --max-inflight-per-agent, --max-attempts, --heartbeat-interval, --agent-expiry, --agent-wait,
  --progress-timeout, --shutdown-grace; and its connection bounds, on the edge's port:
${CONNECTION_USAGE}`;

export const TINY_MODEL_ID = "tiny";

export interface ServeOptions {
  host?: string;
  port?: number;
  stateDir: string;
  store?: string;
  /** Models to serve (registered unless already); none and an empty registry: the tiny model. */
  models?: { id: string; source?: string }[];
  apiKeys?: string[];
  engines?: string;
  python?: string;
  dramBytes?: number;
  diskBytes?: number;
  /** The agent's GPU tier budget per device, KV floor per model and KV pool per worker (see AgentOptions). */
  gpuBytes?: number;
  kvFloorBytes?: number;
  kvPoolBytes?: number;
  engineArgs?: string[];
  converterPort?: number;
  agentPort?: number;
  /** Secret of the internal RPCs (heartbeats, agent, converter); default: made afresh, since every part runs here. */
  token?: string;
  /** The operators' secret (model registry, placement, unload, delete); absent: those RPCs are refused. */
  adminToken?: string;
  /** Anything else startOrchestrator takes (weights, keep-alive, queue bounds …). */
  orchestrator?: Partial<Parameters<typeof startOrchestrator>[0]>;
  log?: (line: string) => void;
}

export interface RunningSystem {
  readonly url: string;
  readonly orchestrator: RunningOrchestrator;
  readonly agent: RunningAgent;
  readonly converter: RunningServer;
  /** Closes the orchestrator first (running requests get `graceMs` to finish, then end in-band), then the agent and the converter. */
  close(graceMs?: number): Promise<void>;
}

/** Starts converter, orchestrator and agent in this process. */
export async function startSystem(options: ServeOptions): Promise<RunningSystem> {
  const log = options.log ?? ((line: string) => process.stderr.write(`thaw serve: ${line}\n`));
  const stateDir = path.resolve(options.stateDir);
  await mkdir(stateDir, { recursive: true });
  const store = await openStore(options.store ?? path.join(stateDir, "store"));
  const modelsDir = path.join(stateDir, "models");

  // Local sources the converter may read: the demo model's folder and every --model folder.
  const models = (options.models ?? []).map((m) => ({ id: m.id, source: isFolder(m.source) ? path.resolve(m.source!) : m.source }));
  const localRoots = [modelsDir, ...models.filter((m) => isFolder(m.source)).map((m) => path.dirname(m.source!))];
  // Every part runs in this process: the internal token never has to leave it.
  const token = options.token ?? newToken();
  const credentials = { internalToken: token, adminToken: options.adminToken };
  const closers: (() => Promise<void>)[] = [];
  try {
    const converter = await startServer({
      routes: converterRoutes({ store, localRoots }),
      host: "127.0.0.1",
      port: options.converterPort ?? 0,
      interceptors: [authorize(credentials, CONVERTER_ACCESS)],
    });
    closers.push(() => converter.close());
    const converterAddress = `127.0.0.1:${converter.port}`;

    const orchestrator = await startOrchestrator({
      ...options.orchestrator,
      host: options.host,
      port: options.port ?? EDGE_PORT,
      stateDir,
      converter: converterAddress,
      token,
      adminToken: options.adminToken,
      apiKeys: options.apiKeys,
      models,
      log: (line) => log(line),
    });
    closers.push(() => orchestrator.close());
    if (orchestrator.scheduler.listModels().length === 0) {
      const dir = path.join(modelsDir, TINY_MODEL_ID);
      if (!(await exists(path.join(dir, "config.json")))) await makeTinyModel(dir);
      await orchestrator.scheduler.registerModel(create(ModelSpecSchema, { id: TINY_MODEL_ID, source: dir }));
      log(`no model configured: registered the tiny demo model as "${TINY_MODEL_ID}" (${dir})`);
    }

    const agent = await startAgent({
      dir: path.join(stateDir, "agent"),
      host: "127.0.0.1",
      port: options.agentPort ?? 0,
      store,
      converter: converterAddress,
      scheduler: `127.0.0.1:${orchestrator.port}`,
      token,
      adminToken: options.adminToken,
      engines: options.engines,
      python: options.python,
      dramBytes: options.dramBytes,
      diskBytes: options.diskBytes,
      gpuBytes: options.gpuBytes,
      kvFloorBytes: options.kvFloorBytes,
      kvPoolBytes: options.kvPoolBytes,
      engineArgs: options.engineArgs,
      heartbeatIntervalMs: options.orchestrator?.heartbeatIntervalMs,
      log: (line) => log(`agent: ${line}`),
    });
    closers.push(() => agent.close());
    return {
      url: orchestrator.url,
      orchestrator,
      agent,
      converter,
      async close(graceMs = 0) {
        // The edge first: its streams end cleanly while the agent still serves them.
        await orchestrator.close(graceMs);
        await agent.close();
        await converter.close();
      },
    };
  } catch (err) {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    throw err;
  }
}

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      ...ORCHESTRATOR_OPTIONS,
      store: { type: "string" },
      engines: { type: "string", default: "auto" },
      python: { type: "string" },
      "dram-bytes": { type: "string" },
      "disk-bytes": { type: "string" },
      ...GPU_TIER_OPTIONS,
      "converter-port": { type: "string" },
      "agent-port": { type: "string" },
    },
  });
  if (values.help) return void process.stdout.write(USAGE + "\n");
  const flags = orchestratorFlags(values);
  const admin = await serverAdminToken(values, flags.stateDir);
  const system = await startSystem({
    host: flags.host,
    port: flags.port,
    stateDir: flags.stateDir,
    store: values.store,
    models: flags.models,
    apiKeys: flags.apiKeys,
    engines: values.engines,
    python: values.python,
    dramBytes: values["dram-bytes"] === undefined ? undefined : parseSize(values["dram-bytes"], "--dram-bytes"),
    diskBytes: values["disk-bytes"] === undefined ? undefined : parseSize(values["disk-bytes"], "--disk-bytes"),
    ...gpuTierFlags(values),
    converterPort: numberFlag(values["converter-port"], "converter-port", { integer: true }),
    agentPort: numberFlag(values["agent-port"], "agent-port", { integer: true }),
    token: flags.token,
    adminToken: admin.token,
    orchestrator: {
      weights: flags.weights,
      heartbeatIntervalMs: flags.heartbeatIntervalMs,
      agentExpiryMs: flags.agentExpiryMs,
      keepAliveSeconds: flags.keepAliveSeconds,
      maxInflightPerAgent: flags.maxInflightPerAgent,
      maxQueue: flags.maxQueue,
      maxAttempts: flags.maxAttempts,
      agentWaitMs: flags.agentWaitMs,
      progressTimeoutMs: flags.progressTimeoutMs,
      connectionLimits: flags.connectionLimits,
    },
  });
  const model = system.orchestrator.scheduler.listModels()[0]?.spec?.id ?? TINY_MODEL_ID;
  const auth = flags.apiKeys.length > 0 ? ` -H "Authorization: Bearer $KEY"` : "";
  process.stderr.write(
    `thaw serve: OpenAI API on ${system.url}/v1 (models: ${system.orchestrator.scheduler.listModels().map((m) => m.spec?.id).join(", ")})\n` +
      `  try: curl ${system.url}/v1/chat/completions${auth} -d '{"model":"${model}","messages":[{"role":"user","content":"hi"}]}'\n` +
      (admin.file ? `  operators: npx thaw models list (the admin token is in ${admin.file})\n` : ""),
  );
  const reason = await untilStopped();
  // After an error nothing caught, the state is unknown: running requests end at once.
  const grace = reason.fatal === undefined ? flags.shutdownGraceMs : 0;
  process.stderr.write(stopLine("thaw serve", reason, `shutting down (running requests may finish for up to ${grace} ms)`));
  exitAfter(reason, grace + 10_000);
  await system.close(grace);
}

function isFolder(source: string | undefined): boolean {
  return source !== undefined && (source.startsWith("/") || source.startsWith("./") || source.startsWith("../") || source === ".");
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}
