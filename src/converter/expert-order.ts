// The order tensors are written in: source order, except that the routed experts of one MoE layer
// are grouped by projection and laid out in expert order (experts.0.gate_proj, experts.1.gate_proj,
// …). Safetensors files list names sorted as text (experts.0, experts.1, experts.10, …, with each
// expert's projections interleaved); written that way, an engine must copy every expert to stack
// them for its batched kernels. In expert order, with each expert's tensor a multiple of the
// alignment, the E tensors of a projection lie evenly spaced and the engine stacks them as a view.
import type { TensorInput } from "../checkpoint/tensor-input.js";

const EXPERT = /^(.*\.experts\.)(\d+)\.(.+)$/;

/** Tensors in write order: source order, each expert group at the place of its first tensor. */
export function expertOrder<T extends Pick<TensorInput, "name">>(tensors: readonly T[]): T[] {
  const groups = new Map<string, { expert: number; tensor: T }[]>();
  const slots: (T | string)[] = [];
  for (const t of tensors) {
    const m = EXPERT.exec(t.name);
    if (m === null) {
      slots.push(t);
      continue;
    }
    const key = `${m[1]}*.${m[3]}`;
    let group = groups.get(key);
    if (group === undefined) {
      group = [];
      groups.set(key, group);
      slots.push(key);
    }
    group.push({ expert: Number(m[2]), tensor: t });
  }
  return slots.flatMap((s) => (typeof s === "string" ? groups.get(s)!.sort((a, b) => a.expert - b.expert).map((e) => e.tensor) : [s]));
}
