// Checkpoints in Azure Blob Storage:
//   az://container/prefix                                   account from the environment
//   https://<account>.blob.core.windows.net/container/prefix[?<SAS token>]
//
// Environment (read from options.env, default process.env), first match wins:
//   AZURE_STORAGE_CONNECTION_STRING        account, key or SAS, and endpoint (also the emulator's)
//   AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY (or AZURE_STORAGE_ACCESS_KEY)   shared key
//   AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_SAS_TOKEN                           SAS
// With an https URL and none of these, requests go anonymously (a public container can be read).
import {
  AnonymousCredential,
  BlobServiceClient,
  StorageSharedKeyCredential,
  type StoragePipelineOptions,
} from "@azure/storage-blob";
import { AzureBackend } from "./azure-backend.js";
import { ObjectStore, type ObjectStoreOptions } from "./object-store.js";

/** Credentials and endpoint; every field falls back to the environment. */
export interface AzureStoreOptions extends ObjectStoreOptions {
  connectionString?: string;
  accountName?: string;
  accountKey?: string;
  sasToken?: string;
  /** The environment to read settings from (default process.env). */
  env?: Record<string, string | undefined>;
  /** A ready service client, used as is. */
  client?: BlobServiceClient;
}

/** Parts of an Azure store URL. */
export interface AzureUrl {
  /** Undefined for az:// URLs (the account comes from the environment). */
  account?: string;
  /** https://<account>.blob.core.windows.net for https URLs. */
  serviceUrl?: string;
  container: string;
  prefix: string;
  /** A SAS token found in the URL's query. */
  sasToken?: string;
}

/** Matches the blob endpoints of Azure's clouds (public, China, US Government, …). */
const BLOB_HOST = /^([a-z0-9]{3,24})\.blob\.core\.[a-z0-9.-]+$/i;

export class AzureStore extends ObjectStore {
  readonly container: string;
  readonly prefix: string;

  constructor(url: string, options: AzureStoreOptions = {}) {
    const parsed = AzureStore.parseUrl(url);
    const location = parsed.serviceUrl !== undefined ? `${parsed.serviceUrl}/${parsed.container}/${parsed.prefix}` : `az://${parsed.container}/${parsed.prefix}`;
    const service = options.client ?? serviceClient(parsed, options, location);
    super(new AzureBackend(service.getContainerClient(parsed.container), location), parsed.prefix, options);
    this.container = parsed.container;
    this.prefix = parsed.prefix;
  }

  /** Whether `url` names an Azure Blob store (az:// or an https blob endpoint). */
  static matches(url: string): boolean {
    if (/^az:\/\//i.test(url)) return true;
    try {
      const u = new URL(url);
      return u.protocol === "https:" && BLOB_HOST.test(u.hostname);
    } catch {
      return false;
    }
  }

  static parseUrl(url: string): AzureUrl {
    const trimmed = url.trim();
    let account: string | undefined;
    let serviceUrl: string | undefined;
    let path: string;
    let sasToken: string | undefined;
    if (/^az:\/\//i.test(trimmed)) {
      path = trimmed.slice("az://".length);
    } else {
      let u: URL;
      try {
        u = new URL(trimmed);
      } catch {
        throw new TypeError(`not an Azure Blob URL: ${url} (expected az://container/prefix or https://<account>.blob.core.windows.net/container/prefix)`);
      }
      const host = BLOB_HOST.exec(u.hostname);
      if (u.protocol !== "https:" || host === null) {
        throw new TypeError(`not an Azure Blob URL: ${url} (expected https://<account>.blob.core.windows.net/container/prefix)`);
      }
      account = host[1].toLowerCase();
      serviceUrl = `https://${u.host}`;
      path = decodeURIComponent(u.pathname.slice(1));
      sasToken = u.search.length > 1 ? u.search.slice(1) : undefined;
    }
    const [container = "", ...rest] = path.split("/");
    if (!/^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/.test(container) && container !== "$root") {
      throw new TypeError(`bad Azure container name "${container}" in ${url}`);
    }
    return { account, serviceUrl, container, prefix: rest.join("/").replace(/^\/+|\/+$/g, ""), sasToken };
  }
}

function serviceClient(url: AzureUrl, options: AzureStoreOptions, location: string): BlobServiceClient {
  const env = options.env ?? process.env;
  // Retries are ours (retry.ts, ranged-read.ts): one policy for S3 and Azure, resumable reads.
  const pipeline: StoragePipelineOptions = { retryOptions: { maxTries: 1 }, keepAliveOptions: { enable: true } };
  const connectionString = options.connectionString ?? nonEmpty(env.AZURE_STORAGE_CONNECTION_STRING);
  const accountName = url.account ?? options.accountName ?? nonEmpty(env.AZURE_STORAGE_ACCOUNT);
  const accountKey = options.accountKey ?? nonEmpty(env.AZURE_STORAGE_KEY) ?? nonEmpty(env.AZURE_STORAGE_ACCESS_KEY);
  const sasToken = (url.sasToken ?? options.sasToken ?? nonEmpty(env.AZURE_STORAGE_SAS_TOKEN))?.replace(/^\?/, "");
  const serviceUrl = url.serviceUrl ?? (accountName !== undefined ? `https://${accountName}.blob.core.windows.net` : undefined);

  if (url.sasToken !== undefined) return new BlobServiceClient(`${serviceUrl}?${sasToken}`, new AnonymousCredential(), pipeline);
  // A connection string serves az:// URLs, and https URLs of the account it names.
  if (connectionString !== undefined && (url.account === undefined || connectionStringAccount(connectionString) === url.account)) {
    try {
      return BlobServiceClient.fromConnectionString(connectionString, pipeline);
    } catch (error) {
      throw new TypeError(`${location}: AZURE_STORAGE_CONNECTION_STRING is not a valid connection string (${String(error)})`);
    }
  }
  if (serviceUrl === undefined) {
    throw new TypeError(
      `${location}: no Azure account given; set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY, or use https://<account>.blob.core.windows.net/…`,
    );
  }
  if (accountName !== undefined && accountKey !== undefined) {
    return new BlobServiceClient(serviceUrl, new StorageSharedKeyCredential(accountName, accountKey), pipeline);
  }
  if (sasToken !== undefined) return new BlobServiceClient(`${serviceUrl}?${sasToken}`, new AnonymousCredential(), pipeline);
  return new BlobServiceClient(serviceUrl, new AnonymousCredential(), pipeline);
}

function connectionStringAccount(connectionString: string): string | undefined {
  return /(?:^|;)\s*AccountName=([^;]+)/i.exec(connectionString)?.[1]?.toLowerCase();
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}
