// thaw make-tiny-model <dir> [--arch llama|mistral|qwen2]
import { parseArgs } from "node:util";
import { makeTinyModel, TINY_ARCHITECTURES, type TinyArchitecture } from "../tiny-model/tiny-model.js";

const USAGE = `usage: thaw make-tiny-model <dir> [--arch ${TINY_ARCHITECTURES.join("|")}]

Writes a deterministic random-weight model (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a chat template, generation_config.json) into <dir>.`;

export async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { arch: { type: "string", default: "llama" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) return void process.stdout.write(USAGE + "\n");
  const arch = values.arch as TinyArchitecture;
  if (positionals.length !== 1 || !TINY_ARCHITECTURES.includes(arch)) throw new Error(USAGE);
  await makeTinyModel(positionals[0], arch);
  process.stdout.write(`wrote the tiny ${arch} model to ${positionals[0]}\n`);
}
