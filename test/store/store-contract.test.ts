// The store contract (store-contract.ts) against LocalStore, S3 (moto) and Azure Blob (azurite).
import test from "ava";
import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { CreateBucketCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { BlobServiceClient } from "@azure/storage-blob";
import { AzureStore } from "../../src/store/azure-store.js";
import { LocalStore } from "../../src/store/local-store.js";
import { S3Store } from "../../src/store/s3-store.js";
import type { TransferOptions } from "../../src/store/transfer-options.js";
import { startAzureServer, startS3Server, type AzureTestServer, type S3TestServer } from "../fixtures/object-servers.js";
import { tempDirs } from "../fixtures/temp-dir.js";
import { CuttingProxy } from "./cutting-proxy.js";
import { CONTRACT_PART_SIZE, storeContract } from "./store-contract.js";

const BUCKET = "thaw-contract";
const transfer: Partial<TransferOptions> = {
  partSize: CONTRACT_PART_SIZE,
  uploadConcurrency: 3,
  rangeSize: 1 << 20,
  readConcurrency: 4,
  baseDelayMs: 20,
  maxDelayMs: 200,
};
const dirs = tempDirs("thaw-store-contract-");
let s3: S3TestServer;
let azure: AzureTestServer;
let s3Admin: S3Client;
let azureAdmin: BlobServiceClient;
const opened: { close(): void }[] = [];

test.before(async () => {
  [s3, azure] = await Promise.all([startS3Server(), startAzureServer()]);
  s3Admin = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  await s3Admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
  azureAdmin = BlobServiceClient.fromConnectionString(azure.connectionString);
  await azureAdmin.getContainerClient(BUCKET).create();
});

test.after.always(async () => {
  for (const store of opened) store.close();
  s3Admin?.destroy();
  await Promise.all([s3?.stop(), azure?.stop(), dirs.cleanup()]);
});

function s3Store(prefix: string, endpoint = s3.endpoint, secret = s3.secretAccessKey, bucket = BUCKET): S3Store {
  const store = new S3Store(`s3://${bucket}/${prefix}`, {
    endpoint,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: secret },
    transfer,
    env: {},
  });
  opened.push(store);
  return store;
}

function azureStore(prefix: string, blobEndpoint = azure.blobEndpoint, key = azure.accountKey, container = BUCKET): AzureStore {
  const connectionString = `DefaultEndpointsProtocol=http;AccountName=${azure.accountName};AccountKey=${key};BlobEndpoint=${blobEndpoint};`;
  return new AzureStore(`az://${container}/${prefix}`, { connectionString, transfer, env: {} });
}

storeContract(test, {
  name: "local",
  async store() {
    const root = await dirs.make();
    const store = await LocalStore.open(root, { fsync: false });
    return { store, rawKeys: () => filesUnder(root) };
  },
});

storeContract(test, {
  name: "s3",
  overNetwork: true,
  async store() {
    const prefix = `runs/${randomBytes(6).toString("hex")}`;
    return {
      store: s3Store(prefix),
      async rawKeys() {
        const objects = await s3Admin.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}/` }));
        const uploads = await s3Admin.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: `${prefix}/` }));
        return [
          ...(objects.Contents ?? []).map((o) => o.Key!),
          ...(uploads.Uploads ?? []).map((u) => `pending upload of ${u.Key}`),
        ].sort();
      },
      async viaProxy() {
        const proxy = await CuttingProxy.start(s3.endpoint);
        return { store: s3Store(prefix, proxy.origin), proxy };
      },
    };
  },
  missingContainer: async () => s3Store("x", s3.endpoint, s3.secretAccessKey, "no-such-bucket"),
  badCredentials: async () => s3Store("x", s3.endpoint, "not-the-secret"),
});

storeContract(test, {
  name: "azure",
  overNetwork: true,
  async store() {
    const prefix = `runs/${randomBytes(6).toString("hex")}`;
    return {
      store: azureStore(prefix),
      async rawKeys() {
        const keys: string[] = [];
        // Uncommitted blocks of an aborted upload show up as an uncommitted blob.
        for await (const blob of azureAdmin.getContainerClient(BUCKET).listBlobsFlat({ prefix: `${prefix}/`, includeUncommitedBlobs: true })) {
          keys.push(blob.name);
        }
        return keys.sort();
      },
      async viaProxy() {
        const proxy = await CuttingProxy.start(azure.blobEndpoint);
        return { store: azureStore(prefix, `${proxy.origin}/${azure.accountName}`), proxy };
      },
    };
  },
  missingContainer: async () => azureStore("x", azure.blobEndpoint, azure.accountKey, "no-such-container"),
  badCredentials: async () => azureStore("x", azure.blobEndpoint, randomBytes(64).toString("base64")),
});

async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.relative(root, path.join(e.parentPath, e.name))).sort();
}
