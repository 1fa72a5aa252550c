// Measured bandwidth per tier (what the scheduler divides a model's size by): an exponentially
// weighted average of real loads and downloads, 0 until the first measurement. Transfers too
// small to time meaningfully are left out.
import { Tier } from "../gen/thaw/agent/v1/agent_pb.js";

/** Transfers below this many bytes do not count. */
const MIN_BYTES = 1 << 20;
/** Weight of the newest measurement. */
const ALPHA = 0.5;

export class BandwidthMeter {
  private readonly rates = new Map<Tier, number>();

  /** Records `bytes` moved out of `tier` in `seconds`. */
  record(tier: Tier, bytes: number, seconds: number): void {
    if (bytes < MIN_BYTES || !(seconds > 0)) return;
    const rate = bytes / seconds;
    const old = this.rates.get(tier);
    this.rates.set(tier, old === undefined ? rate : ALPHA * rate + (1 - ALPHA) * old);
  }

  /** Bytes per second out of `tier`; 0 until measured. */
  get(tier: Tier): number {
    return this.rates.get(tier) ?? 0;
  }
}
