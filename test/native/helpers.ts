// Shared fixtures of the native tests: temporary files of random bytes, checkpoints in thaw's
// format, and the fake libcudart built from fixtures/fake-cudart.c.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { type CheckpointIndex, CheckpointIndexSchema, ChecksumAlgorithm } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { crc32c } from "../../src/native/checksum.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ADDON = path.resolve(here, "../../native/build/Release/thaw_native.node");

/** A fresh folder under `root` (default the OS temp dir) and a function that removes it. */
export function tempDir(root = tmpdir()): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(root, "thaw-native-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Writes `size` random bytes to dir/name and returns them. */
export function randomFile(dir: string, name: string, size: number): Buffer {
  const data = randomBytes(size);
  writeFileSync(path.join(dir, name), data);
  return data;
}

/** Writes a checkpoint folder of random chunks (lengths multiples of 4096) and its index. */
export async function writeCheckpoint(dir: string, chunkLengths: number[]): Promise<{ index: CheckpointIndex; data: Buffer[] }> {
  const data: Buffer[] = [];
  const chunks = [];
  for (const [i, length] of chunkLengths.entries()) {
    const name = `chunk-${String(i).padStart(5, "0")}.bin`;
    const bytes = randomFile(dir, name, length);
    data.push(bytes);
    chunks.push({
      fileName: name,
      byteLength: BigInt(length),
      checksum: { algorithm: ChecksumAlgorithm.CRC32C, value: BigInt(await crc32c(bytes)) },
    });
  }
  const total = chunkLengths.reduce((a, b) => a + b, 0);
  const index = create(CheckpointIndexSchema, {
    formatVersion: 1,
    ref: { modelId: "test/model", revision: "main" },
    modelKey: "test--model@main",
    alignment: 4096n,
    chunkSize: 1n << 28n,
    chunks,
    totalBytes: BigInt(total),
  });
  return { index, data };
}

/** Builds the fake libcudart (once per variant) and returns its path, or undefined without a C compiler. */
export function fakeCudart(dir: string, variant: "ok" | "missing-symbol" = "ok"): string | undefined {
  const out = path.join(dir, `libfakecudart-${variant}.so`);
  if (existsSync(out)) return out;
  const args = ["-shared", "-fPIC", "-O2", "-o", out, path.join(here, "fixtures/fake-cudart.c")];
  if (variant === "missing-symbol") args.unshift("-DFAKE_MISSING_SYMBOL");
  try {
    execFileSync("cc", args, { stdio: "pipe" });
  } catch {
    return undefined;
  }
  return out;
}

/** Runs a CommonJS snippet in a child node that has `addon` bound to the native module. */
export function runAddonChild(code: string, env: Record<string, string>): string {
  const script = `const addon = require(${JSON.stringify(ADDON)});\n(async () => {\n${code}\n})().catch((e) => { console.error(e); process.exit(1); });`;
  return execFileSync(process.execPath, ["-e", script], { env: { ...process.env, ...env }, encoding: "utf8" });
}
