// The agent as a library: startAgent() opens the tiers, starts the warm engine workers, serves
// AgentService and /metrics on one port, and heartbeats to the scheduler. `thaw agent` and
// `thaw serve` both call it.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { Registry } from "prom-client";
import type { AgentStatus } from "../gen/thaw/agent/v1/agent_pb.js";
import { AgentService } from "../gen/thaw/agent/v1/agent_service_pb.js";
import { ConverterService } from "../gen/thaw/converter/v1/converter_service_pb.js";
import { SchedulerService } from "../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { PinnedPool, cudaInfo } from "../native/index.js";
import { authorize, refuseOpenBind } from "../shared/auth.js";
import { PORTS } from "../shared/defaults.js";
import { type RunningServer, startServer } from "../shared/server.js";
import { openStore } from "../store/open-store.js";
import type { CheckpointStore } from "../store/store.js";
import { AgentMetrics } from "./agent-metrics.js";
import type { AgentServiceDeps } from "./agent-service.js";
import { buildAgentStatus } from "./agent-status.js";
import { BandwidthMeter } from "./bandwidth.js";
import { ChunkDownloader } from "./chunk-download.js";
import { type ChunkSource, ConverterSource, PeerSource, StoreSource } from "./chunk-sources.js";
import { DiskTier } from "./disk-tier.js";
import { DramTier } from "./dram-tier.js";
import { ExternalModels } from "./external-models.js";
import type { ExternalModelConfig } from "./external-runtime.js";
import { GpuTier } from "./gpu-tier.js";
import { type Heartbeats, startHeartbeats } from "./heartbeat.js";
import { ModelLoader } from "./model-loader.js";
import { RequestCounter } from "./request-counter.js";
import { TextWorkers } from "./text-workers.js";
import { PeerAdmission } from "./peer-admission.js";
import agentRoutes, { AGENT_ACCESS } from "./routes.js";
import { ClientCache, tcpClient } from "./rpc-clients.js";

const GiB = 1 << 30;
const MiB = 1 << 20;

/** KV floor per model when --kv-floor-bytes is not given: one long sequence of an 8B model on a GPU, a little on CPU. */
export const DEFAULT_KV_FLOOR_BYTES = { cuda: GiB, cpu: 32 * MiB } as const;

export interface AgentOptions {
  /** State folder: the disk tier, the agent id, engine sockets (default `${STATE_DIR}/agent`). */
  dir: string;
  /** Interface and port of AgentService and /metrics (default 127.0.0.1:50071; 0 picks a free port). */
  host?: string;
  port?: number;
  /** Address peers and the scheduler reach this agent at (default host:port). */
  advertise?: string;
  /** Stable id (default: made once and kept in <dir>/agent-id). */
  agentId?: string;
  /** Origin of chunks: a store URL (or an open store), and/or a converter address. */
  store?: string | CheckpointStore;
  converter?: string;
  /** Peer agents asked for chunks before the origin (besides the peers a request names). */
  peers?: string[];
  /** SchedulerService address to heartbeat to. */
  scheduler?: string;
  /**
   * Shared secret required on AgentService (with the admin token's), sent to the converter and the
   * scheduler and to peers once they proved they hold it too. Absent: none (a loopback host only).
   */
  token?: string;
  /** The operators' secret, accepted on AgentService as well as the internal token. */
  adminToken?: string;
  /** Disk tier budget in bytes (default 64 GiB). */
  diskBytes?: number;
  /** Pinned pool size in bytes (default 1 GiB; 0: no pool, CPU engines read checkpoint folders). */
  dramBytes?: number;
  /** Engine workers: "auto" (one per GPU, else one on CPU), "none", or devices ("cpu", "cuda:0", "cpu,cpu"). */
  engines?: string | string[];
  /** Python interpreter with torch (default THAW_PYTHON, else the first python3 that has torch). */
  python?: string;
  /** Extra arguments for every engine worker. */
  engineArgs?: string[];
  /**
   * Bytes of the GPU tier on each device: resident models' weights plus one KV floor each (default:
   * what a CUDA worker reports it can give weights; on CPU, the pinned pool, else half the memory).
   */
  gpuBytes?: number;
  /** KV cache guaranteed to each resident model (LoadWeights.kv_cache_bytes), held in the device budget (default 1 GiB on a GPU, 32 MiB on CPU). */
  kvFloorBytes?: number;
  /** Each worker's KV pool shared by its models (passed as --kv-pool-bytes; default: the worker's). */
  kvPoolBytes?: number;
  /** Parallel chunk downloads (default 4). */
  downloadConcurrency?: number;
  /** Engine health check period (default 1000 ms). */
  healthIntervalMs?: number;
  /** Heartbeat period until the scheduler names one (default 1000 ms). */
  heartbeatIntervalMs?: number;
  /** Models served by an external OpenAI-compatible runtime. */
  externalModels?: ExternalModelConfig[];
  /** Let LoadModel name an external runtime's command to start (LoadModelRequest.launch_command; default false). */
  allowLaunch?: boolean;
  /** Metrics registry (default: a new one). */
  registry?: Registry;
  /** Log lines (default: stderr). */
  log?: (line: string) => void;
}

export interface RunningAgent {
  readonly agentId: string;
  /** Base URL of AgentService, e.g. "http://127.0.0.1:50071". */
  readonly url: string;
  readonly port: number;
  /** Address given to peers and the scheduler. */
  readonly address: string;
  readonly registry: Registry;
  status(): AgentStatus;
  /** Resolves when every engine worker has started (or failed to). */
  enginesReady(): Promise<void>;
  /** Process ids of the engine workers (tests kill them). */
  enginePids(): number[];
  close(): Promise<void>;
}

/**
 * PYTHONPATH entries of the engine worker: THAW_ENGINE_PATH, else the repository's python/ and
 * python/gen beside this source file, else under the working directory (a bundled agent).
 */
function enginePythonPath(): string[] {
  if (process.env.THAW_ENGINE_PATH) return process.env.THAW_ENGINE_PATH.split(path.delimiter);
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const root of [path.resolve(here, "../.."), process.cwd()]) {
    if (existsSync(path.join(root, "python", "thaw_engine"))) return [path.join(root, "python"), path.join(root, "python", "gen")];
  }
  return [];
}

/** THAW_PYTHON, else the first of python3 and /usr/bin/python3 that can import torch. */
export function defaultPython(): string {
  if (process.env.THAW_PYTHON) return process.env.THAW_PYTHON;
  for (const candidate of ["python3", "/usr/bin/python3"]) {
    const probe = spawnSync(candidate, ["-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"], { timeout: 10_000 });
    if (probe.status === 0) return candidate;
  }
  return "python3";
}

async function engineDevices(spec: string | string[] | undefined): Promise<string[]> {
  const list = Array.isArray(spec) ? spec : (spec ?? "auto").split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (list.length === 1 && list[0] === "none") return [];
  if (list.length === 0 || (list.length === 1 && list[0] === "auto")) {
    const cuda = await cudaInfo().catch(() => undefined);
    return cuda?.available ? cuda.devices.map((d) => `cuda:${d.index}`) : ["cpu"];
  }
  for (const d of list) {
    if (!/^(cpu|cuda(:\d+)?)$/.test(d)) throw new TypeError(`engine device ${JSON.stringify(d)}: use cpu, cuda:N, auto or none`);
  }
  return list.map((d) => (d === "cuda" ? "cuda:0" : d));
}

async function stableId(dir: string): Promise<string> {
  const file = path.join(dir, "agent-id");
  try {
    const id = (await readFile(file, "utf8")).trim();
    if (id !== "") return id;
  } catch {
    // first start
  }
  const id = `${os.hostname()}-${randomBytes(3).toString("hex")}`;
  await writeFile(file, id + "\n");
  return id;
}

/**
 * A folder for the engine workers' unix sockets, with a path short enough for sun_path (108 bytes),
 * that only this user may enter: the sockets carry no token, so the folder is their lock.
 */
async function socketDir(dir: string): Promise<string> {
  let folder = path.join(dir, "run");
  if (folder.length > 80) folder = path.join(os.tmpdir(), `thaw-agent-${process.pid}-${randomBytes(3).toString("hex")}`);
  await mkdir(folder, { recursive: true, mode: 0o700 });
  await chmod(folder, 0o700); // made by an earlier version, or under another umask
  return folder;
}

export async function startAgent(options: AgentOptions): Promise<RunningAgent> {
  const closers: (() => void | Promise<void>)[] = [];
  const closeAll = async (): Promise<void> => {
    for (const close of closers.reverse()) await close();
    closers.length = 0;
  };
  try {
    return await composeAgent(options, closers, closeAll);
  } catch (err) {
    // A partial start leaves nothing behind: workers, pool, clients and server are closed again.
    await closeAll().catch(() => {});
    throw err;
  }
}

/** The composition root: builds the agent's parts in order, each given what it needs. */
async function composeAgent(options: AgentOptions, closers: (() => void | Promise<void>)[], closeAll: () => Promise<void>): Promise<RunningAgent> {
  const log = options.log ?? ((line: string) => process.stderr.write(`thaw agent: ${line}\n`));
  refuseOpenBind(options.host ?? "127.0.0.1", options.token, "thaw agent");
  const dir = path.resolve(options.dir);
  await mkdir(dir, { recursive: true });
  const agentId = options.agentId ?? (await stableId(dir));
  const registry = options.registry ?? new Registry();
  const bandwidth = new BandwidthMeter();
  const requests = new RequestCounter();
  // Gauges read the tiers when scraped, after everything below exists.
  const metrics: AgentMetrics = new AgentMetrics(registry, {
    poolBytes: () => {
      const st = dram.stats();
      return { used: st.usedBytes, loading: st.loadingBytes, free: st.freeBytes };
    },
    queueLengths: () => requests.all(),
    running: () => requests.total,
  });

  const disk = await DiskTier.open({
    dir,
    budgetBytes: options.diskBytes ?? 64 * GiB,
    onEvict: () => metrics.evictions.inc({ tier: "disk" }),
  });
  const dramBytes = options.dramBytes ?? GiB;
  const pool = dramBytes > 0 ? await PinnedPool.create({ bytes: dramBytes, name: `thaw-pool-${agentId}` }) : undefined;
  if (pool !== undefined) closers.push(() => pool.dispose());

  const devices = await engineDevices(options.engines);
  const floorBytes = (device: string): number =>
    options.kvFloorBytes ?? (device === "cpu" ? DEFAULT_KV_FLOOR_BYTES.cpu : DEFAULT_KV_FLOOR_BYTES.cuda);
  let heartbeats: Heartbeats | undefined;
  const gpu = new GpuTier({
    devices,
    launch: {
      python: devices.length > 0 ? (options.python ?? defaultPython()) : "python3",
      pythonPath: enginePythonPath(),
      socketDir: await socketDir(dir),
      args: [...(options.kvPoolBytes !== undefined ? ["--kv-pool-bytes", String(options.kvPoolBytes)] : []), ...(options.engineArgs ?? [])],
      startTimeoutMs: 120_000,
      log,
    },
    healthIntervalMs: options.healthIntervalMs,
    gpuBytes: options.gpuBytes,
    // A CPU engine's weights live in the pinned pool it maps.
    cpuBudgetBytes: dramBytes > 0 ? dramBytes : Math.floor(os.totalmem() / 2),
    floorBytes,
    kvPoolBytes: options.kvPoolBytes,
    // The scheduler learns of every change at once, not at the next heartbeat.
    onResident: () => heartbeats?.poke(),
    onGone: (model, why, device) => {
      if (why === "evict") metrics.evictions.inc({ tier: "gpu" });
      log(`${model.key} left ${device} (${why})`);
      heartbeats?.poke();
    },
  });
  const dram = new DramTier(pool, {
    onEvict: () => metrics.evictions.inc({ tier: "dram" }),
    // A CPU engine serves straight from the pool: an idle one gives its region back when the pool is full.
    reclaim: (inUse) => gpu.evictIdle((model) => inUse(model.key)),
  });

  // Sources of chunks: peers first, then the store or the converter.
  let address = "";
  const peerClients = new ClientCache(AgentService, options.token);
  closers.push(() => peerClients.close());
  const store = typeof options.store === "string" ? await openStore(options.store) : options.store;
  const origin: ChunkSource[] = [];
  if (store !== undefined) origin.push(new StoreSource(store));
  if (options.converter) {
    const converter = tcpClient(ConverterService, options.converter, options.token);
    closers.push(() => converter.close());
    origin.push(new ConverterSource(options.converter, converter.client));
  }
  const sources = (peers: readonly string[]): ChunkSource[] => {
    const unique = [...new Set([...peers, ...(options.peers ?? [])])].filter((p) => p !== "" && p !== address);
    return [...unique.map((p) => new PeerSource(p, peerClients.get(p))), ...origin];
  };

  const external = new ExternalModels(options.externalModels ?? [], { allowLaunch: options.allowLaunch ?? false, metrics, log });
  closers.push(() => external.close());
  const downloader = new ChunkDownloader(disk, { concurrency: options.downloadConcurrency, log });
  const loader = new ModelLoader({ disk, dram, gpu, downloader, sources, metrics, bandwidth, log });
  const status = (): AgentStatus =>
    buildAgentStatus({ agentId, address: () => address, disk, dram, gpu, loader, external, requests, bandwidth });

  const peers = new PeerAdmission({ token: options.token, self: () => address, trusted: options.peers, log });
  const textWorkers = new TextWorkers();
  closers.push(() => textWorkers.close());
  const deps: AgentServiceDeps = { loader, disk, gpu, external, requests, peers, textWorkers, status, log };
  const server: RunningServer = await startServer({
    routes: agentRoutes(deps),
    host: options.host,
    port: options.port ?? PORTS.agent,
    interceptors: [authorize({ internalToken: options.token, adminToken: options.adminToken }, AGENT_ACCESS, () => ({ agentId, address }))],
    fallback: (req, res) => {
      const url = (req.url ?? "/").split("?")[0];
      if (req.method === "GET" && url === "/metrics") {
        registry.metrics().then(
          (text) => {
            res.writeHead(200, { "content-type": registry.contentType });
            res.end(text);
          },
          (err: Error) => {
            res.writeHead(500, { "content-type": "text/plain" });
            res.end(err.message);
          },
        );
        return;
      }
      if (req.method === "GET" && (url === "/health" || url === "/ready")) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ status: "ok", agent_id: agentId }));
        return;
      }
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: `no route ${req.method} ${url}`, type: "not_found_error", param: null, code: null } }));
    },
  });
  // Closed before the workers: no request reaches a worker that is stopping.
  closers.push(() => gpu.engines.close());
  closers.push(() => server.close());
  const bindHost = options.host ?? "127.0.0.1";
  address = options.advertise ?? `${bindHost === "0.0.0.0" || bindHost === "::" ? os.hostname() : bindHost}:${server.port}`;

  await gpu.engines.start();

  if (options.scheduler) {
    const scheduler = tcpClient(SchedulerService, options.scheduler, options.token);
    const beats = startHeartbeats({ client: scheduler.client, status, defaultIntervalMs: options.heartbeatIntervalMs, log });
    heartbeats = beats;
    closers.push(() => scheduler.close());
    closers.push(() => beats.stop());
  }
  log(
    `${agentId} serving on ${server.url} (advertised ${address}); disk ${disk.stats().usedBytes}/${disk.budgetBytes} bytes, ` +
      `pool ${pool ? `${pool.bytes} bytes (${pool.pinning})` : "none"}, engines ${devices.join(",") || "none"}, ` +
      `origin ${origin.map((o) => o.name).join(", ") || "none"}`,
  );

  let closing: Promise<void> | undefined;
  return {
    agentId,
    url: server.url,
    port: server.port,
    get address() {
      return address;
    },
    registry,
    status,
    enginesReady: () => gpu.engines.whenReady(),
    enginePids: () => gpu.engines.workers().map((w) => w.pid),
    close() {
      closing ??= closeAll();
      return closing;
    },
  };
}

/** The default state folder of an agent. */
export function defaultAgentDir(stateDir: string): string {
  return path.join(stateDir, "agent");
}
