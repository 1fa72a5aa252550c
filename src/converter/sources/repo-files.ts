// Which files of a Hugging Face layout (a local folder or a Hub repo) are read: the safetensors
// weights (single file, index + shards, or bare shards), the side files copied as is, and the
// refusals: pickle-only weights are never read, and config.json must be there.
import { Code, ConnectError } from "@connectrpc/connect";
import { checkFileName } from "../../checkpoint/model-key.js";

export const SINGLE_FILE = "model.safetensors";
export const SHARD_INDEX = "model.safetensors.index.json";
export const CONFIG_FILE = "config.json";

/** How the weights of a repository are stored. */
export type WeightLayout =
  | { kind: "single"; files: [string] }
  /** `files` is known only after reading the index (empty until then). */
  | { kind: "indexed"; indexFile: string }
  | { kind: "shards"; files: string[] };

const SIDE_FILES = new Set([
  CONFIG_FILE,
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "tokenizer.model",
  "spiece.model",
  "sentencepiece.bpe.model",
  "vocab.json",
  "vocab.txt",
  "merges.txt",
  "chat_template.json",
  "preprocessor_config.json",
  "processor_config.json",
  "LICENSE",
  "LICENSE.txt",
  "LICENSE.md",
  "NOTICE",
]);
const SIDE_PATTERNS = [/^chat_template.*\.jinja$/, /\.tiktoken$/];
const BARE_SHARD = /^model-(\d+)-of-(\d+)\.safetensors$/;
// Weights that only a pickle loader can read (or other frameworks' formats thaw does not read).
const PICKLE = [/^pytorch_model.*\.bin$/, /\.(pt|pth|ckpt|pkl|pickle|bin)$/i];
const OTHER_FORMATS = [/^tf_model\.h5$/, /^flax_model\.msgpack$/, /\.gguf$/i];

/**
 * Decides which weight files to read from the top-level `names` of a repository at `location`.
 * FailedPrecondition when config.json is missing, when only pickle (or other non-safetensors)
 * weights exist, or when there are no weights at all.
 */
export function chooseWeightFiles(names: readonly string[], location: string): WeightLayout {
  const present = new Set(names);
  if (!present.has(CONFIG_FILE)) {
    throw new ConnectError(`${location} has no ${CONFIG_FILE}; thaw needs the model's Hugging Face config beside its weights`, Code.FailedPrecondition);
  }
  if (present.has(SHARD_INDEX)) return { kind: "indexed", indexFile: SHARD_INDEX };
  if (present.has(SINGLE_FILE)) return { kind: "single", files: [SINGLE_FILE] };
  const shards = names.filter((n) => BARE_SHARD.test(n)).sort();
  if (shards.length > 0) return { kind: "shards", files: shards };

  const pickles = names.filter((n) => PICKLE.some((p) => p.test(n)));
  if (pickles.length > 0) {
    throw new ConnectError(
      `${location} has only pickle weights (${pickles.slice(0, 3).join(", ")}${pickles.length > 3 ? ", …" : ""}); ` +
        `thaw never unpickles files: convert them to safetensors first (e.g. with safetensors.torch.save_file) and convert that`,
      Code.FailedPrecondition,
    );
  }
  const others = names.filter((n) => OTHER_FORMATS.some((p) => p.test(n)) || n.endsWith(".safetensors"));
  throw new ConnectError(
    `${location} has no ${SINGLE_FILE} or ${SHARD_INDEX}` +
      (others.length > 0 ? ` (found ${others.slice(0, 3).join(", ")}, which thaw does not read as model weights)` : ""),
    Code.FailedPrecondition,
  );
}

/** The side files among `names` that are copied beside the chunks. */
export function sideFileNames(names: readonly string[]): string[] {
  return names.filter((n) => SIDE_FILES.has(n) || SIDE_PATTERNS.some((p) => p.test(n))).sort();
}

/** The shard index: which file holds each tensor, and the shard files in order. */
export interface ShardIndex {
  weightMap: Map<string, string>;
  files: string[];
}

/** Parses model.safetensors.index.json; InvalidArgument when it is malformed or names a file outside the folder. */
export function parseShardIndex(bytes: Uint8Array, label: string): ShardIndex {
  let root: unknown;
  try {
    root = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new ConnectError(`${label}: not valid JSON (${(err as Error).message})`, Code.InvalidArgument);
  }
  const map = (root as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new ConnectError(`${label}: has no "weight_map" object`, Code.InvalidArgument);
  }
  const weightMap = new Map<string, string>();
  const files = new Set<string>();
  for (const [tensor, file] of Object.entries(map)) {
    if (typeof file !== "string") throw new ConnectError(`${label}: weight_map[${tensor}] is not a file name`, Code.InvalidArgument);
    try {
      checkFileName(file);
    } catch (err) {
      throw new ConnectError(`${label}: weight_map[${tensor}]: ${(err as ConnectError).rawMessage}`, Code.InvalidArgument);
    }
    if (!file.endsWith(".safetensors")) {
      throw new ConnectError(`${label}: weight_map[${tensor}] names ${file}, which is not a .safetensors file`, Code.InvalidArgument);
    }
    weightMap.set(tensor, file);
    files.add(file);
  }
  if (files.size === 0) throw new ConnectError(`${label}: weight_map is empty`, Code.InvalidArgument);
  return { weightMap, files: [...files].sort() };
}
