// GET /v1/models and /v1/models/{id}: registered models as OpenAI's model objects.
import type { ModelInfo } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";

export interface OpenAIModel {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  root: string;
  parent: null;
  max_model_len?: number;
}

export function modelObject(info: ModelInfo): OpenAIModel {
  const spec = info.spec!;
  const model: OpenAIModel = {
    id: spec.id,
    object: "model",
    created: Math.floor(Number(info.createdUnixMs) / 1000),
    owned_by: spec.ownedBy || "thaw",
    root: publicRoot(spec.source, spec.id),
    parent: null,
  };
  if (spec.maxModelLen > 0) model.max_model_len = spec.maxModelLen;
  return model;
}

/** A Hub repository id ("org/name"): what may be shown of a model's source. */
const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;

/**
 * The model's root as clients see it: its Hub repository, or its own id when it comes from a
 * local folder (a path on the serving machine is not the clients' business).
 */
function publicRoot(source: string, id: string): string {
  return HUB_ID.test(source) && !source.includes("..") ? source : id;
}

export function modelList(models: readonly ModelInfo[]): { object: "list"; data: OpenAIModel[] } {
  return { object: "list", data: models.map(modelObject) };
}
