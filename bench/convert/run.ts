// Conversion throughput against `cp -r` of the same bytes, measured in the same run on the same
// warm page cache.
//
//   npx tsx bench/convert/run.ts [--gb 2] [--repeat 3] [--dir bench/out/convert] [--fsync] [--keep]
//
// Writes a synthetic Llama-shaped bf16 checkpoint (random bytes, sharded safetensors), reads it
// once to warm the cache, then alternates `cp -r` and convertModel into a LocalStore, deleting
// (and syncing) the outputs between runs. Prints GB/s of each (best and median of the runs), the
// CPU seconds each used, and the ratio convert / cp of the best runs.
// --fsync makes the store fsync before publishing and compares with `cp -r && sync`.
import { spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdir, open, readdir, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { convertModel } from "../../src/converter/convert.js";
import { LocalStore } from "../../src/store/local-store.js";

const { values: args } = parseArgs({
  options: {
    gb: { type: "string", default: "2" },
    repeat: { type: "string", default: "3" },
    dir: { type: "string", default: "bench/out/convert" },
    "shard-gb": { type: "string", default: "1" },
    fsync: { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
    "block-mib": { type: "string" },
    buffers: { type: "string" },
  },
});

const GB = 1e9;
const target = Number(args.gb) * GB;
const root = path.resolve(args.dir!);
const source = path.join(root, "source");

/** Llama-like shapes (hidden 2048, GQA 8×64 kv, MLP 8192, vocab 32000), layers chosen to reach the size. */
function llamaTensors(targetBytes: number): { name: string; shape: number[] }[] {
  const hidden = 2048, kv = 512, mlp = 8192, vocab = 32000;
  const layer = (name: string): { name: string; shape: number[] }[] => [
    { name: `${name}.input_layernorm.weight`, shape: [hidden] },
    { name: `${name}.self_attn.q_proj.weight`, shape: [hidden, hidden] },
    { name: `${name}.self_attn.k_proj.weight`, shape: [kv, hidden] },
    { name: `${name}.self_attn.v_proj.weight`, shape: [kv, hidden] },
    { name: `${name}.self_attn.o_proj.weight`, shape: [hidden, hidden] },
    { name: `${name}.post_attention_layernorm.weight`, shape: [hidden] },
    { name: `${name}.mlp.gate_proj.weight`, shape: [mlp, hidden] },
    { name: `${name}.mlp.up_proj.weight`, shape: [mlp, hidden] },
    { name: `${name}.mlp.down_proj.weight`, shape: [hidden, mlp] },
  ];
  const bytes = (ts: { shape: number[] }[]) => ts.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1) * 2, 0);
  const ends = [
    { name: "model.embed_tokens.weight", shape: [vocab, hidden] },
    { name: "model.norm.weight", shape: [hidden] },
    { name: "lm_head.weight", shape: [vocab, hidden] },
  ];
  const layers = Math.max(1, Math.round((targetBytes - bytes(ends)) / bytes(layer("x"))));
  return [ends[0], ...Array.from({ length: layers }, (_, i) => layer(`model.layers.${i}`)).flat(), ends[1], ends[2]];
}

/** Writes the shards, the index and the side files; random bytes, every tensor different. */
async function writeSource(): Promise<number> {
  await rm(source, { recursive: true, force: true });
  await mkdir(source, { recursive: true });
  const tensors = llamaTensors(target);
  const shardLimit = Number(args["shard-gb"]) * GB;
  const shards: (typeof tensors)[] = [[]];
  let inShard = 0;
  for (const t of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1) * 2;
    if (inShard > 0 && inShard + size > shardLimit) {
      shards.push([]);
      inShard = 0;
    }
    shards.at(-1)!.push(t);
    inShard += size;
  }
  const pool = randomFillSync(Buffer.allocUnsafe(64 << 20));
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const [s, list] of shards.entries()) {
    const file = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;
    const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
    let offset = 0;
    for (const t of list) {
      const size = t.shape.reduce((a, b) => a * b, 1) * 2;
      header[t.name] = { dtype: "BF16", shape: t.shape, data_offsets: [offset, offset + size] };
      offset += size;
      weightMap[t.name] = file;
    }
    let json = Buffer.from(JSON.stringify(header));
    json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
    const handle = await open(path.join(source, file), "w");
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    await handle.write(Buffer.concat([prefix, json]));
    for (const [i, t] of list.entries()) {
      let left = t.shape.reduce((a, b) => a * b, 1) * 2;
      let at = (i * 7919 * 4096 + s * 104729) % pool.length;
      let first = true;
      while (left > 0) {
        const n = Math.min(left, pool.length - at, 16 << 20);
        const piece = Buffer.from(pool.subarray(at, at + n));
        if (first) piece.writeUInt32LE(s * 100_000 + i, 0); // no two tensors alike, so none is "tied"
        first = false;
        await handle.write(piece);
        left -= n;
        at = (at + n) % pool.length;
      }
    }
    await handle.close();
    total += 8 + json.length + offset;
  }
  const side = {
    "model.safetensors.index.json": JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }),
    "config.json": JSON.stringify({ architectures: ["LlamaForCausalLM"], hidden_size: 2048, num_hidden_layers: (tensors.length - 3) / 9 }),
    "tokenizer.json": JSON.stringify({ version: "1.0" }),
  };
  for (const [name, body] of Object.entries(side)) await writeFile(path.join(source, name), body);
  return folderBytes(source);
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) total += (await stat(path.join(dir, name))).size;
  return total;
}

function sh(cmd: string, argv: string[]): void {
  const r = spawnSync(cmd, argv, { stdio: ["ignore", "ignore", "inherit"] });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(" ")} failed`);
}

interface Timing {
  wall: number;
  /** CPU seconds (user + system), when measurable. */
  cpu?: number;
}

async function timeCp(): Promise<Timing> {
  const dest = path.join(root, "cp-out");
  const t0 = performance.now();
  // /usr/bin/time reports cp's CPU time; plain cp where it is missing
  const timed = spawnSync("/usr/bin/time", ["-f", "%U %S", "cp", "-r", source, dest], { encoding: "utf8" });
  let cpu: number | undefined;
  if (timed.error === undefined && timed.status === 0) {
    const [user, system] = timed.stderr.trim().split("\n").at(-1)!.split(" ").map(Number);
    cpu = user + system;
  } else {
    await rm(dest, { recursive: true, force: true });
    sh("cp", ["-r", source, dest]);
  }
  if (args.fsync) sh("sync", []);
  const wall = (performance.now() - t0) / 1000;
  await rm(dest, { recursive: true, force: true });
  sh("sync", []);
  return { wall, cpu };
}

async function timeConvert(): Promise<Timing> {
  const storeRoot = path.join(root, "store");
  await rm(storeRoot, { recursive: true, force: true });
  const store = await LocalStore.open(storeRoot, { fsync: args.fsync });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await convertModel({
    source,
    modelId: "bench/llama-like",
    store,
    blockSize: args["block-mib"] ? Number(args["block-mib"]) << 20 : undefined,
    buffers: args.buffers ? Number(args.buffers) : undefined,
  });
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await rm(storeRoot, { recursive: true, force: true });
  sh("sync", []);
  return { wall, cpu: (cpu.user + cpu.system) / 1e6 };
}

const bytes = await writeSource();
sh("sync", []);
sh("cat", (await readdir(source)).map((n) => path.join(source, n))); // warm the page cache (output discarded)
console.log(`source: ${(bytes / GB).toFixed(2)} GB in ${source} (${os.cpus().length} cores, fsync ${args.fsync ? "on" : "off"})`);

const cpRuns: Timing[] = [];
const convertRuns: Timing[] = [];
for (let r = 0; r < Number(args.repeat); r++) {
  // alternate the order so neither always runs right after the other's writeback
  const order = r % 2 === 0 ? [timeCp, timeConvert] : [timeConvert, timeCp];
  for (const run of order) {
    const t = await run();
    (run === timeCp ? cpRuns : convertRuns).push(t);
    const cpu = t.cpu === undefined ? "" : `, ${t.cpu.toFixed(2)} s CPU`;
    console.log(`  run ${r + 1} ${run === timeCp ? "cp -r  " : "convert"}: ${t.wall.toFixed(2)} s  ${(bytes / t.wall / GB).toFixed(2)} GB/s${cpu}`);
  }
}
const rate = (runs: Timing[], pick: (xs: number[]) => number) => bytes / pick(runs.map((t) => t.wall)) / GB;
const best = (xs: number[]) => Math.min(...xs);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cpu = (runs: Timing[]) => (runs.every((t) => t.cpu !== undefined) ? `, CPU ${median(runs.map((t) => t.cpu!)).toFixed(2)} s` : "");
const cpRate = rate(cpRuns, best);
const convertRate = rate(convertRuns, best);
const cpName = `cp -r${args.fsync ? " && sync" : ""}`;
console.log(`${cpName}: ${cpRate.toFixed(2)} GB/s best of ${cpRuns.length} (median ${rate(cpRuns, median).toFixed(2)}${cpu(cpRuns)})`);
console.log(`convert: ${convertRate.toFixed(2)} GB/s best of ${convertRuns.length} (median ${rate(convertRuns, median).toFixed(2)}${cpu(convertRuns)})`);
console.log(`ratio convert / cp: ${(convertRate / cpRate).toFixed(2)} best, ${(rate(convertRuns, median) / rate(cpRuns, median)).toFixed(2)} median (target >= 0.8)`);
console.log(
  `| ${new Date().toISOString().slice(0, 10)} | dev (${os.cpus().length} cores, no GPU) | \`npx tsx bench/convert/run.ts --gb ${args.gb}${args.fsync ? " --fsync" : ""}\` | ` +
    `${convertRate.toFixed(2)} GB/s | ${cpRate.toFixed(2)} GB/s (${cpName}) | ${(convertRate / cpRate).toFixed(2)} |`,
);
if (!args.keep) await rm(root, { recursive: true, force: true });
