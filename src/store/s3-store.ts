// Checkpoints in S3 or an S3-compatible server: s3://bucket/prefix.
//
// Environment (read from options.env, default process.env):
//   THAW_S3_ENDPOINT, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL   custom endpoint (first one set wins)
//   THAW_S3_FORCE_PATH_STYLE=1|0   path-style addressing; default on with a custom endpoint
//   AWS_REGION, AWS_DEFAULT_REGION region; default from ~/.aws/config, or us-east-1 with a custom endpoint
//   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, …  the SDK's credential chain
//   AWS_REQUEST_CHECKSUM_CALCULATION   WHEN_SUPPORTED (AWS default) or WHEN_REQUIRED (default with a
//                                      custom endpoint, since many S3-compatible servers reject CRC headers)
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { ObjectStore, type ObjectStoreOptions } from "./object-store.js";
import { S3Backend } from "./s3-backend.js";

/** How to reach the bucket; every field falls back to the environment. */
export interface S3StoreOptions extends ObjectStoreOptions {
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  credentials?: S3ClientConfig["credentials"];
  /** CRC32 checksums on uploads (requestChecksumCalculation WHEN_SUPPORTED). */
  checksums?: boolean;
  /** The environment to read settings from (default process.env). */
  env?: Record<string, string | undefined>;
  /** A ready client, used as is (the fields above are then only used in messages). */
  client?: S3Client;
}

/** Parts of an s3:// URL. */
export interface S3Url {
  bucket: string;
  prefix: string;
}

export class S3Store extends ObjectStore {
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly ownsClient: boolean;

  constructor(url: string, options: S3StoreOptions = {}) {
    const { bucket, prefix } = S3Store.parseUrl(url);
    const env = options.env ?? process.env;
    const endpoint = options.endpoint ?? firstSet(env.THAW_S3_ENDPOINT, env.AWS_ENDPOINT_URL_S3, env.AWS_ENDPOINT_URL);
    const region = options.region ?? firstSet(env.AWS_REGION, env.AWS_DEFAULT_REGION) ?? (endpoint !== undefined ? "us-east-1" : undefined);
    const pathStyleEnv = env.THAW_S3_FORCE_PATH_STYLE;
    const forcePathStyle = options.forcePathStyle ?? (pathStyleEnv !== undefined && pathStyleEnv !== "" ? /^(1|true|yes)$/i.test(pathStyleEnv) : endpoint !== undefined);
    const checksumEnv = env.AWS_REQUEST_CHECKSUM_CALCULATION;
    const checksums = options.checksums ?? (checksumEnv !== undefined && checksumEnv !== "" ? /^when_supported$/i.test(checksumEnv) : endpoint === undefined);
    const location = `s3://${bucket}/${prefix}`;
    const client =
      options.client ??
      new S3Client({
        endpoint,
        region,
        forcePathStyle,
        followRegionRedirects: true,
        credentials: options.credentials ?? credentialsFromEnv(env),
        requestChecksumCalculation: checksums ? "WHEN_SUPPORTED" : "WHEN_REQUIRED",
        responseChecksumValidation: checksums ? "WHEN_SUPPORTED" : "WHEN_REQUIRED",
        // Retries are ours (retry.ts, ranged-read.ts): one policy for S3 and Azure, resumable reads.
        maxAttempts: 1,
        requestHandler: {
          httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 64 }),
          httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: 64 }),
          connectionTimeout: 10_000,
          requestTimeout: 60_000, // idle socket: a stalled transfer fails and is retried
        },
      });
    super(new S3Backend(client, bucket, location, { endpoint, region }), prefix, options);
    this.bucket = bucket;
    this.prefix = prefix;
    this.client = client;
    this.ownsClient = options.client === undefined;
  }

  /** Splits s3://bucket/prefix; the prefix may be empty. */
  static parseUrl(url: string): S3Url {
    const match = /^s3:\/\/([^/?#]+)\/?([^?#]*)$/i.exec(url.trim());
    if (match === null) throw new TypeError(`not an S3 URL: ${url} (expected s3://bucket/prefix)`);
    const bucket = match[1];
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new TypeError(`bad S3 bucket name "${bucket}" in ${url}`);
    return { bucket, prefix: match[2].replace(/^\/+|\/+$/g, "") };
  }

  /** Closes the client's connections (when this store created the client). */
  close(): void {
    if (this.ownsClient) this.client.destroy();
  }
}

function firstSet(...values: (string | undefined)[]): string | undefined {
  return values.find((v) => v !== undefined && v !== "");
}

/** Keys given in the environment passed in; otherwise undefined, and the SDK runs its own chain. */
function credentialsFromEnv(env: Record<string, string | undefined>): S3ClientConfig["credentials"] {
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (accessKeyId === undefined || accessKeyId === "" || secretAccessKey === undefined || secretAccessKey === "") return undefined;
  return { accessKeyId, secretAccessKey, sessionToken: firstSet(env.AWS_SESSION_TOKEN) };
}
