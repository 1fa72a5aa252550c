// Opens the checkpoint store a URL names:
//   /path, ./path, file:///path                 LocalStore
//   s3://bucket/prefix                          S3Store (AWS or S3-compatible; see s3-store.ts)
//   az://container/prefix                       AzureStore (account from the environment)
//   https://<account>.blob.core.windows.net/container/prefix[?sas]   AzureStore
// The SDKs load only when their store is asked for, so a local store starts fast.
import { fileURLToPath } from "node:url";
import type { AzureStoreOptions } from "./azure-store.js";
import type { LocalStoreOptions } from "./local-store.js";
import type { ObjectStoreOptions } from "./object-store.js";
import type { S3StoreOptions } from "./s3-store.js";
import type { CheckpointStore } from "./store.js";

/** Per-backend options; `env` and the shared object-store options apply to S3 and Azure alike. */
export interface OpenStoreOptions extends ObjectStoreOptions {
  local?: LocalStoreOptions;
  s3?: S3StoreOptions;
  azure?: AzureStoreOptions;
  /** The environment to read endpoints and credentials from (default process.env). */
  env?: Record<string, string | undefined>;
}

export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<CheckpointStore> {
  const trimmed = url.trim();
  if (trimmed === "") throw new TypeError("store URL is empty: give a folder, s3://bucket/prefix or az://container/prefix");
  const shared: ObjectStoreOptions & { env?: Record<string, string | undefined> } = {
    transfer: options.transfer,
    warn: options.warn,
    env: options.env,
  };
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(trimmed)?.[1]?.toLowerCase();
  if (scheme === undefined || scheme === "file") {
    const { LocalStore } = await import("./local-store.js");
    return LocalStore.open(scheme === "file" ? fileURLToPath(trimmed) : trimmed, options.local);
  }
  if (scheme === "s3") {
    const { S3Store } = await import("./s3-store.js");
    return new S3Store(trimmed, { ...shared, ...definedOnly(options.s3) });
  }
  const { AzureStore } = await import("./azure-store.js");
  if (AzureStore.matches(trimmed)) return new AzureStore(trimmed, { ...shared, ...definedOnly(options.azure) });
  throw new TypeError(
    `unsupported store URL ${trimmed}: use a folder, file://, s3://bucket/prefix (S3-compatible servers: set THAW_S3_ENDPOINT), ` +
      `az://container/prefix or https://<account>.blob.core.windows.net/container/prefix`,
  );
}

function definedOnly<T extends object>(value: T | undefined): Partial<T> {
  return Object.fromEntries(Object.entries(value ?? {}).filter(([, v]) => v !== undefined)) as Partial<T>;
}
