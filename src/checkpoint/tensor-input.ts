// What the checkpoint writer needs to know about a tensor it is given.
import type { Dtype } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";

/** A tensor to write: its description and a way to read its bytes. */
export interface TensorInput {
  readonly name: string;
  readonly dtype: Dtype;
  /** Shape, outermost first; empty for a scalar. */
  readonly shape: readonly number[];
  /** Product of the shape times the element size. */
  readonly byteLength: number;
  /**
   * Fills `target` with the tensor's bytes starting at `offset` (`offset + target.length` never
   * exceeds byteLength). May be called concurrently for different ranges.
   */
  read(target: Uint8Array, offset: number): Promise<void>;
}
