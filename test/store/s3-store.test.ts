// S3Store beyond the shared contract: URLs, settings from the environment, checksummed
// multipart uploads, checkpoints copied in flat, and readers across an overwrite. Runs on moto.
import test from "ava";
import { randomBytes } from "node:crypto";
import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { openStore } from "../../src/store/open-store.js";
import { S3Store } from "../../src/store/s3-store.js";
import type { CheckpointStore } from "../../src/store/store.js";
import { startS3Server, type S3TestServer } from "../fixtures/object-servers.js";

const BUCKET = "thaw-s3-store";
const transfer = { partSize: 5 << 20, rangeSize: 1 << 20, baseDelayMs: 20, maxDelayMs: 200 };
let s3: S3TestServer;
let admin: S3Client;
const opened: S3Store[] = [];

test.before(async () => {
  s3 = await startS3Server();
  admin = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  await admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
});

test.after.always(async () => {
  for (const store of opened) store.close();
  admin?.destroy();
  await s3?.stop();
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, ...extra };
}

function store(prefix: string, options: ConstructorParameters<typeof S3Store>[1] = {}): S3Store {
  const s = new S3Store(`s3://${BUCKET}/${prefix}`, { env: env({ THAW_S3_ENDPOINT: s3.endpoint }), transfer, ...options });
  opened.push(s);
  return s;
}

async function put(s: CheckpointStore, key: string, files: Record<string, Uint8Array>, index: string): Promise<void> {
  const write = await s.beginWrite(key);
  for (const [name, data] of Object.entries(files)) {
    const out = await write.create(name);
    await out.write(data);
    await out.close();
  }
  await write.publish(Buffer.from(index));
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

test("s3:// URLs split into bucket and prefix", (t) => {
  t.deepEqual(S3Store.parseUrl("s3://my-bucket/models/prod/"), { bucket: "my-bucket", prefix: "models/prod" });
  t.deepEqual(S3Store.parseUrl("s3://my-bucket"), { bucket: "my-bucket", prefix: "" });
  t.deepEqual(S3Store.parseUrl("s3://my.bucket.2/"), { bucket: "my.bucket.2", prefix: "" });
  t.throws(() => S3Store.parseUrl("s3://"), { instanceOf: TypeError });
  t.throws(() => S3Store.parseUrl("s3://Bad_Bucket/x"), { instanceOf: TypeError, message: /bucket name/ });
  t.throws(() => S3Store.parseUrl("https://my-bucket/x"), { instanceOf: TypeError });
});

test("endpoint and credentials come from the environment through openStore", async (t) => {
  for (const variable of ["THAW_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]) {
    const s = (await openStore(`s3://${BUCKET}/env-${variable}`, { env: env({ [variable]: s3.endpoint }), transfer })) as S3Store;
    opened.push(s);
    t.true(s instanceof S3Store);
    await put(s, "org--m@main", { "chunk-00000.bin": Buffer.from("hello") }, "i");
    t.deepEqual(await s.list(), ["org--m@main"], variable);
  }
});

test("uploads with CRC32 checksums (the AWS default) complete multipart uploads", async (t) => {
  const s = store("checksums", { checksums: true });
  const data = randomBytes((5 << 20) * 2 + 17);
  await put(s, "org--m@main", { "chunk-00000.bin": data, "config.json": Buffer.from("{}") }, "idx");
  t.true((await collect(s.readRange("org--m@main", "chunk-00000.bin", 0))).equals(data));
});

test("a checkpoint copied in flat (index without a generation) is readable and replaceable", async (t) => {
  const prefix = "flat";
  const chunk = randomBytes(9000);
  // As `aws s3 sync` of a local store would leave it.
  for (const [name, body] of [["chunk-00000.bin", chunk], ["config.json", Buffer.from("{}")], ["model.idx", Buffer.from("flat")]] as const) {
    await admin.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${prefix}/org--m@main/${name}`, Body: body }));
  }
  const s = store(prefix);
  t.deepEqual(await s.list(), ["org--m@main"]);
  t.true((await collect(s.readRange("org--m@main", "chunk-00000.bin", 100, 200))).equals(chunk.subarray(100, 300)));
  await put(s, "org--m@main", { "chunk-00000.bin": Buffer.from("new") }, "v2");
  t.is(Buffer.from(await s.read("org--m@main", "chunk-00000.bin")).toString(), "new");
  const keys = (await admin.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}/` }))).Contents!.map((o) => o.Key!);
  t.is(keys.length, 2, keys.join(", ")); // the new index and the new chunk; the flat files are gone
});

test("an overwrite keeps the old checkpoint readable until the flip; readers then follow the new index", async (t) => {
  const writer = store("flip");
  const reader = store("flip");
  const v1 = randomBytes(20_000);
  const v2 = randomBytes(30_000);
  await put(writer, "org--m@main", { "chunk-00000.bin": v1 }, "v1");
  t.true(Buffer.from(await reader.read("org--m@main", "chunk-00000.bin")).equals(v1)); // reader remembers v1's generation

  const write = await writer.beginWrite("org--m@main");
  const out = await write.create("chunk-00000.bin");
  await out.write(v2);
  await out.close();
  t.true(Buffer.from(await reader.read("org--m@main", "chunk-00000.bin")).equals(v1), "still v1 before publish");
  await write.publish(Buffer.from("v2"));

  t.true(Buffer.from(await reader.read("org--m@main", "chunk-00000.bin")).equals(v2), "v2 after publish");
  t.deepEqual(await reader.stat("org--m@main", "chunk-00000.bin"), { size: v2.length });
  t.is(Buffer.from(await reader.read("org--m@main", "model.idx")).toString(), "v2");
});

test("a part size below S3's 5 MiB minimum is refused up front", (t) => {
  t.throws(() => new S3Store(`s3://${BUCKET}/x`, { env: {}, region: "us-east-1", transfer: { partSize: 1 << 20 } }), {
    instanceOf: RangeError,
    message: /minimum/,
  });
});

test("a store at the bucket root (no prefix) works", async (t) => {
  const bucket = "thaw-s3-root";
  await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  const s = new S3Store(`s3://${bucket}`, { env: env({ THAW_S3_ENDPOINT: s3.endpoint }), transfer });
  opened.push(s);
  await put(s, "org--m@main", { "chunk-00000.bin": Buffer.from("x") }, "i");
  t.deepEqual(await s.list(), ["org--m@main"]);
  t.is(await s.delete("org--m@main"), 2);
  t.deepEqual(await s.list(), []);
});

test("an unreachable endpoint fails after retries with the URL in the message", async (t) => {
  const s = new S3Store(`s3://${BUCKET}/x`, { env: env({ THAW_S3_ENDPOINT: "http://127.0.0.1:9" }), transfer: { attempts: 2, baseDelayMs: 10 } });
  opened.push(s);
  const error = await t.throwsAsync(s.list());
  t.regex(error!.message, /s3:\/\/thaw-s3-store\/x/);
  t.regex(error!.message, /cannot reach http:\/\/127\.0\.0\.1:9 .*check the endpoint/);
});
