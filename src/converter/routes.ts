// The converter process's services: ConverterService, and gRPC server reflection describing it, so
// operators can call it with grpcurl or `buf curl` without proto files; and who may call them.
import type { ConnectRouter } from "@connectrpc/connect";
import { ConverterService } from "../gen/thaw/converter/v1/converter_service_pb.js";
import { modelKey } from "../checkpoint/model-key.js";
import { readIndex } from "../checkpoint/read-index.js";
import type { CheckpointStore } from "../store/store.js";
import { rule, type AccessRules } from "../shared/auth.js";
import { registerReflection } from "../shared/reflection/reflection.js";
import { convertModel } from "./convert.js";
import type { HubSettings } from "./sources/hub-client.js";
import { ConverterServiceImpl, type ConverterDeps } from "./converter-service.js";

export interface ConverterConfig {
  store: CheckpointStore;
  /** Local folders a Convert request may read from; undefined allows any folder. */
  localRoots?: string[];
  /** Hugging Face Hub settings (endpoint, token, download cache). */
  hub?: HubSettings;
}

/** The collaborators of ConverterServiceImpl, made from configuration. */
export function converterDeps(config: ConverterConfig): ConverterDeps {
  return {
    store: config.store,
    modelKey: (ref) => modelKey(ref.modelId, ref.revision),
    readIndex,
    convert: (job, signal, onProgress) =>
      convertModel({
        source: job.source,
        revision: job.revision,
        modelId: job.modelId,
        chunkSize: job.chunkSize,
        overwrite: job.overwrite,
        store: config.store,
        localRoots: config.localRoots,
        hub: config.hub,
        signal,
        onProgress,
      }),
  };
}

export default function converterRoutes(config: ConverterConfig) {
  return (router: ConnectRouter) => {
    router.service(ConverterService, new ConverterServiceImpl(converterDeps(config)));
    registerReflection(router, [ConverterService]);
  };
}

/** Every converter RPC (Convert, DeleteCheckpoint, reads) is thaw's own or an operator's: the internal or the admin token. */
export const CONVERTER_ACCESS: AccessRules = new Map([...rule(ConverterService, ["internal", "admin"]), ["*", ["internal", "admin"]]]);
