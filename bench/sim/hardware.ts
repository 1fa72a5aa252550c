// What a simulated agent can do, from figures measured on real hardware (bench/RESULTS.md, the
// README's benchmark table). Where nothing was measured the value is an assumption, marked so.

export const GB = 1e9;

/** One agent: one H200 with its share of a host's DRAM and disk. */
export interface AgentHardware {
  /** Bytes resident models may hold on the GPU (weights plus KV floors). */
  gpuBudgetBytes: number;
  /** KV floor each resident model holds besides its weights. */
  kvFloorBytes: number;
  /** The agent's pinned DRAM pool (holds every model on its GPU, and recently evicted ones). */
  dramBytes: number;
  /** Its local disk tier. */
  diskBytes: number;
  /** Pinned host → GPU, bytes/s. */
  dramToGpu: number;
  /** Disk → pool → GPU (pipelined), bytes/s. */
  diskToGpu: number;
  /** Object store → disk → pool → GPU, bytes/s. */
  storeToGpu: number;
  /** From one peer agent's disk, bytes/s, and at most this in all over the agent's network link. */
  peerRead: number;
  networkBytes: number;
  /** LoadWeights and the engine's first step after a copy, s. */
  loadOverheadSeconds: number;
}

export const H200: AgentHardware = {
  // H200, defaults: device × 0.9 − KV pool − 3 GiB reserve ≈ 110 GB (README, "The GPU tier").
  gpuBudgetBytes: 110 * GB,
  kvFloorBytes: 1.074 * GB, // --kv-floor-bytes default 1 GiB
  // Assumption: an 8-GPU host with 2 TB of DRAM and 16 TB of NVMe, split per GPU.
  dramBytes: 256 * GB,
  diskBytes: 2000 * GB,
  // Measured: DRAM tier → GPU 49.97 GB/s (H100, 16.06 GB in 0.321 s), pinned copy 55.35 GB/s (H200).
  dramToGpu: 50 * GB,
  // Measured: disk → GPU 1.69 GB/s (H100); `dd iflag=direct` 1.42 GB/s on the H200.
  diskToGpu: 1.5 * GB,
  // Measured: store → disk 1.55 GB/s (LoadModel timings, H100).
  storeToGpu: 1.55 * GB,
  // Assumption: a peer serves from its disk at the disk's speed; links are 100 Gb/s.
  peerRead: 1.5 * GB,
  networkBytes: 12.5 * GB,
  // Measured: LoadWeights 0.030 s; a resident model's first token 19 ms p50 (H200).
  loadOverheadSeconds: 0.03,
};

/** Decode and prefill speed of a model of `bytes` on one H200, from the multi-model engine bench. */
export interface ModelSpeed {
  /** One decode step of `batch` sequences of this model, s. */
  stepSeconds(batch: number): number;
  /** Prefill of a prompt, s. */
  prefillSeconds(promptTokens: number): number;
}

/**
 * Measured on the H200 with a 16.06 GB Llama-3-8B-shaped model (RESULTS.md, many models per GPU):
 * batch 1 139.6 tokens/s (7.16 ms a step), 1 model × 32 streams 3,055 tokens/s (10.5 ms a step),
 * 4 models × 8 streams 994 tokens/s (a round of four steps of 8: 8.05 ms each). A line through
 * them: step(b) = 7.05 ms + 0.108 ms·b. Decode is memory-bound, so a model of other size scales
 * with its bytes. Prefill: a 1024-token prompt's first token in 31 ms (H100), one step of which
 * is decode: ≈ 42,000 prompt tokens/s for 16 GB of weights, scaled the same way (compute ∝ weights).
 */
export function speedOf(bytes: number): ModelSpeed {
  const scale = bytes / (16.06 * GB);
  return {
    stepSeconds: (batch) => scale * (0.00705 + 0.000108 * batch),
    prefillSeconds: (tokens) => (scale * tokens) / 42_000,
  };
}

/** A model family size mix: checkpoint bytes (bf16) and its share of the registered models. */
export const MODEL_SIZES: { name: string; bytes: number; share: number }[] = [
  { name: "1B", bytes: 2.47 * GB, share: 0.15 },
  { name: "3B", bytes: 6.43 * GB, share: 0.2 },
  { name: "8B", bytes: 16.06 * GB, share: 0.5 },
  { name: "14B", bytes: 29.5 * GB, share: 0.15 },
];
