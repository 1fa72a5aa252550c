// thaw convert <hf-id-or-folder>: converts in this process, or through a running converter.
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { ConvertPhase, ConverterService } from "../gen/thaw/converter/v1/converter_service_pb.js";
import type { CheckpointIndex } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { DEFAULT_STORE, INTERNAL_TOKEN } from "../shared/defaults.js";
import { grpcClient } from "../shared/clients.js";
import { openStore } from "../store/open-store.js";
import { converterDeps } from "../converter/routes.js";
import { defaultModelId } from "../converter/convert.js";
import { ProgressBar } from "./progress-bar.js";

const USAGE = `usage: thaw convert <hf-id-or-folder> [--revision R] [--model-id ID] [--store DIR-or-URL]
                    [--chunk-size MiB] [--overwrite] [--converter HOST:PORT]

Converts a Hugging Face model (a Hub repo id, or a local folder with safetensors weights) into
thaw's checkpoint format in the store. Pickle weights (pytorch_model.bin) are refused.
  --revision   Hub branch, tag or commit (default main)
  --model-id   id to store it under (default: the repo id, or the folder's name)
  --store      folder, s3://bucket/prefix or az://container/prefix (default ${DEFAULT_STORE}; THAW_STORE)
  --chunk-size target chunk size in MiB (default 256)
  --overwrite  convert again even if the checkpoint exists
  --converter  ask a running converter (thaw converter) instead of converting here
Environment: HF_ENDPOINT, HF_TOKEN.`;

export async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      revision: { type: "string", default: "main" },
      "model-id": { type: "string" },
      store: { type: "string", default: DEFAULT_STORE },
      "chunk-size": { type: "string" },
      overwrite: { type: "boolean", default: false },
      converter: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return void process.stdout.write(USAGE + "\n");
  if (positionals.length !== 1) throw new Error(USAGE);
  const chunkMiB = values["chunk-size"] === undefined ? undefined : Number(values["chunk-size"]);
  if (chunkMiB !== undefined && !(chunkMiB > 0)) throw new Error(`--chunk-size must be a positive number of MiB`);
  // A folder given on the command line is resolved here, where the user's cwd means something.
  // An existing folder wins over a Hub id of the same spelling, as in transformers.
  const isFolder = existsSync(positionals[0]) && statSync(positionals[0]).isDirectory();
  const source = isFolder ? path.resolve(positionals[0]) : positionals[0];
  const job = {
    source,
    revision: values.revision,
    modelId: values["model-id"] ?? defaultModelId(source),
    chunkSize: chunkMiB === undefined ? undefined : Math.round(chunkMiB * 1024 * 1024),
    overwrite: values.overwrite,
  };

  const bar = new ProgressBar();
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  let index: CheckpointIndex | undefined;
  try {
    if (values.converter) {
      const client = grpcClient(ConverterService, values.converter, { token: INTERNAL_TOKEN });
      const stream = client.convert(
        { source: job.source, revision: job.revision, modelId: job.modelId, chunkSize: BigInt(job.chunkSize ?? 0), overwrite: job.overwrite },
        { signal: abort.signal },
      );
      for await (const progress of stream) {
        if (progress.phase === ConvertPhase.DONE) index = progress.index;
        else bar.update(progress);
      }
    } else {
      const store = await openStore(values.store);
      const deps = converterDeps({ store });
      index = await deps.convert(job, abort.signal, (p) => bar.update(p));
    }
  } finally {
    bar.finish();
    process.off("SIGINT", onSignal);
  }
  if (index === undefined) throw new Error("the converter ended without publishing a checkpoint");
  process.stdout.write(
    `${index.modelKey}: ${index.tensors.length} tensors in ${index.chunks.length} chunks, ` +
      `${(Number(index.totalBytes) / 1e9).toFixed(3)} GB\n`,
  );
}
