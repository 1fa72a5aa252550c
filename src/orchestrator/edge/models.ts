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
    root: spec.source || spec.id,
    parent: null,
  };
  if (spec.maxModelLen > 0) model.max_model_len = spec.maxModelLen;
  return model;
}

export function modelList(models: readonly ModelInfo[]): { object: "list"; data: OpenAIModel[] } {
  return { object: "list", data: models.map(modelObject) };
}
