// ObjectBackend over one Azure Blob container, with @azure/storage-blob. Part uploads are block
// blobs: blocks are staged concurrently and committed in order.
import type { ContainerClient } from "@azure/storage-blob";
import type { ListedObject, ObjectBackend, ObjectBody, ObjectHead, PartUpload } from "./object-backend.js";
import { StoreAccessError } from "./store-access-error.js";
import { NotFoundError } from "./store.js";

/** Error codes Azure uses when it rejects who is asking. */
const CREDENTIAL_ERRORS = new Set([
  "AuthenticationFailed",
  "AuthorizationFailure",
  "AuthorizationPermissionMismatch",
  "AuthorizationResourceTypeMismatch",
  "AuthorizationProtocolMismatch",
  "AuthorizationSourceIPMismatch",
  "InsufficientAccountPermissions",
  "InvalidAuthenticationInfo",
  "NoAuthenticationInformation",
  "AccountIsDisabled",
]);

/** Socket errors that mean the endpoint cannot be reached at all. */
const UNREACHABLE_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN"]);

const CREDENTIAL_HINT =
  "check AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY, or the SAS token (AZURE_STORAGE_SAS_TOKEN or the URL's query), and that it may read and write this container";

/** Deletes in flight at once (Azure deletes one blob per request). */
const DELETE_CONCURRENCY = 16;

export class AzureBackend implements ObjectBackend {
  readonly maxParts = 50_000;
  readonly minPartSize = 1;

  constructor(
    private readonly container: ContainerClient,
    readonly location: string,
  ) {}

  async head(key: string, signal?: AbortSignal): Promise<ObjectHead | undefined> {
    try {
      const res = await this.container.getBlobClient(key).getProperties({ abortSignal: signal });
      return { size: res.contentLength ?? 0, metadata: lowerKeys(res.metadata) };
    } catch (error) {
      if (statusOf(error) === 404 && codeOf(error) !== "ContainerNotFound") return undefined;
      throw this.translate(error, key);
    }
  }

  async get(key: string, start: number, end: number | undefined, signal?: AbortSignal): Promise<ObjectBody> {
    try {
      const count = end === undefined ? undefined : end - start;
      // maxRetryRequests 0: resuming is ranged-read.ts's job, the same for every backend.
      const res = await this.container.getBlobClient(key).download(start, count, { abortSignal: signal, maxRetryRequests: 0 });
      const total = /\/(\d+)$/.exec(res.contentRange ?? "")?.[1];
      if (res.readableStreamBody === undefined) throw new Error(`${this.location}: download of ${key} has no body stream`);
      return {
        objectSize: total !== undefined ? Number(total) : start + (res.contentLength ?? 0),
        metadata: lowerKeys(res.metadata),
        chunks: relabelDrops(res.readableStreamBody as AsyncIterable<Uint8Array>, signal),
      };
    } catch (error) {
      throw this.translate(error, key);
    }
  }

  async put(key: string, data: Uint8Array, metadata?: Record<string, string>, signal?: AbortSignal): Promise<void> {
    try {
      await this.container.getBlockBlobClient(key).upload(data, data.byteLength, { metadata, abortSignal: signal });
    } catch (error) {
      throw this.translate(error, key);
    }
  }

  async startPartUpload(key: string): Promise<PartUpload> {
    const blob = this.container.getBlockBlobClient(key);
    let staged = false;
    return {
      uploadPart: async (partNumber, data, signal) => {
        staged = true;
        try {
          await blob.stageBlock(blockId(partNumber), data, data.byteLength, { abortSignal: signal });
        } catch (error) {
          throw this.translate(error, key);
        }
      },
      complete: async (count, signal) => {
        const ids = Array.from({ length: count }, (_, i) => blockId(i + 1));
        try {
          await blob.commitBlockList(ids, { abortSignal: signal });
        } catch (error) {
          throw this.translate(error, key);
        }
      },
      abort: async () => {
        if (!staged) return;
        // Uncommitted blocks cannot be deleted as such; committing an empty blob discards them.
        try {
          await blob.upload(new Uint8Array(0), 0);
          await blob.deleteIfExists();
        } catch (error) {
          throw this.translate(error, key);
        }
      },
    };
  }

  async listFolders(prefix: string): Promise<string[]> {
    const folders: string[] = [];
    try {
      for await (const item of this.container.listBlobsByHierarchy("/", { prefix })) {
        if (item.kind === "prefix") folders.push(item.name.slice(prefix.length, -1));
      }
    } catch (error) {
      throw this.translate(error, prefix);
    }
    return folders;
  }

  async listObjects(prefix: string): Promise<ListedObject[]> {
    const objects: ListedObject[] = [];
    try {
      for await (const blob of this.container.listBlobsFlat({ prefix })) {
        objects.push({ key: blob.name, size: blob.properties.contentLength ?? 0 });
      }
    } catch (error) {
      throw this.translate(error, prefix);
    }
    return objects;
  }

  async deleteObjects(keys: string[]): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < keys.length) {
        const key = keys[next++];
        try {
          await this.container.getBlobClient(key).deleteIfExists({ deleteSnapshots: "include" });
        } catch (error) {
          throw this.translate(error, key);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, keys.length) }, worker));
  }

  async checkContainer(): Promise<void> {
    try {
      await this.container.getProperties();
    } catch (error) {
      if (statusOf(error) === 403 && !CREDENTIAL_ERRORS.has(codeOf(error))) return; // exists, not ours to inspect
      throw this.translate(error, "");
    }
  }

  /** Maps an SDK error to NotFoundError / StoreAccessError; others pass unchanged (retry.ts classifies them). */
  private translate(error: unknown, key: string): unknown {
    const code = codeOf(error);
    const status = statusOf(error);
    if (code === "ContainerNotFound" || (status === 404 && key === "")) {
      return new StoreAccessError(
        this.location,
        `container "${this.container.containerName}" does not exist in account ${this.container.accountName}`,
        "create it, or check the container name in the URL and the account (AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCOUNT)",
        { cause: error },
      );
    }
    if (status === 404) return new NotFoundError(`${this.location}: ${key} not found`, { cause: error });
    if (CREDENTIAL_ERRORS.has(code) || status === 403 || status === 401) {
      const detail = firstLine(error) || `HTTP ${status}`;
      return new StoreAccessError(this.location, `access denied (${code || `HTTP ${status}`}: ${detail})`, CREDENTIAL_HINT, {
        cause: error,
      });
    }
    if (UNREACHABLE_CODES.has(code)) {
      // Still transient (retry.ts looks at the cause): the message is for the last failure.
      return new StoreAccessError(
        this.location,
        `cannot reach ${this.container.url.replace(/\?.*$/, "")} (${firstLine(error)})`,
        "check the account name or BlobEndpoint, the network, and that the service is running",
        { cause: error },
      );
    }
    return error;
  }
}

/**
 * The SDK's download stream reports a dropped connection as AbortError ("aborted" from Node) and an
 * early end as "Data corruption failure": both are transient here, unless the caller aborted.
 */
async function* relabelDrops(chunks: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  try {
    yield* chunks;
  } catch (error) {
    const dropped = error instanceof Error && (error.name === "AbortError" || /received less data than required/i.test(error.message));
    if (!dropped || signal?.aborted) throw error;
    throw Object.assign(new Error(`connection dropped during a download (${error.message})`, { cause: error }), { code: "ECONNRESET" });
  }
}

/** Block ids must have one length within a blob; base64 of a fixed-width number. */
function blockId(partNumber: number): string {
  return Buffer.from(`thaw-part-${String(partNumber).padStart(6, "0")}`).toString("base64");
}

function codeOf(error: unknown): string {
  const e = error as { code?: unknown; details?: { errorCode?: unknown } } | undefined;
  const code = e?.details?.errorCode ?? e?.code;
  return typeof code === "string" ? code : "";
}

function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof status === "number" ? status : undefined;
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

function lowerKeys(metadata: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
}
