// model.idx: the binary CheckpointIndex, and the checks every decoded index must pass before
// anyone trusts its offsets (a corrupt or hostile index must not make a reader leave its chunk).
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type CheckpointIndex,
  CheckpointIndexSchema,
  ChecksumAlgorithm,
} from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { INDEX_FILE } from "../store/store.js";
import { dtypeInfo } from "./dtype.js";
import { ALIGNMENT, FORMAT_VERSION } from "./format.js";
import { checkFileName, checkModelKey } from "./model-key.js";

/** Serialises an index after validating it (a writer never publishes an index a reader would reject). */
export function encodeIndex(index: CheckpointIndex): Uint8Array {
  validateIndex(index);
  return toBinary(CheckpointIndexSchema, index);
}

/** Parses and validates model.idx bytes; throws DataLoss with the reason when they are not a valid v1 index. */
export function decodeIndex(bytes: Uint8Array): CheckpointIndex {
  let index: CheckpointIndex;
  try {
    index = fromBinary(CheckpointIndexSchema, bytes);
  } catch (err) {
    throw new ConnectError(`${INDEX_FILE} is not a CheckpointIndex: ${(err as Error).message}`, Code.DataLoss);
  }
  validateIndex(index);
  return index;
}

/** Throws DataLoss unless the index satisfies format v1's invariants. */
export function validateIndex(index: CheckpointIndex): void {
  const fail = (why: string): never => {
    throw new ConnectError(`invalid checkpoint index${index.modelKey ? ` of ${index.modelKey}` : ""}: ${why}`, Code.DataLoss);
  };
  if (index.formatVersion !== FORMAT_VERSION) {
    fail(`format version ${index.formatVersion}, this reader knows ${FORMAT_VERSION}`);
  }
  if (index.alignment !== BigInt(ALIGNMENT)) fail(`alignment ${index.alignment}, expected ${ALIGNMENT}`);
  if (index.chunkSize <= 0n) fail("chunk size is 0");
  try {
    checkModelKey(index.modelKey);
  } catch (err) {
    fail((err as ConnectError).rawMessage);
  }

  const files = new Set<string>();
  const claimFile = (name: string, what: string): void => {
    try {
      checkFileName(name);
    } catch (err) {
      fail(`${what}: ${(err as ConnectError).rawMessage}`);
    }
    if (name === INDEX_FILE || files.has(name)) fail(`${what}: file name ${name} used twice`);
    files.add(name);
  };

  let total = 0n;
  index.chunks.forEach((chunk, i) => {
    claimFile(chunk.fileName, `chunk ${i}`);
    if (chunk.byteLength % BigInt(ALIGNMENT) !== 0n) fail(`chunk ${chunk.fileName} length ${chunk.byteLength} is not aligned`);
    const algorithm = chunk.checksum?.algorithm ?? ChecksumAlgorithm.UNSPECIFIED;
    if (algorithm !== ChecksumAlgorithm.CRC32C && algorithm !== ChecksumAlgorithm.XXH3_64) {
      fail(`chunk ${chunk.fileName} has no checksum`);
    }
    total += chunk.byteLength;
  });
  if (total !== index.totalBytes) fail(`total_bytes ${index.totalBytes} differs from the chunks' sum ${total}`);
  for (const extra of index.extraFiles) claimFile(extra.name, "side file");

  const names = new Set<string>();
  const claimName = (name: string): void => {
    if (name === "") fail("a tensor has no name");
    if (names.has(name)) fail(`tensor name ${name} used twice`);
    names.add(name);
  };
  const perChunk: { start: bigint; end: bigint; name: string }[][] = index.chunks.map(() => []);
  for (const t of index.tensors) {
    claimName(t.name);
    t.aliases.forEach(claimName);
    const info = dtypeInfo(t.dtype);
    if (info === undefined) fail(`tensor ${t.name} has unknown dtype ${t.dtype}`);
    const elements = t.shape.reduce((a, b) => a * b, 1n);
    if (elements * BigInt(info!.size) !== t.byteLength) {
      fail(`tensor ${t.name}: byte length ${t.byteLength} is not shape [${t.shape.join(", ")}] × ${info!.size}`);
    }
    const chunk = index.chunks[t.chunk];
    if (chunk === undefined) fail(`tensor ${t.name} names chunk ${t.chunk} of ${index.chunks.length}`);
    if (t.offset % BigInt(ALIGNMENT) !== 0n) fail(`tensor ${t.name} offset ${t.offset} is not aligned`);
    if (t.offset + t.byteLength > chunk.byteLength) {
      fail(`tensor ${t.name} [${t.offset}, +${t.byteLength}) runs past ${chunk.fileName} (${chunk.byteLength} bytes)`);
    }
    if (t.byteLength > 0n) perChunk[t.chunk].push({ start: t.offset, end: t.offset + t.byteLength, name: t.name });
  }
  for (const spans of perChunk) {
    spans.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (let i = 1; i < spans.length; i++) {
      if (spans[i].start < spans[i - 1].end) fail(`tensors ${spans[i - 1].name} and ${spans[i].name} overlap`);
    }
  }
}
