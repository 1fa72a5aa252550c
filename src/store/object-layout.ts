// Where a checkpoint's objects live in a bucket or container:
//
//   <prefix><model-key>/model.idx             the index; its metadata "thawgeneration" names G
//   <prefix><model-key>/<G>/chunk-00000.bin   files of generation G (G = "gen-<time>-<random>")
//
// A writer uploads every file under a fresh generation, then PUTs the index (one atomic PUT on
// both S3 and Azure), then removes the generation the old index named. So a reader never sees
// half a checkpoint, and an overwrite keeps the old checkpoint readable until the flip.
// An index without the metadata (a folder copied as is, e.g. `aws s3 sync` of a local store)
// names generation "": its files sit directly beside it, exactly as DESIGN.md §3 lays them out.
import { randomBytes } from "node:crypto";
import { INDEX_FILE } from "./store.js";

/** User-metadata key of the index that names the generation (S3 and Azure both accept it). */
export const GENERATION_METADATA = "thawgeneration";

export class ObjectLayout {
  /** `prefix` is "" or a folder path; a trailing "/" is added. */
  constructor(prefix: string) {
    const trimmed = prefix.replace(/^\/+|\/+$/g, "");
    this.prefix = trimmed === "" ? "" : `${trimmed}/`;
  }

  readonly prefix: string;

  /** The folder of a checkpoint, ending in "/". */
  folder(modelKey: string): string {
    return `${this.prefix}${modelKey}/`;
  }

  indexKey(modelKey: string): string {
    return this.folder(modelKey) + INDEX_FILE;
  }

  /** The folder of one generation ("" = the flat layout), ending in "/". */
  generationFolder(modelKey: string, generation: string): string {
    return generation === "" ? this.folder(modelKey) : `${this.folder(modelKey)}${generation}/`;
  }

  fileKey(modelKey: string, generation: string, name: string): string {
    return this.generationFolder(modelKey, generation) + name;
  }

  /** A generation name no other writer will pick; sorts by creation time. */
  newGeneration(): string {
    return `gen-${Date.now().toString(36).padStart(9, "0")}-${randomBytes(4).toString("hex")}`;
  }

  /** The generation an index's metadata names ("" when it names none). */
  generationOf(metadata: Record<string, string>): string {
    const generation = metadata[GENERATION_METADATA] ?? "";
    if (generation !== "" && !/^[A-Za-z0-9._-]+$/.test(generation)) throw new Error(`index names a bad generation ${JSON.stringify(generation)}`);
    return generation;
  }
}
