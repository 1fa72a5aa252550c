// A model converted into each store (local, S3 on moto, Azure on azurite) reads back tensor for
// tensor through the checkpoint reader, which also verifies every chunk's checksum.
import test from "ava";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { BlobServiceClient } from "@azure/storage-blob";
import { CheckpointReader } from "../../src/checkpoint/checkpoint-reader.js";
import { convertModel } from "../../src/converter/convert.js";
import { AzureStore } from "../../src/store/azure-store.js";
import { LocalStore } from "../../src/store/local-store.js";
import { S3Store } from "../../src/store/s3-store.js";
import type { CheckpointStore } from "../../src/store/store.js";
import { makeTinyModel } from "../../src/tiny-model/tiny-model.js";
import { startAzureServer, startS3Server, type AzureTestServer, type S3TestServer } from "../fixtures/object-servers.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const BUCKET = "thaw-convert";
const transfer = { partSize: 5 << 20, rangeSize: 1 << 20, baseDelayMs: 20, maxDelayMs: 200 };
const dirs = tempDirs("thaw-convert-store-");
let s3: S3TestServer;
let azure: AzureTestServer;
let sources: { plain: string; tiny: string };
const opened: S3Store[] = [];

test.before(async () => {
  [s3, azure] = await Promise.all([startS3Server(), startAzureServer()]);
  const admin = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  await admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
  admin.destroy();
  await BlobServiceClient.fromConnectionString(azure.connectionString).getContainerClient(BUCKET).create();
  const root = await dirs.make();
  sources = { plain: path.join(root, "plain"), tiny: path.join(root, "tiny") };
  await writeSafetensorsModel(sources.plain);
  await makeTinyModel(sources.tiny);
});

test.after.always(async () => {
  for (const store of opened) store.close();
  await Promise.all([s3?.stop(), azure?.stop(), dirs.cleanup()]);
});

/** config.json and a model.safetensors with F32 tensors, one larger than an upload part. */
async function writeSafetensorsModel(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ architectures: ["LlamaForCausalLM"], model_type: "llama" }));
  const tensors: [string, number[]][] = [
    ["model.embed_tokens.weight", [1543, 1024]], // 6.03 MiB: its own chunk, two upload parts
    ["model.norm.weight", [1024]],
    ["lm_head.weight", [3, 5]],
  ];
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  const bodies: Buffer[] = [];
  let offset = 0;
  for (const [name, shape] of tensors) {
    const bytes = randomBytes(shape.reduce((a, b) => a * b, 1) * 4);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes.length] };
    bodies.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  await writeFile(path.join(dir, "model.safetensors"), Buffer.concat([length, Buffer.from(json), ...bodies]));
}

/** Tensor bytes by name from a single-file safetensors model. */
async function safetensorsTensors(dir: string): Promise<Map<string, Buffer>> {
  const file = await readFile(path.join(dir, "model.safetensors"));
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString()) as Record<string, { data_offsets: [number, number] }>;
  const base = 8 + headerLength;
  const out = new Map<string, Buffer>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    out.set(name, file.subarray(base + entry.data_offsets[0], base + entry.data_offsets[1]));
  }
  return out;
}

const stores: Record<string, () => Promise<CheckpointStore>> = {
  local: async () => LocalStore.open(await dirs.make(), { fsync: false }),
  s3: async () => {
    const store = new S3Store(`s3://${BUCKET}/${randomBytes(4).toString("hex")}`, {
      endpoint: s3.endpoint,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      transfer,
      env: {},
    });
    opened.push(store);
    return store;
  },
  azure: async () =>
    new AzureStore(`az://${BUCKET}/${randomBytes(4).toString("hex")}`, { connectionString: azure.connectionString, transfer, env: {} }),
};

for (const [kind, open] of Object.entries(stores)) {
  for (const source of ["plain", "tiny"] as const) {
    test(`${kind}: a converted ${source} model reads back tensor for tensor`, async (t) => {
      const store = await open();
      const folder = sources[source];
      const index = await convertModel({ source: folder, modelId: `test/${source}`, store, chunkSize: 1 << 20 });
      t.deepEqual(await store.list(), [index.modelKey]);
      const reader = await CheckpointReader.open(store, index.modelKey); // verifies every chunk's checksum
      const expected = await safetensorsTensors(folder);
      t.deepEqual(reader.names().sort(), [...expected.keys()].sort());
      for (const [name, bytes] of expected) {
        t.true(Buffer.from(await reader.tensor(name)).equals(bytes), name);
      }
      t.deepEqual(JSON.parse(Buffer.from(await store.read(index.modelKey, "config.json")).toString()), JSON.parse(await readFile(path.join(folder, "config.json"), "utf8")));
    });
  }
}
