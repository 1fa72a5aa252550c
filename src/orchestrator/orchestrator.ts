// The orchestrator as a library: the scheduler, the OpenAI edge, reflection and metrics on one
// port. `thaw orchestrator` and `thaw serve` both call startOrchestrator().
import path from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Registry } from "prom-client";
import { ModelSpecSchema } from "../gen/thaw/scheduler/v1/scheduler_pb.js";
import { authorize, refuseOpenBind } from "../shared/auth.js";
import { STATE_DIR } from "../shared/defaults.js";
import type { ConnectionLimits } from "../shared/connection-limits.js";
import { startServer, type RunningServer } from "../shared/server.js";
import { Edge } from "./edge/edge.js";
import { metricsInterceptor, requestIdInterceptor } from "./interceptors.js";
import { OrchestratorMetrics } from "./metrics.js";
import orchestratorRoutes, { SCHEDULER_ACCESS } from "./routes.js";
import { Admission } from "./scheduler/admission.js";
import { AgentRegistry } from "./scheduler/agent-registry.js";
import { grpcAgentConnector, grpcConverterLink, type AgentConnector, type ConverterLink } from "./scheduler/links.js";
import { ModelRegistry } from "./scheduler/model-registry.js";
import { DEFAULT_WEIGHTS, type PlacementWeights } from "./scheduler/placement.js";
import { DEFAULT_SCHEDULER_OPTIONS, Scheduler } from "./scheduler/scheduler.js";

export interface OrchestratorOptions {
  /** Interface and port of the edge and the RPCs (default 127.0.0.1:8000; 0 picks a free port). */
  host?: string;
  port?: number;
  /** State folder; the model registry lives in <stateDir>/models.json (default ./.thaw). */
  stateDir?: string;
  /** The registry file instead (null: keep registrations in memory only). */
  modelsFile?: string | null;
  /** ConverterService address (or a link) used to convert models on first use; absent: none. */
  converter?: string | ConverterLink;
  /**
   * Internal shared secret: required on Heartbeat, sent to agents and the converter, and what
   * agents prove they hold before they are placed on. Absent: none (a loopback host only).
   */
  token?: string;
  /** The operators' secret: required on RegisterModel, UnregisterModel, ListAgents, ExplainPlacement. Absent: those are refused. */
  adminToken?: string;
  /** API keys for /v1/* and the generation RPCs (Bearer); empty: open. */
  apiKeys?: string[];
  weights?: Partial<PlacementWeights>;
  heartbeatIntervalMs?: number;
  /** An agent without a heartbeat for this long is not placed on (default 3 intervals + 0.5 s). */
  agentExpiryMs?: number;
  keepAliveSeconds?: number;
  /** Sequences in flight per agent before requests queue (default 1024). */
  maxInflightPerAgent?: number;
  /** Requests that may queue; one more gets 429 (default 1024). */
  maxQueue?: number;
  maxAttempts?: number;
  agentWaitMs?: number;
  sweepIntervalMs?: number;
  /** LoadModel or DownloadChunks silent this long is aborted and its agent made suspect, ms (default 60 000). */
  progressTimeoutMs?: number;
  /** How long an agent whose call hung stays suspect at least, ms (default: progressTimeoutMs). */
  suspectHoldMs?: number;
  /** Models registered at start unless already registered. */
  models?: MessageInitShape<typeof ModelSpecSchema>[];
  registry?: Registry;
  connector?: AgentConnector;
  /** Timeouts and the connection cap of the port (connection-limits.ts; fields left out: the defaults). */
  connectionLimits?: Partial<ConnectionLimits>;
  /** Clock in ms for agent expiry and the scheduler's timing (default Date.now; tests pass a fake one). */
  now?: () => number;
  log?: (line: string) => void;
}

export interface RunningOrchestrator {
  readonly url: string;
  readonly port: number;
  readonly scheduler: Scheduler;
  readonly metrics: OrchestratorMetrics;
  readonly registry: Registry;
  /**
   * Stops taking connections, lets running requests finish for up to `graceMs` (default 0), then
   * ends what still runs: event streams with an error event and [DONE], RPC streams with
   * UNAVAILABLE. Never a bare end of stream.
   */
  close(graceMs?: number): Promise<void>;
}

export const DEFAULT_MAX_INFLIGHT_PER_AGENT = 1024;
export const DEFAULT_MAX_QUEUE = 1024;

export async function startOrchestrator(options: OrchestratorOptions = {}): Promise<RunningOrchestrator> {
  const log = options.log ?? ((line: string) => process.stderr.write(`thaw orchestrator: ${line}\n`));
  refuseOpenBind(options.host ?? "127.0.0.1", options.token, "thaw orchestrator");
  const registry = options.registry ?? new Registry();
  const metrics = new OrchestratorMetrics(registry);
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_SCHEDULER_OPTIONS.heartbeatIntervalMs;
  const expiryMs = options.agentExpiryMs ?? 3 * heartbeatIntervalMs + 500;
  const modelsFile = options.modelsFile === null ? undefined : (options.modelsFile ?? path.join(options.stateDir ?? STATE_DIR, "models.json"));
  const models = await ModelRegistry.open(modelsFile);
  for (const spec of options.models ?? []) {
    if (spec.id && models.get(spec.id) === undefined) await models.register(create(ModelSpecSchema, spec));
  }
  const converter = typeof options.converter === "string" ? grpcConverterLink(options.converter, { token: options.token }) : options.converter;
  const scheduler = new Scheduler(
    {
      agents: new AgentRegistry({ expiryMs, forgetMs: Math.max(600_000, 10 * expiryMs), now: options.now }),
      models,
      admission: new Admission({
        maxInflightPerAgent: options.maxInflightPerAgent ?? DEFAULT_MAX_INFLIGHT_PER_AGENT,
        maxQueue: options.maxQueue ?? DEFAULT_MAX_QUEUE,
      }),
      metrics,
      connector: options.connector ?? grpcAgentConnector({ token: options.token }),
      converter,
      now: options.now,
      log,
    },
    {
      weights: { ...DEFAULT_WEIGHTS, ...definedOnly(options.weights ?? {}) },
      heartbeatIntervalMs,
      keepAliveSeconds: options.keepAliveSeconds,
      maxAttempts: options.maxAttempts,
      agentWaitMs: options.agentWaitMs,
      sweepIntervalMs: options.sweepIntervalMs,
      progressTimeoutMs: options.progressTimeoutMs,
      suspectHoldMs: options.suspectHoldMs,
    },
  );
  const edge = new Edge({ backend: scheduler, metrics, registry, apiKeys: options.apiKeys, log });
  let server: RunningServer;
  server = await startServer({
    routes: orchestratorRoutes(scheduler),
    host: options.host,
    port: options.port ?? 8000,
    interceptors: [
      requestIdInterceptor(),
      metricsInterceptor(metrics),
      authorize({ internalToken: options.token, adminToken: options.adminToken, apiKeys: options.apiKeys }, SCHEDULER_ACCESS),
    ],
    fallback: edge.handle,
    limits: options.connectionLimits,
  });
  scheduler.start();
  return {
    url: server.url,
    port: server.port,
    scheduler,
    metrics,
    registry,
    async close(graceMs = 0) {
      // No periodic work while draining: heartbeats are refused with the rest of new work, and
      // agents must not look silent to the sweep while their streams finish.
      scheduler.stop();
      await server.drain(graceMs);
      // Generations still running end in-band; close() waits (briefly) for their last events to leave.
      const answered = edge.shutdown();
      await server.close();
      await answered;
    },
  };
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
