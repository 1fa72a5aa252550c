// The scheduler's names for models: the checkpoint a registration names, and its model key (the
// one format the store and the agents use, "org--name@rev").
import { create } from "@bufbuild/protobuf";
import { Tier } from "../../gen/thaw/agent/v1/agent_pb.js";
import { CheckpointRefSchema, type CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { DEFAULT_REVISION, modelKey } from "../../checkpoint/model-key.js";
import type { RegisteredModel } from "./model-registry.js";

const refs = new WeakMap<RegisteredModel, CheckpointRef>();

/** The checkpoint a registration names (made once per registration). */
export function refOf(model: RegisteredModel): CheckpointRef {
  let ref = refs.get(model);
  if (ref === undefined) {
    ref = create(CheckpointRefSchema, { modelId: model.spec.id, revision: model.spec.revision || DEFAULT_REVISION });
    refs.set(model, ref);
  }
  return ref;
}

/**
 * The model key of a ref. Refs from registrations are valid; one an agent reports that is not (it
 * never should be) keeps a plain "id@rev" form, so a bad heartbeat cannot throw inside the scheduler.
 */
export function keyOf(ref: CheckpointRef): string {
  // Placement asks for the key of every agent's view of a model on every request: kept per ref
  // object (refs are never changed once made; a changed field would still be read afresh).
  const known = keys.get(ref);
  if (known !== undefined && known.modelId === ref.modelId && known.revision === ref.revision) return known.key;
  let key: string;
  try {
    key = modelKey(ref.modelId, ref.revision);
  } catch {
    key = `${ref.modelId}@${ref.revision || DEFAULT_REVISION}`;
  }
  keys.set(ref, { modelId: ref.modelId, revision: ref.revision, key });
  return key;
}

const keys = new WeakMap<CheckpointRef, { modelId: string; revision: string; key: string }>();

/** The key of a model on an agent ("agent|model key"), for per-agent state. */
export function agentModelKey(agentId: string, ref: CheckpointRef): string {
  return `${agentId}|${keyOf(ref)}`;
}

export function tierName(tier: Tier): string {
  switch (tier) {
    case Tier.GPU:
      return "gpu";
    case Tier.DRAM:
      return "dram";
    case Tier.DISK:
      return "disk";
    case Tier.REMOTE:
      return "remote";
    default:
      return "unknown";
  }
}
