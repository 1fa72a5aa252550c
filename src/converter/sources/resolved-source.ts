// A source after resolution: local files to read, wherever they came from (a folder or the Hub cache).
import type { ShardIndex } from "./repo-files.js";

/** One file of a resolved source. */
export interface SourceFileRef {
  /** Name in the repository ("model-00001-of-00002.safetensors"). */
  name: string;
  /** Local path to read it from. */
  path: string;
  size: number;
  /** SHA-256, lowercase hex, or "" when not computed. */
  sha256: string;
}

/** What the converter reads. */
export interface ResolvedSource {
  /** The folder, or the Hub URL of the repository, for messages and provenance. */
  location: string;
  /** The revision the files belong to: the Hub's commit when it reported one, else as requested. */
  revision: string;
  /** Safetensors files, in shard order. */
  weightFiles: SourceFileRef[];
  /** The shard index when the weights are sharded with one (its map is checked against the headers). */
  shardIndex?: ShardIndex;
  /** Files copied as is (config.json first among them). */
  sideFiles: SourceFileRef[];
}
