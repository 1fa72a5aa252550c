// The few operations an object service (S3, Azure Blob) must offer for ObjectStore to build
// checkpoints on it. Keys are full object names inside the bucket or container.
// Implementations map "absent" to NotFoundError and a missing bucket or rejected credentials to
// StoreAccessError; everything else is thrown as the SDK raised it (retry.ts classifies it).

/** What a HEAD of an object tells. */
export interface ObjectHead {
  size: number;
  /** User metadata, keys in lower case. */
  metadata: Record<string, string>;
}

/** An object's listing entry. */
export interface ListedObject {
  key: string;
  size: number;
}

/** The open body of a (ranged) GET. */
export interface ObjectBody {
  /** Size of the whole object (from Content-Range or Content-Length). */
  objectSize: number;
  metadata: Record<string, string>;
  /** The requested bytes; breaks off with an error if the connection drops. */
  chunks: AsyncIterable<Uint8Array>;
}

/** An upload of one object in parts (S3 multipart upload, Azure block list). */
export interface PartUpload {
  /** Uploads part `partNumber` (1-based); parts may go up concurrently and be retried. */
  uploadPart(partNumber: number, data: Uint8Array, signal?: AbortSignal): Promise<void>;
  /** Assembles parts 1..count in order into the object. */
  complete(count: number, signal?: AbortSignal): Promise<void>;
  /** Drops the uploaded parts; the object does not appear. */
  abort(): Promise<void>;
}

/** An object service reduced to what checkpoints need. */
export interface ObjectBackend {
  /** The store URL, for messages. */
  readonly location: string;
  /** The largest number of parts of one object the service accepts. */
  readonly maxParts: number;
  /** The smallest part (except the last) the service accepts. */
  readonly minPartSize: number;
  head(key: string, signal?: AbortSignal): Promise<ObjectHead | undefined>;
  /** GETs bytes [start, end) (end undefined: to the end of the object). */
  get(key: string, start: number, end: number | undefined, signal?: AbortSignal): Promise<ObjectBody>;
  put(key: string, data: Uint8Array, metadata?: Record<string, string>, signal?: AbortSignal): Promise<void>;
  startPartUpload(key: string, signal?: AbortSignal): Promise<PartUpload>;
  /** Names of the folders directly under `prefix` ("a" for an object "prefix/a/x"). */
  listFolders(prefix: string): Promise<string[]>;
  /** Every object whose key starts with `prefix`. */
  listObjects(prefix: string): Promise<ListedObject[]>;
  /** Deletes the objects; absent ones are skipped. */
  deleteObjects(keys: string[]): Promise<void>;
  /** Throws StoreAccessError when the bucket or container does not exist; used to tell a missing object from a missing bucket. */
  checkContainer(): Promise<void>;
}
