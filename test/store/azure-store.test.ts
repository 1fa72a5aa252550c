// AzureStore beyond the shared contract: URL forms, credentials from the environment (key,
// connection string, SAS) and what a missing account setting says. Runs on azurite.
import test from "ava";
import { randomBytes } from "node:crypto";
import {
  AccountSASPermissions,
  AccountSASResourceTypes,
  AccountSASServices,
  BlobServiceClient,
  StorageSharedKeyCredential,
  generateAccountSASQueryParameters,
} from "@azure/storage-blob";
import { AzureStore } from "../../src/store/azure-store.js";
import { openStore } from "../../src/store/open-store.js";
import type { CheckpointStore } from "../../src/store/store.js";
import { startAzureServer, type AzureTestServer } from "../fixtures/object-servers.js";

const CONTAINER = "thaw-azure-store";
let azure: AzureTestServer;

test.before(async () => {
  azure = await startAzureServer();
  await BlobServiceClient.fromConnectionString(azure.connectionString).getContainerClient(CONTAINER).create();
});

test.after.always(async () => {
  await azure?.stop();
});

async function roundTrip(t: { true(v: boolean, m?: string): void; deepEqual<T>(a: T, b: T): void }, store: CheckpointStore): Promise<void> {
  const data = randomBytes(3 << 20);
  const write = await store.beginWrite("org--m@main");
  const out = await write.create("chunk-00000.bin");
  await out.write(data);
  await out.close();
  await write.publish(Buffer.from("idx"));
  t.deepEqual(await store.list(), ["org--m@main"]);
  t.true(Buffer.from(await store.read("org--m@main", "chunk-00000.bin")).equals(data), "bytes match");
}

test("Azure URLs: az:// and the account's https endpoint, with or without a SAS", (t) => {
  t.deepEqual(AzureStore.parseUrl("az://models/prod/"), { account: undefined, serviceUrl: undefined, container: "models", prefix: "prod", sasToken: undefined });
  t.deepEqual(AzureStore.parseUrl("https://acct01.blob.core.windows.net/models/a/b?sv=2024&sig=x%3D"), {
    account: "acct01",
    serviceUrl: "https://acct01.blob.core.windows.net",
    container: "models",
    prefix: "a/b",
    sasToken: "sv=2024&sig=x%3D",
  });
  t.is(AzureStore.parseUrl("az://models").prefix, "");
  t.true(AzureStore.matches("https://acct01.blob.core.chinacloudapi.cn/models"));
  t.false(AzureStore.matches("https://example.com/models"));
  t.false(AzureStore.matches("http://acct01.blob.core.windows.net/models"));
  t.throws(() => AzureStore.parseUrl("az://Bad_Container/x"), { instanceOf: TypeError, message: /container name/ });
  t.throws(() => AzureStore.parseUrl("https://example.com/models"), { instanceOf: TypeError });
});

test("the connection string comes from AZURE_STORAGE_CONNECTION_STRING through openStore", async (t) => {
  const store = await openStore(`az://${CONTAINER}/env-cs`, { env: { AZURE_STORAGE_CONNECTION_STRING: azure.connectionString } });
  t.true(store instanceof AzureStore);
  await roundTrip(t, store);
});

test("a SAS token in the connection string is enough", async (t) => {
  const sas = generateAccountSASQueryParameters(
    {
      expiresOn: new Date(Date.now() + 3600_000),
      permissions: AccountSASPermissions.parse("rwdlac"),
      resourceTypes: AccountSASResourceTypes.parse("sco").toString(),
      services: AccountSASServices.parse("b").toString(),
    },
    new StorageSharedKeyCredential(azure.accountName, azure.accountKey),
  ).toString();
  const connectionString = `BlobEndpoint=${azure.blobEndpoint};SharedAccessSignature=${sas}`;
  await roundTrip(t, new AzureStore(`az://${CONTAINER}/sas`, { env: { AZURE_STORAGE_CONNECTION_STRING: connectionString } }));
});

test("without any account setting, az:// says which variables to set", (t) => {
  t.throws(() => new AzureStore(`az://${CONTAINER}/x`, { env: {} }), { message: /AZURE_STORAGE_CONNECTION_STRING.*AZURE_STORAGE_ACCOUNT/ });
});

test("an unreachable endpoint fails after retries with the URL in the message", async (t) => {
  const connectionString = `DefaultEndpointsProtocol=http;AccountName=${azure.accountName};AccountKey=${azure.accountKey};BlobEndpoint=http://127.0.0.1:9/${azure.accountName};`;
  const store = new AzureStore(`az://${CONTAINER}/x`, { connectionString, env: {}, transfer: { attempts: 2, baseDelayMs: 10 } });
  const error = await t.throwsAsync(store.list());
  t.regex(error!.message, /^az:\/\/thaw-azure-store\/x: cannot reach http:\/\/127\.0\.0\.1:9\//);
});
