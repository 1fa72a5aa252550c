// thaw agent: runs the node agent (AgentService, tiered cache, engine workers) until SIGINT/SIGTERM.
import { parseArgs } from "node:util";
import { ADMIN_TOKEN, DEFAULT_HOST, DEFAULT_STORE, PORTS, STATE_DIR } from "../shared/defaults.js";
import { defaultAgentDir, startAgent } from "../agent/start-agent.js";
import type { ExternalModelConfig } from "../agent/external-runtime.js";
import { TOKEN_OPTIONS, TOKEN_USAGE, internalToken } from "./credentials.js";
import { exitAfter, stopLine, untilStopped } from "./until-signal.js";

const USAGE = `usage: thaw agent [options]

Serves thaw.agent.v1.AgentService and /metrics on one port, keeps the tiered model cache
(GPU engines, pinned DRAM pool, local disk) and supervises the engine workers.
  --host HOST              interface to bind (default ${DEFAULT_HOST}; THAW_HOST)
  --port PORT              port (default ${PORTS.agent}; 0 picks a free one)
  --advertise HOST:PORT    address peers and the scheduler use (default host:port)
  --dir DIR                state folder: disk tier, agent id, sockets (default ${defaultAgentDir(STATE_DIR)})
  --agent-id ID            agent id (default: made once, kept in DIR/agent-id)
  --store URL              checkpoint store to fetch chunks from: folder, s3://, az:// (default ${DEFAULT_STORE}; "" for none)
  --converter HOST:PORT    converter to fetch chunks from (ConverterService.ReadChunk)
  --peer HOST:PORT         peer agent asked for chunks before the origin (repeatable)
  --scheduler HOST:PORT    scheduler to send heartbeats to
  --disk-bytes SIZE        disk tier budget (default 64G; K, M, G, T suffixes)
  --dram-bytes SIZE        pinned pool size, allocated and pre-faulted at start (default 1G; 0 for none)
  --engines LIST           auto (one per GPU, else one on CPU), none, or devices: cpu, cuda:0, cpu,cpu (default auto)
  --python PATH            Python with torch for the engine workers (default THAW_PYTHON, else python3 that has torch)
  --engine-arg ARG         extra argument for every engine worker (repeatable, e.g. --engine-arg=--threads=2)
  --gpu-bytes SIZE         GPU tier budget of each device: resident models' weights plus one KV floor
                           each (default: what the worker reports weights may use; CPU engine: the
                           --dram-bytes pool, since it serves from it)
  --kv-floor-bytes SIZE    KV cache guaranteed to each resident model, held in the device budget
                           (default 1G on a GPU, 32M on CPU; --kv-cache-bytes is the old name)
  --kv-pool-bytes SIZE     KV cache pool each engine worker shares between its models (default: the worker's)
  --download-concurrency N chunks fetched at once (default 4)
  --external MODEL=CMD     serve MODEL with an external OpenAI-compatible server started with CMD,
                           "{port}" in CMD becomes its port (repeatable), e.g.
                           --external 'llama=vllm serve meta-llama/Llama-3.1-8B --port {port}'
  --allow-launch           let LoadModel calls name a command to start (ModelSpec.launch_command from
                           the scheduler, registered by an operator with the admin token)
${TOKEN_USAGE}
Every call needs the internal or the admin token (when no internal token is set, the agent listens
on loopback only and internal calls need none). Peers a call names are fetched from only once they
proved they hold the same internal token.
Environment: THAW_INTERNAL_TOKEN, THAW_ADMIN_TOKEN, THAW_PYTHON.`;

/** "64G", "512M", "1GiB", "4096" → bytes. */
export function parseSize(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(text);
  if (m === null) throw new TypeError(`${flag}: ${JSON.stringify(text)} is not a size (e.g. 512M, 64G)`);
  const scale = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase() as "" | "k" | "m" | "g" | "t"];
  return Math.round(Number(m[1]) * scale);
}

/** Splits a command line on whitespace, honouring single and double quotes. */
export function splitCommand(command: string): string[] {
  const out: string[] = [];
  let current = "";
  let quote: string | undefined;
  let any = false;
  for (const ch of command) {
    if (quote !== undefined) {
      if (ch === quote) quote = undefined;
      else current += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      any = true;
    } else if (/\s/.test(ch)) {
      if (current !== "" || any) out.push(current);
      current = "";
      any = false;
    } else {
      current += ch;
    }
  }
  if (quote !== undefined) throw new TypeError(`unbalanced quote in ${JSON.stringify(command)}`);
  if (current !== "" || any) out.push(current);
  return out;
}

function external(spec: string): ExternalModelConfig {
  const eq = spec.indexOf("=");
  if (eq <= 0) throw new TypeError(`--external ${JSON.stringify(spec)}: expected MODEL=COMMAND`);
  const command = splitCommand(spec.slice(eq + 1));
  if (command.length === 0) throw new TypeError(`--external ${JSON.stringify(spec)}: the command is empty`);
  const [modelId, revision] = spec.slice(0, eq).split("@");
  return { modelId, revision, command };
}

const optionalSize = (text: string | undefined, flag: string): number | undefined => (text === undefined ? undefined : parseSize(text, flag));

/** --gpu-bytes, --kv-floor-bytes (or its old name --kv-cache-bytes) and --kv-pool-bytes, shared with `thaw serve`. */
export function gpuTierFlags(values: {
  "gpu-bytes"?: string;
  "kv-floor-bytes"?: string;
  "kv-cache-bytes"?: string;
  "kv-pool-bytes"?: string;
}): { gpuBytes?: number; kvFloorBytes?: number; kvPoolBytes?: number } {
  if (values["kv-floor-bytes"] !== undefined && values["kv-cache-bytes"] !== undefined) {
    throw new TypeError("--kv-cache-bytes is the old name of --kv-floor-bytes: give one of them");
  }
  return {
    gpuBytes: optionalSize(values["gpu-bytes"], "--gpu-bytes"),
    kvFloorBytes: optionalSize(values["kv-floor-bytes"], "--kv-floor-bytes") ?? optionalSize(values["kv-cache-bytes"], "--kv-cache-bytes"),
    kvPoolBytes: optionalSize(values["kv-pool-bytes"], "--kv-pool-bytes"),
  };
}

/** The option definitions of gpuTierFlags. */
export const GPU_TIER_OPTIONS = {
  "gpu-bytes": { type: "string" },
  "kv-floor-bytes": { type: "string" },
  "kv-cache-bytes": { type: "string" },
  "kv-pool-bytes": { type: "string" },
} as const;

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      host: { type: "string", default: DEFAULT_HOST },
      port: { type: "string", default: String(PORTS.agent) },
      advertise: { type: "string" },
      dir: { type: "string", default: defaultAgentDir(STATE_DIR) },
      "agent-id": { type: "string" },
      store: { type: "string", default: DEFAULT_STORE },
      converter: { type: "string" },
      peer: { type: "string", multiple: true, default: [] },
      scheduler: { type: "string" },
      "disk-bytes": { type: "string", default: "64G" },
      "dram-bytes": { type: "string", default: "1G" },
      engines: { type: "string", default: "auto" },
      python: { type: "string" },
      "engine-arg": { type: "string", multiple: true, default: [] },
      ...GPU_TIER_OPTIONS,
      "download-concurrency": { type: "string" },
      external: { type: "string", multiple: true, default: [] },
      "allow-launch": { type: "boolean", default: false },
      ...TOKEN_OPTIONS,
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return void process.stdout.write(USAGE + "\n");
  const agent = await startAgent({
    dir: values.dir,
    host: values.host,
    port: Number(values.port),
    advertise: values.advertise,
    agentId: values["agent-id"],
    store: values.store === "" ? undefined : values.store,
    converter: values.converter,
    peers: values.peer,
    scheduler: values.scheduler,
    token: internalToken(values),
    adminToken: values["admin-token"] || ADMIN_TOKEN,
    diskBytes: parseSize(values["disk-bytes"], "--disk-bytes"),
    dramBytes: parseSize(values["dram-bytes"], "--dram-bytes"),
    engines: values.engines,
    python: values.python,
    engineArgs: values["engine-arg"],
    ...gpuTierFlags(values),
    downloadConcurrency: values["download-concurrency"] === undefined ? undefined : Number(values["download-concurrency"]),
    externalModels: values.external.map(external),
    allowLaunch: values["allow-launch"],
  });
  const reason = await untilStopped();
  process.stderr.write(stopLine("thaw agent", reason, "shutting down"));
  exitAfter(reason, 10_000);
  await agent.close();
}
