// Convert once: the first request for a model whose checkpoint is not in the store converts it,
// and concurrent first requests share that one conversion. The published index (size and chunk
// list) is kept for placement and for spreading chunk downloads.
//
// Policy for a conversion nobody waits for any more: it finishes. A conversion is minutes of work,
// and a client that gave up usually asks again; the next request then finds the checkpoint.
import { ConnectError } from "@connectrpc/connect";
import type { CheckpointIndex, CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { SharedFlights } from "../../shared/shared-flight.js";
import type { OrchestratorMetrics } from "../metrics.js";
import type { ConverterLink } from "./links.js";
import type { ModelRegistry, RegisteredModel } from "./model-registry.js";
import { keyOf, refOf } from "./model-refs.js";

export interface ConversionsDeps {
  models: ModelRegistry;
  metrics: OrchestratorMetrics;
  /** Absent: models are expected to be in the store already (agents fetch them themselves). */
  converter?: ConverterLink;
  log: (message: string) => void;
}

export class Conversions {
  /** Published indexes by model key. */
  private readonly indexes = new Map<string, CheckpointIndex>();
  private readonly flights = new SharedFlights<never, CheckpointIndex | undefined>("finish");

  constructor(private readonly deps: ConversionsDeps) {}

  /** The published index of a model's checkpoint, once known. */
  index(ref: CheckpointRef): CheckpointIndex | undefined {
    return this.indexes.get(keyOf(ref));
  }

  /** Bytes of the model's checkpoint (0 until known). */
  sizeOf(model: RegisteredModel): number {
    return Number(model.bytes > 0n ? model.bytes : (this.index(refOf(model))?.totalBytes ?? 0n));
  }

  /** A registration changed: what was learnt about the old one no longer holds. */
  forget(model: RegisteredModel): void {
    this.indexes.delete(keyOf(refOf(model)));
  }

  /**
   * Makes sure the checkpoint exists: asks the converter once and converts when it is missing.
   * `held`: an agent already holds the model below the remote tier, which proves it exists (served
   * even while the converter is down).
   */
  async ensure(model: RegisteredModel, held: boolean, signal: AbortSignal): Promise<void> {
    const converter = this.deps.converter;
    if (converter === undefined || model.spec.launchCommand.length > 0) return; // external runtimes have no checkpoint
    const ref = refOf(model);
    const key = keyOf(ref);
    if (this.indexes.has(key)) return;
    try {
      await this.flights.run(key, () => this.convert(converter, model, ref, key, held), undefined, signal);
    } catch (err) {
      if (signal.aborted) throw err;
      if (held) return; // the converter is down, but agents hold it: serve anyway
      const e = ConnectError.from(err);
      throw new ConnectError(`cannot prepare model ${model.spec.id}: ${e.rawMessage}`, e.code);
    }
  }

  private async convert(converter: ConverterLink, model: RegisteredModel, ref: CheckpointRef, key: string, held: boolean): Promise<CheckpointIndex | undefined> {
    let index = await converter.getCheckpoint(ref);
    if (index === undefined) {
      if (held) return undefined;
      this.deps.log(`converting ${model.spec.source}@${model.spec.revision} as ${model.spec.id}`);
      try {
        index = await converter.convert({ source: model.spec.source, revision: model.spec.revision, modelId: model.spec.id });
        this.deps.metrics.conversions.inc({ result: "ok" });
      } catch (err) {
        this.deps.metrics.conversions.inc({ result: "error" });
        throw err;
      }
    }
    this.indexes.set(key, index);
    await this.deps.models.setBytes(model.spec.id, index.totalBytes);
    return index;
  }
}
