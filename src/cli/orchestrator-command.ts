// thaw orchestrator: the OpenAI edge and the SchedulerService on one port, until SIGINT/SIGTERM.
import { parseArgs } from "node:util";
import { DEFAULT_HOST, STATE_DIR } from "../shared/defaults.js";
import { DEFAULT_MAX_INFLIGHT_PER_AGENT, DEFAULT_MAX_QUEUE, startOrchestrator } from "../orchestrator/orchestrator.js";
import { DEFAULT_WEIGHTS } from "../orchestrator/scheduler/placement.js";
import { DEFAULT_SCHEDULER_OPTIONS } from "../orchestrator/scheduler/scheduler.js";
import type { ConnectionLimits } from "../shared/connection-limits.js";
import { TOKEN_OPTIONS, TOKEN_USAGE, internalToken, serverAdminToken } from "./credentials.js";
import { exitAfter, stopLine, untilStopped } from "./until-signal.js";

export const EDGE_PORT = 8000;
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

/** Flags bounding a listener's connections (src/shared/connection-limits.ts); every serving command takes them. */
export const CONNECTION_OPTIONS = {
  "header-timeout": { type: "string" },
  "request-timeout": { type: "string" },
  "idle-timeout": { type: "string" },
  "max-connections": { type: "string" },
} as const;

export const CONNECTION_USAGE = `  --header-timeout MS         a new connection must send a request's headers within this (and each request its
                              headers from their first byte), else 408 and closed (default 10000)
  --request-timeout MS        a request's headers and body must all arrive within this, else 408 (default 60000;
                              responses, such as long generations, stream for as long as they need)
  --idle-timeout MS           a connection with no request in flight is closed after this (default 120000)
  --max-connections N         connections open at once; one more is closed as it is accepted (default 4096, or
                              3/4 of the open-file limit when that is lower)`;

const USAGE = `usage: thaw orchestrator [options]

Serves the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /health, /ready,
/metrics) and thaw.scheduler.v1.SchedulerService (gRPC, Connect, gRPC-Web, with server
reflection) on one port. Agents register themselves by heartbeat (thaw agent --scheduler ADDR).
  --host HOST                 interface to bind (default ${DEFAULT_HOST}; THAW_HOST)
  --port PORT                 port (default ${EDGE_PORT}; 0 picks a free one)
  --state-dir DIR             where the model registry (models.json) lives (default ${STATE_DIR}; THAW_HOME)
  --converter HOST:PORT       ConverterService used to convert models on their first request
  --model ID[=SOURCE]         register a model at start unless registered (repeatable; SOURCE: Hub id or folder)
  --api-key KEY               API key required on /v1/* as Bearer (repeatable; also THAW_API_KEYS, comma-separated);
                              it grants /v1/* and the generation RPCs only
${TOKEN_USAGE}
                              needed for RegisterModel, UnregisterModel, ListAgents, ExplainPlacement (thaw models
                              add/rm, thaw agents, thaw explain); when none is given, one is made and kept in
                              <state-dir>/admin-token
  --alpha A --beta B --gamma G --delta D --epsilon E --zeta Z
                              placement weights: score = A·cache_level − B·kv_hit_rate + G·queue_len + D·size/bandwidth
                              + E·eviction_bytes/dram_bandwidth + Z·wakes_idle_gpu (defaults ${DEFAULT_WEIGHTS.alpha}, ${DEFAULT_WEIGHTS.beta}, ${DEFAULT_WEIGHTS.gamma}, ${DEFAULT_WEIGHTS.delta}, ${DEFAULT_WEIGHTS.epsilon}, ${DEFAULT_WEIGHTS.zeta})
  --heartbeat-interval MS     interval agents are asked to heartbeat at (default ${DEFAULT_SCHEDULER_OPTIONS.heartbeatIntervalMs})
  --agent-expiry MS           an agent silent this long is not placed on (default 3 intervals + 500)
  --keep-alive SECONDS        unload a model idle on a GPU this long (default ${DEFAULT_SCHEDULER_OPTIONS.keepAliveSeconds}; per model: thaw models add --keep-alive)
  --max-inflight-per-agent N  sequences in flight per agent before requests queue (default ${DEFAULT_MAX_INFLIGHT_PER_AGENT})
  --max-queue N               requests that may queue; beyond, 429 with Retry-After (default ${DEFAULT_MAX_QUEUE})
  --max-attempts N            tries per choice when it fails before its first token (default ${DEFAULT_SCHEDULER_OPTIONS.maxAttempts})
  --agent-wait MS             how long a request waits for an agent when none is live (default ${DEFAULT_SCHEDULER_OPTIONS.agentWaitMs})
  --progress-timeout MS       a LoadModel or DownloadChunks with no progress this long is aborted, its agent kept
                              suspect as long again and the request retried elsewhere (default ${DEFAULT_SCHEDULER_OPTIONS.progressTimeoutMs})
  --shutdown-grace MS         on SIGTERM/SIGINT, how long running requests may finish; streams still open then end
                              with an error event and [DONE] (default ${DEFAULT_SHUTDOWN_GRACE_MS})
${CONNECTION_USAGE}
Environment: THAW_INTERNAL_TOKEN (required on Heartbeat, sent to agents and the converter, and what
agents prove they hold before they are placed on), THAW_ADMIN_TOKEN, THAW_API_KEYS.`;

export const ORCHESTRATOR_OPTIONS = {
  host: { type: "string", default: DEFAULT_HOST },
  port: { type: "string", default: String(EDGE_PORT) },
  "state-dir": { type: "string", default: STATE_DIR },
  model: { type: "string", multiple: true, default: [] as string[] },
  "api-key": { type: "string", multiple: true, default: [] as string[] },
  alpha: { type: "string" },
  beta: { type: "string" },
  gamma: { type: "string" },
  delta: { type: "string" },
  epsilon: { type: "string" },
  zeta: { type: "string" },
  "heartbeat-interval": { type: "string" },
  "agent-expiry": { type: "string" },
  "keep-alive": { type: "string" },
  "max-inflight-per-agent": { type: "string" },
  "max-queue": { type: "string" },
  "max-attempts": { type: "string" },
  "agent-wait": { type: "string" },
  "progress-timeout": { type: "string" },
  "shutdown-grace": { type: "string" },
  ...CONNECTION_OPTIONS,
  ...TOKEN_OPTIONS,
  help: { type: "boolean", short: "h" },
} as const;

/** A number flag, or undefined when absent. */
export function numberFlag(value: unknown, flag: string, { min = 0, integer = false } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== "string" || value.trim() === "" || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
    throw new TypeError(`--${flag}: ${JSON.stringify(value)} is not ${integer ? "an integer" : "a number"} ≥ ${min}`);
  }
  return n;
}

/** The connection limits the flags of CONNECTION_OPTIONS give (absent flags: the defaults). */
export function connectionFlags(values: Record<string, unknown>): Partial<ConnectionLimits> {
  return {
    headersTimeoutMs: numberFlag(values["header-timeout"], "header-timeout", { min: 1, integer: true }),
    requestTimeoutMs: numberFlag(values["request-timeout"], "request-timeout", { min: 1, integer: true }),
    idleTimeoutMs: numberFlag(values["idle-timeout"], "idle-timeout", { min: 1, integer: true }),
    maxConnections: numberFlag(values["max-connections"], "max-connections", { min: 1, integer: true }),
  };
}

/** "--model ID[=SOURCE]" → a ModelSpec init. */
export function modelFlag(text: string): { id: string; source?: string } {
  const eq = text.indexOf("=");
  return eq === -1 ? { id: text.trim() } : { id: text.slice(0, eq).trim(), source: text.slice(eq + 1).trim() };
}

/** API keys from --api-key and THAW_API_KEYS. */
export function apiKeys(flags: string[]): string[] {
  const fromEnv = (process.env.THAW_API_KEYS ?? "").split(",").map((k) => k.trim());
  return [...flags, ...fromEnv].filter((k) => k !== "");
}

/** The orchestrator options the flags above give. */
export function orchestratorFlags(values: Record<string, unknown>) {
  return {
    host: values.host as string,
    port: numberFlag(values.port, "port", { integer: true }),
    stateDir: values["state-dir"] as string,
    apiKeys: apiKeys((values["api-key"] as string[]) ?? []),
    models: ((values.model as string[]) ?? []).map(modelFlag),
    weights: {
      alpha: numberFlag(values.alpha, "alpha"),
      beta: numberFlag(values.beta, "beta"),
      gamma: numberFlag(values.gamma, "gamma"),
      delta: numberFlag(values.delta, "delta"),
      epsilon: numberFlag(values.epsilon, "epsilon"),
      zeta: numberFlag(values.zeta, "zeta"),
    },
    heartbeatIntervalMs: numberFlag(values["heartbeat-interval"], "heartbeat-interval", { min: 10, integer: true }),
    agentExpiryMs: numberFlag(values["agent-expiry"], "agent-expiry", { min: 10, integer: true }),
    keepAliveSeconds: numberFlag(values["keep-alive"], "keep-alive", { min: 1, integer: true }),
    maxInflightPerAgent: numberFlag(values["max-inflight-per-agent"], "max-inflight-per-agent", { min: 1, integer: true }),
    maxQueue: numberFlag(values["max-queue"], "max-queue", { integer: true }),
    maxAttempts: numberFlag(values["max-attempts"], "max-attempts", { min: 1, integer: true }),
    agentWaitMs: numberFlag(values["agent-wait"], "agent-wait", { integer: true }),
    progressTimeoutMs: numberFlag(values["progress-timeout"], "progress-timeout", { min: 1, integer: true }),
    shutdownGraceMs: numberFlag(values["shutdown-grace"], "shutdown-grace", { integer: true }) ?? DEFAULT_SHUTDOWN_GRACE_MS,
    connectionLimits: connectionFlags(values),
    token: internalToken(values),
  };
}

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { ...ORCHESTRATOR_OPTIONS, converter: { type: "string" } } });
  if (values.help) return void process.stdout.write(USAGE + "\n");
  const { shutdownGraceMs, ...options } = orchestratorFlags(values);
  const admin = await serverAdminToken(values, options.stateDir);
  const orchestrator = await startOrchestrator({ ...options, adminToken: admin.token, converter: values.converter });
  process.stderr.write(`thaw orchestrator: serving on ${orchestrator.url} (OpenAI API under /v1, SchedulerService, reflection)\n`);
  if (admin.file) process.stderr.write(`thaw orchestrator: operator commands use the admin token in ${admin.file}\n`);
  const reason = await untilStopped();
  const grace = reason.fatal === undefined ? shutdownGraceMs : 0;
  process.stderr.write(stopLine("thaw orchestrator", reason, `letting running requests finish (up to ${grace} ms)`));
  exitAfter(reason, grace + 10_000);
  await orchestrator.close(grace);
}
