// AgentStatus (GetStatus, heartbeats) built from the agent's parts: every model it holds and in
// which tier, each tier's capacity, each device's budget and resident models, the engine workers.
// A CPU engine is reported as device "cpu" only: the GPU tier's capacity counts real GPUs.
import { create } from "@bufbuild/protobuf";
import {
  type AgentStatus,
  AgentStatusSchema,
  type DeviceStatus,
  DeviceStatusSchema,
  type EngineInfo,
  EngineInfoSchema,
  ModelCacheEntrySchema,
  Tier,
  TierCapacitySchema,
} from "../gen/thaw/agent/v1/agent_pb.js";
import type { CheckpointRef } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { parseModelKey } from "../checkpoint/model-key.js";
import type { BandwidthMeter } from "./bandwidth.js";
import type { DiskTier } from "./disk-tier.js";
import type { DramTier } from "./dram-tier.js";
import type { EngineWorker } from "./engine-worker.js";
import type { ExternalModels } from "./external-models.js";
import type { GpuTier } from "./gpu-tier.js";
import { maxModelBytes } from "./room-plan.js";
import type { ModelLoader } from "./model-loader.js";
import type { RequestCounter } from "./request-counter.js";

export interface StatusSources {
  agentId: string;
  address: () => string;
  disk: DiskTier;
  dram: DramTier;
  gpu: GpuTier;
  loader: ModelLoader;
  external: ExternalModels;
  requests: RequestCounter;
  bandwidth: BandwidthMeter;
}

/** KV cache bytes a model's sequences and prefix cache hold, from its worker's figures. */
function kvBytesOf(worker: EngineWorker, key: string): bigint {
  const s = worker.modelStats(key);
  if (s === undefined) return 0n;
  return BigInt(s.kvBlocksUsed + s.kvBlocksCached) * (worker.stats?.kvPageBytes ?? 0n);
}

function withRevision(ref: { modelId: string; revision?: string }): { modelId: string; revision: string } {
  return { modelId: ref.modelId, revision: ref.revision || "main" };
}

function deviceStatuses(gpu: GpuTier): DeviceStatus[] {
  return gpu.devices().map((d) => {
    const budget = d.budgetBytes ?? 0;
    const stats = d.worker.stats;
    const page = stats?.kvPageBytes ?? 0n;
    const perModel = stats?.models ?? [];
    const kvUsed = perModel.length > 0 ? perModel.reduce((s, m) => s + BigInt(m.kvBlocksUsed + m.kvBlocksCached), 0n) * page : BigInt(stats?.kvBlocksUsed ?? 0) * page;
    return create(DeviceStatusSchema, {
      device: d.worker.device,
      engineId: d.worker.id,
      budgetBytes: BigInt(budget),
      usedBytes: BigInt(d.usedBytes),
      freeBytes: BigInt(Math.max(0, budget - d.usedBytes)),
      kvPoolBytes: BigInt(d.kvPoolBytes ?? 0),
      kvUsedBytes: kvUsed,
      resident: d.residents.map((m) => ({ ref: withRevision(m.ref), bytes: BigInt(m.bytes), running: m.running, idleMs: BigInt(m.idleMs()) })),
      maxModelBytes: BigInt(d.budgetBytes === undefined ? 0 : maxModelBytes(budget, d.floorBytes)),
    });
  });
}

function engineInfos(gpu: GpuTier, external: ExternalModels): EngineInfo[] {
  const infos = gpu.engines.workers().map((w) =>
    create(EngineInfoSchema, {
      engineId: w.id,
      state: w.state,
      device: w.device,
      models: w.models().map((m) => withRevision(m.ref)),
      pid: w.pid,
      running: w.stats?.running ?? w.models().reduce((s, m) => s + m.running, 0),
      waiting: w.stats?.waiting ?? 0,
    }),
  );
  return [...infos, ...external.infos()];
}

export function buildAgentStatus(s: StatusSources): AgentStatus {
  const { disk, dram, gpu, loader, external, requests, bandwidth } = s;
  const residence = new Map<string, { worker: EngineWorker; ref: CheckpointRef; bytes: number; idleMs: number }>();
  for (const worker of gpu.engines.workers()) {
    for (const m of worker.models()) residence.set(m.key, { worker, ref: m.ref, bytes: m.weightBytes, idleMs: m.idleMs() });
  }
  const keys = new Set<string>([...disk.keys(), ...dram.keys(), ...external.keys(), ...residence.keys()]);
  const models = [...keys].sort().map((key) => {
    const info = disk.info(key);
    const here = residence.get(key);
    const ref = loader.ref(key) ?? here?.ref ?? info?.index.ref ?? parseModelKey(key);
    const bytes = info?.index.totalBytes ?? BigInt(dram.get(key)?.bytes ?? here?.bytes ?? 0);
    return create(ModelCacheEntrySchema, {
      ref: withRevision(ref),
      tier: external.tierOf(key) ?? loader.tierOf(key),
      bytes,
      diskChunks: info?.diskChunks ?? 0,
      totalChunks: info?.totalChunks ?? 0,
      kvHitRate: here?.worker.modelStats(key)?.prefixHitRate ?? 0,
      queueLength: requests.get(key),
      idleMs: BigInt(here?.idleMs ?? 0),
      device: here?.worker.device ?? "",
      kvBytesUsed: here !== undefined ? kvBytesOf(here.worker, key) : 0n,
    });
  });

  const devices = deviceStatuses(gpu);
  // The GPU tier's capacity is that of real GPUs; a CPU engine shows up in `devices` as "cpu".
  const gpus = devices.filter((d) => d.device.startsWith("cuda"));
  const gpuTotal = gpus.reduce((a, d) => a + d.budgetBytes, 0n);
  const gpuFree = gpus.reduce((a, d) => a + d.freeBytes, 0n);
  const d = disk.stats();
  const p = dram.stats();
  const tiers = [
    create(TierCapacitySchema, { tier: Tier.GPU, totalBytes: gpuTotal, freeBytes: gpuFree, bandwidthBytesPerSecond: 0 }),
    create(TierCapacitySchema, { tier: Tier.DRAM, totalBytes: BigInt(p.totalBytes), freeBytes: BigInt(p.freeBytes), bandwidthBytesPerSecond: bandwidth.get(Tier.DRAM) }),
    create(TierCapacitySchema, { tier: Tier.DISK, totalBytes: BigInt(d.totalBytes), freeBytes: BigInt(d.freeBytes), bandwidthBytesPerSecond: bandwidth.get(Tier.DISK) }),
    create(TierCapacitySchema, { tier: Tier.REMOTE, totalBytes: 0n, freeBytes: 0n, bandwidthBytesPerSecond: bandwidth.get(Tier.REMOTE) }),
  ];
  return create(AgentStatusSchema, {
    agentId: s.agentId,
    address: s.address(),
    models,
    tiers,
    engines: engineInfos(gpu, external),
    queueLength: requests.total,
    gpuCount: gpu.engines.devices.filter((x) => x.startsWith("cuda")).length,
    devices,
    dramPoolBytes: BigInt(p.totalBytes),
  });
}
