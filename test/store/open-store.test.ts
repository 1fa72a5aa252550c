// openStore picks the backend from the URL; nothing here talks to a server.
import test from "ava";
import { pathToFileURL } from "node:url";
import { AzureStore } from "../../src/store/azure-store.js";
import { LocalStore } from "../../src/store/local-store.js";
import { openStore } from "../../src/store/open-store.js";
import { S3Store } from "../../src/store/s3-store.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs("thaw-open-store-");
test.after.always(() => dirs.cleanup());

test("a folder or a file:// URL opens a LocalStore", async (t) => {
  const dir = await dirs.make();
  const plain = await openStore(dir);
  t.true(plain instanceof LocalStore);
  t.is(plain.location, dir);
  const viaUrl = await openStore(pathToFileURL(dir).href);
  t.true(viaUrl instanceof LocalStore);
  t.is(viaUrl.location, dir);
});

test("s3:// opens an S3Store over bucket and prefix", async (t) => {
  const store = await openStore("s3://my-bucket/models/prod", { env: { AWS_REGION: "eu-west-1" } });
  t.true(store instanceof S3Store);
  t.is((store as S3Store).bucket, "my-bucket");
  t.is((store as S3Store).prefix, "models/prod");
  t.is(store.location, "s3://my-bucket/models/prod");
  (store as S3Store).close();
});

test("az:// and https blob endpoints open an AzureStore", async (t) => {
  const env = { AZURE_STORAGE_CONNECTION_STRING: "DefaultEndpointsProtocol=https;AccountName=acct01;AccountKey=a2V5;EndpointSuffix=core.windows.net" };
  const az = await openStore("az://models/prod", { env });
  t.true(az instanceof AzureStore);
  t.is(az.location, "az://models/prod");
  const https = await openStore("https://acct01.blob.core.windows.net/models/prod?sv=1&sig=secret", { env: {} });
  t.true(https instanceof AzureStore);
  t.is(https.location, "https://acct01.blob.core.windows.net/models/prod", "the SAS stays out of messages");
});

test("other URLs are refused with the forms that work", async (t) => {
  for (const url of ["gs://bucket/x", "http://127.0.0.1:9000/bucket", "https://example.com/models"]) {
    await t.throwsAsync(openStore(url), { instanceOf: TypeError, message: /s3:\/\/bucket\/prefix.*az:\/\/container\/prefix/ }, url);
  }
  await t.throwsAsync(openStore("  "), { instanceOf: TypeError });
});
