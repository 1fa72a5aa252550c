// Object store throughput: thaw's S3 and Azure stores (parallel parts, parallel ranged reads)
// against a plain SDK copy of the same bytes (one PutObject/GetObject; uploadData/download),
// each against its local test server (moto, azurite), plus LocalStore for reference.
//
//   npx tsx bench/store/run.ts [--mb 512] [--runs 3] [--link-mbps 25]
//
// --link-mbps N repeats the object-store rows through proxies that cap every connection at
// N MB/s each way, as cloud stores cap a single stream; that is where parallelism pays.
//
// Prints GB/s (median of the runs) and thaw/SDK ratios. Both sides run in this process against
// the same server on the same machine, so the ratio says how the store's transfer logic compares
// with the SDK's plain path; the absolute figures are the local servers' limits, not a cloud's.
import { randomBytes } from "node:crypto";
import os from "node:os";
import { parseArgs } from "node:util";
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { BlobServiceClient } from "@azure/storage-blob";
import { AzureStore } from "../../src/store/azure-store.js";
import { LocalStore } from "../../src/store/local-store.js";
import { S3Store } from "../../src/store/s3-store.js";
import type { CheckpointStore } from "../../src/store/store.js";
import { startAzureServer, startS3Server, type S3TestServer } from "../../test/fixtures/object-servers.js";
import { tempDirs } from "../../test/fixtures/temp-dir.js";
import { ThrottleProxy } from "./throttle-proxy.js";

const { values } = parseArgs({
  options: { mb: { type: "string", default: "512" }, runs: { type: "string", default: "3" }, "link-mbps": { type: "string", default: "0" } },
});
const size = Number(values.mb) * (1 << 20);
const runs = Number(values.runs);
const linkMbps = Number(values["link-mbps"]);
const WRITE_PIECE = 8 << 20;
const BUCKET = "thaw-bench";

interface Row {
  backend: string;
  /** "parallel": default transfer options (16 MiB parts/ranges, 4 at a time); "1 stream": one at a time. */
  variant: string;
  direction: "upload" | "download";
  thaw: number;
  sdk?: number;
}

async function median(fn: () => Promise<void>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  times.sort((a, b) => a - b);
  return size / 1e9 / times[Math.floor(times.length / 2)];
}

async function thawUpload(store: CheckpointStore, data: Buffer): Promise<void> {
  const write = await store.beginWrite("bench--model@main");
  const out = await write.create("chunk-00000.bin");
  for (let at = 0; at < data.length; at += WRITE_PIECE) await out.write(data.subarray(at, at + WRITE_PIECE));
  await out.close();
  await write.publish(Buffer.from("index"));
}

async function thawDownload(store: CheckpointStore, data: Buffer): Promise<void> {
  let at = 0;
  for await (const piece of store.readRange("bench--model@main", "chunk-00000.bin", 0)) {
    if (!Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength).equals(data.subarray(at, at + piece.byteLength))) throw new Error(`mismatch at ${at}`);
    at += piece.byteLength;
  }
  if (at !== data.length) throw new Error(`read ${at} of ${data.length} bytes`);
}

async function drain(stream: AsyncIterable<Uint8Array>, data: Buffer): Promise<void> {
  let at = 0;
  for await (const piece of stream) {
    if (!Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength).equals(data.subarray(at, at + piece.byteLength))) throw new Error(`mismatch at ${at}`);
    at += piece.byteLength;
  }
  if (at !== data.length) throw new Error(`read ${at} of ${data.length} bytes`);
}

const rows: Row[] = [];
const dirs = tempDirs("thaw-bench-store-");
const data = randomBytes(size);
// One stream at a time: the store's own path without the parallelism, to separate the two effects.
const serial = { uploadConcurrency: 1, readConcurrency: 1 };

/** Rows for S3 and Azure Blob: thaw's stores, parallel and one stream at a time, beside the plain SDK. */
async function objectStores(label: string, bucket: string, s3Endpoint: string, s3: S3TestServer, connectionString: string): Promise<void> {
  // S3 on moto.
  const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
  const client = new S3Client({ endpoint: s3Endpoint, region: s3.region, forcePathStyle: true, credentials, requestChecksumCalculation: "WHEN_REQUIRED" });
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  const s3Parallel = new S3Store(`s3://${bucket}/thaw`, { endpoint: s3Endpoint, credentials, env: {} });
  const s3Serial = new S3Store(`s3://${bucket}/thaw`, { endpoint: s3Endpoint, credentials, env: {}, transfer: serial });
  const s3SdkUp = await median(async () => {
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: "sdk/blob.bin", Body: data, ContentLength: data.length }));
  });
  rows.push({ backend: `S3 (moto)${label}`, variant: "parallel", direction: "upload", thaw: await median(() => thawUpload(s3Parallel, data)), sdk: s3SdkUp });
  rows.push({ backend: `S3 (moto)${label}`, variant: "1 stream", direction: "upload", thaw: await median(() => thawUpload(s3Serial, data)), sdk: s3SdkUp });
  const s3SdkDown = await median(async () => {
    const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/blob.bin" }));
    await drain(res.Body as AsyncIterable<Uint8Array>, data);
  });
  rows.push({ backend: `S3 (moto)${label}`, variant: "parallel", direction: "download", thaw: await median(() => thawDownload(s3Parallel, data)), sdk: s3SdkDown });
  rows.push({ backend: `S3 (moto)${label}`, variant: "1 stream", direction: "download", thaw: await median(() => thawDownload(s3Serial, data)), sdk: s3SdkDown });
  s3Parallel.close();
  s3Serial.close();
  client.destroy();

  // Azure Blob on azurite.
  const service = BlobServiceClient.fromConnectionString(connectionString);
  await service.getContainerClient(bucket).create();
  const azParallel = new AzureStore(`az://${bucket}/thaw`, { connectionString, env: {} });
  const azSerial = new AzureStore(`az://${bucket}/thaw`, { connectionString, env: {}, transfer: serial });
  const blob = service.getContainerClient(bucket).getBlockBlobClient("sdk/blob.bin");
  const azSdkUp = await median(async () => {
    await blob.uploadData(data);
  });
  rows.push({ backend: `Azure Blob (azurite)${label}`, variant: "parallel", direction: "upload", thaw: await median(() => thawUpload(azParallel, data)), sdk: azSdkUp });
  rows.push({ backend: `Azure Blob (azurite)${label}`, variant: "1 stream", direction: "upload", thaw: await median(() => thawUpload(azSerial, data)), sdk: azSdkUp });
  const azSdkDown = await median(async () => {
    const res = await blob.download(0);
    await drain(res.readableStreamBody as AsyncIterable<Uint8Array>, data);
  });
  rows.push({ backend: `Azure Blob (azurite)${label}`, variant: "parallel", direction: "download", thaw: await median(() => thawDownload(azParallel, data)), sdk: azSdkDown });
  rows.push({ backend: `Azure Blob (azurite)${label}`, variant: "1 stream", direction: "download", thaw: await median(() => thawDownload(azSerial, data)), sdk: azSdkDown });
}

const [s3, azure] = await Promise.all([startS3Server(), startAzureServer()]);
try {
  // Local folder, for reference.
  const local = await LocalStore.open(await dirs.make(), { fsync: false });
  rows.push({ backend: "local folder", variant: "LocalStore", direction: "upload", thaw: await median(() => thawUpload(local, data)) });
  rows.push({ backend: "local folder", variant: "LocalStore", direction: "download", thaw: await median(() => thawDownload(local, data)) });

  await objectStores("", BUCKET, s3.endpoint, s3, azure.connectionString);
  if (linkMbps > 0) {
    // The same through links capped per connection, as a cloud store's per-connection limit does.
    const s3Link = await ThrottleProxy.start(s3.endpoint, linkMbps * 1e6);
    const azureLink = await ThrottleProxy.start(azure.blobEndpoint, linkMbps * 1e6);
    const linked = azure.connectionString.replace(azure.blobEndpoint, `${azureLink.origin}/${azure.accountName}`);
    try {
      await objectStores(`, ${linkMbps} MB/s per connection`, `${BUCKET}-link`, s3Link.origin, s3, linked);
    } finally {
      await Promise.all([s3Link.close(), azureLink.close()]);
    }
  }
} finally {
  await Promise.all([s3.stop(), azure.stop(), dirs.cleanup()]);
}

console.log(`${values.mb} MiB object, median of ${runs} runs, ${os.cpus().length} cores, node ${process.version}`);
console.log("| backend | direction | thaw store | thaw GB/s | plain SDK GB/s | thaw / SDK |");
console.log("|---|---|---|---:|---:|---:|");
for (const r of rows) {
  const sdk = r.sdk === undefined ? "—" : r.sdk.toFixed(3);
  const ratio = r.sdk === undefined ? "—" : `${(r.thaw / r.sdk).toFixed(2)}×`;
  console.log(`| ${r.backend} | ${r.direction} | ${r.variant} | ${r.thaw.toFixed(3)} | ${sdk} | ${ratio} |`);
}
