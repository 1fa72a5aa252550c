// Reads the published index of a checkpoint from a store.
import type { CheckpointIndex } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { type CheckpointStore, INDEX_FILE } from "../store/store.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeIndex } from "./index-codec.js";
import { checkModelKey } from "./model-key.js";

/**
 * The validated index of `modelKey`. Throws NotFoundError (from the store) when the checkpoint is
 * not published, InvalidArgument for a bad key, DataLoss when model.idx is corrupt or names another key.
 */
export async function readIndex(store: CheckpointStore, modelKey: string): Promise<CheckpointIndex> {
  checkModelKey(modelKey);
  const index = decodeIndex(await store.read(modelKey, INDEX_FILE));
  if (index.modelKey !== modelKey) {
    throw new ConnectError(`${modelKey}/${INDEX_FILE} in ${store.location} describes ${index.modelKey}`, Code.DataLoss);
  }
  return index;
}
