// ObjectBackend over one S3 bucket (AWS or an S3-compatible server), with AWS SDK v3.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from "@aws-sdk/client-s3";
import type { ListedObject, ObjectBackend, ObjectBody, ObjectHead, PartUpload } from "./object-backend.js";
import { StoreAccessError } from "./store-access-error.js";
import { NotFoundError } from "./store.js";

/** Error names S3 uses when it rejects who is asking. */
const CREDENTIAL_ERRORS = new Set([
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "AccessDenied",
  "ExpiredToken",
  "InvalidToken",
  "TokenRefreshRequired",
  "AllAccessDisabled",
  "AccountProblem",
  "Forbidden",
]);

/** Socket errors that mean the endpoint cannot be reached at all. */
const UNREACHABLE_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN"]);

const CREDENTIAL_HINT =
  "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or AWS_PROFILE and ~/.aws) and that they may read and write this bucket";

/** Where the bucket is, for messages. */
export interface S3Endpoint {
  endpoint?: string;
  region?: string;
}

export class S3Backend implements ObjectBackend {
  readonly maxParts = 10_000;
  readonly minPartSize = 5 << 20;
  private checksums?: Promise<boolean>;

  constructor(
    private readonly client: S3Client,
    readonly bucket: string,
    readonly location: string,
    private readonly where: S3Endpoint,
  ) {}

  async head(key: string, signal?: AbortSignal): Promise<ObjectHead | undefined> {
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
      return { size: res.ContentLength ?? 0, metadata: lowerKeys(res.Metadata) };
    } catch (error) {
      if (statusOf(error) === 404) return undefined; // HEAD has no body: a missing bucket looks the same
      throw this.translate(error, key);
    }
  }

  async get(key: string, start: number, end: number | undefined, signal?: AbortSignal): Promise<ObjectBody> {
    const range = end !== undefined ? `bytes=${start}-${end - 1}` : start > 0 ? `bytes=${start}-` : undefined;
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range }), { abortSignal: signal });
      const total = /\/(\d+)$/.exec(res.ContentRange ?? "")?.[1];
      return {
        objectSize: total !== undefined ? Number(total) : start + (res.ContentLength ?? 0),
        metadata: lowerKeys(res.Metadata),
        chunks: res.Body as AsyncIterable<Uint8Array>,
      };
    } catch (error) {
      throw this.translate(error, key);
    }
  }

  async put(key: string, data: Uint8Array, metadata?: Record<string, string>, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: data, ContentLength: data.byteLength, Metadata: metadata }),
        { abortSignal: signal },
      );
    } catch (error) {
      throw this.translate(error, key);
    }
  }

  async startPartUpload(key: string, signal?: AbortSignal): Promise<PartUpload> {
    const checksums = await this.checksumsEnabled();
    const algorithm = checksums ? "CRC32" : undefined;
    const { client, bucket } = this;
    let uploadId: string;
    try {
      const res = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ChecksumAlgorithm: algorithm }), {
        abortSignal: signal,
      });
      if (res.UploadId === undefined) throw new Error(`${this.location}: CreateMultipartUpload of ${key} returned no UploadId`);
      uploadId = res.UploadId;
    } catch (error) {
      throw this.translate(error, key);
    }
    const parts = new Map<number, CompletedPart>();
    let completeTried = false;
    return {
      uploadPart: async (partNumber, data, partSignal) => {
        try {
          const res = await client.send(
            new UploadPartCommand({
              Bucket: bucket,
              Key: key,
              UploadId: uploadId,
              PartNumber: partNumber,
              Body: data,
              ContentLength: data.byteLength,
              ChecksumAlgorithm: algorithm,
            }),
            { abortSignal: partSignal },
          );
          parts.set(partNumber, { PartNumber: partNumber, ETag: res.ETag, ChecksumCRC32: res.ChecksumCRC32 });
        } catch (error) {
          throw this.translate(error, key);
        }
      },
      complete: async (count, completeSignal) => {
        const list: CompletedPart[] = [];
        for (let n = 1; n <= count; n++) {
          const part = parts.get(n);
          if (part === undefined) throw new Error(`${this.location}: part ${n} of ${key} was never uploaded`);
          list.push(part);
        }
        try {
          const retry = completeTried;
          completeTried = true;
          try {
            await client.send(
              new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: list } }),
              { abortSignal: completeSignal },
            );
          } catch (error) {
            // A retried complete whose first try landed finds the upload gone and the object there.
            if (retry && nameOf(error) === "NoSuchUpload" && (await this.head(key)) !== undefined) return;
            throw error;
          }
        } catch (error) {
          throw this.translate(error, key);
        }
      },
      abort: async () => {
        try {
          await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
        } catch (error) {
          if (nameOf(error) !== "NoSuchUpload") throw this.translate(error, key);
        }
      },
    };
  }

  async listFolders(prefix: string): Promise<string[]> {
    const folders: string[] = [];
    let token: string | undefined;
    do {
      const res = await this.list(prefix, "/", token);
      for (const p of res.CommonPrefixes ?? []) if (p.Prefix !== undefined) folders.push(p.Prefix.slice(prefix.length, -1));
      token = res.NextContinuationToken;
    } while (token !== undefined);
    return folders;
  }

  async listObjects(prefix: string): Promise<ListedObject[]> {
    const objects: ListedObject[] = [];
    let token: string | undefined;
    do {
      const res = await this.list(prefix, undefined, token);
      for (const o of res.Contents ?? []) if (o.Key !== undefined) objects.push({ key: o.Key, size: o.Size ?? 0 });
      token = res.NextContinuationToken;
    } while (token !== undefined);
    return objects;
  }

  async deleteObjects(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      try {
        const res = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        );
        const failed = (res.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
        if (failed.length > 0) {
          const first = failed[0];
          throw new Error(`${this.location}: could not delete ${failed.length} object(s), e.g. ${first.Key}: ${first.Code} ${first.Message ?? ""}`);
        }
      } catch (error) {
        throw this.translate(error, batch[0]);
      }
    }
  }

  async checkContainer(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      if (statusOf(error) === 403) return; // exists, but this principal may not list it
      if (statusOf(error) === 404) throw this.missingBucket(error);
      throw this.translate(error, "");
    }
  }

  private async list(prefix: string, delimiter: string | undefined, token: string | undefined) {
    try {
      return await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, Delimiter: delimiter, ContinuationToken: token }),
      );
    } catch (error) {
      throw this.translate(error, prefix);
    }
  }

  /** Whether requests carry CRC32 checksums (the SDK's requestChecksumCalculation setting). */
  private checksumsEnabled(): Promise<boolean> {
    this.checksums ??= (async () => {
      const setting = (this.client.config as { requestChecksumCalculation?: () => Promise<string> }).requestChecksumCalculation;
      return setting === undefined ? false : (await setting()) === "WHEN_SUPPORTED";
    })();
    return this.checksums;
  }

  /** Maps an SDK error to NotFoundError / StoreAccessError; others pass unchanged (retry.ts classifies them). */
  private translate(error: unknown, key: string): unknown {
    const name = nameOf(error);
    const status = statusOf(error);
    if (name === "NoSuchKey" || (status === 404 && name !== "NoSuchBucket" && name !== "NoSuchUpload")) {
      return new NotFoundError(`${this.location}: ${key} not found`, { cause: error });
    }
    if (name === "NoSuchBucket") return this.missingBucket(error);
    if (CREDENTIAL_ERRORS.has(name) || status === 403) {
      return new StoreAccessError(this.location, `access denied (${name}: ${messageOf(error)})`, CREDENTIAL_HINT, { cause: error });
    }
    if (name === "CredentialsProviderError") {
      return new StoreAccessError(this.location, `no AWS credentials found (${messageOf(error)})`, CREDENTIAL_HINT, { cause: error });
    }
    if (name === "PermanentRedirect" || name === "AuthorizationHeaderMalformed" || name === "IllegalLocationConstraintException") {
      return new StoreAccessError(
        this.location,
        `the bucket is in another region than ${this.where.region ?? "the configured one"} (${name})`,
        "set AWS_REGION to the bucket's region",
        { cause: error },
      );
    }
    const code = (error as { code?: unknown } | undefined)?.code;
    if (typeof code === "string" && UNREACHABLE_CODES.has(code)) {
      // Still transient (retry.ts looks at the cause): the message is for the last failure.
      return new StoreAccessError(
        this.location,
        `cannot reach ${this.where.endpoint ?? "S3"} (${messageOf(error)})`,
        "check the endpoint (THAW_S3_ENDPOINT / AWS_ENDPOINT_URL), the network, and that the server is running",
        { cause: error },
      );
    }
    if (error instanceof Error && /Region is missing/i.test(error.message)) {
      return new StoreAccessError(this.location, "no AWS region configured", "set AWS_REGION (or region in ~/.aws/config)", { cause: error });
    }
    return error;
  }

  private missingBucket(error: unknown): StoreAccessError {
    const where = this.where.endpoint !== undefined ? `at ${this.where.endpoint}` : `in AWS region ${this.where.region ?? "(default)"}`;
    return new StoreAccessError(
      this.location,
      `bucket "${this.bucket}" does not exist ${where}`,
      "create it, or check the bucket name in the URL and the endpoint (THAW_S3_ENDPOINT / AWS_ENDPOINT_URL) and region (AWS_REGION)",
      { cause: error },
    );
  }
}

function nameOf(error: unknown): string {
  return error instanceof Error ? error.name : "";
}

function statusOf(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function messageOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message === "UnknownError" || message === "" ? `HTTP ${statusOf(error) ?? "?"}` : message;
}

function lowerKeys(metadata: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
}
