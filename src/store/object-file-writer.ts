// Writes one object of a pending checkpoint. Bytes collect into part-sized buffers; an object
// that stays under one part goes up in a single PUT, a larger one as a part upload whose parts
// go up concurrently (bounded, so write() applies back-pressure) and are retried one by one.
import type { ObjectBackend, PartUpload } from "./object-backend.js";
import { withRetry } from "./retry.js";
import type { StoreObjectWriter } from "./store.js";
import type { TransferOptions } from "./transfer-options.js";

/** Size of a new file's first buffer. */
const FIRST_BUFFER = 256 << 10;

export class ObjectFileWriter implements StoreObjectWriter {
  private buffer: Buffer;
  private filled = 0;
  private partCount = 0;
  private upload?: Promise<PartUpload>;
  private readonly inFlight = new Set<Promise<void>>();
  private failure?: unknown;
  private tail: Promise<void> = Promise.resolve();
  private state: "open" | "closing" | "closed" | "aborted" = "open";
  /** Bytes accepted so far. */
  size = 0;

  constructor(
    private readonly backend: ObjectBackend,
    readonly key: string,
    private readonly options: TransferOptions,
    /** Aborted when the whole checkpoint write is aborted. */
    private readonly signal: AbortSignal,
  ) {
    this.buffer = Buffer.allocUnsafe(Math.min(options.partSize, FIRST_BUFFER));
  }

  get closed(): boolean {
    return this.state === "closed";
  }

  /** Writes may be called without awaiting the previous one: they run one after another, in call order. */
  write(data: Uint8Array): Promise<void> {
    return this.serially(() => this.append(data));
  }

  close(): Promise<void> {
    return this.serially(() => this.finish());
  }

  private serially(step: () => Promise<void>): Promise<void> {
    const run = this.tail.then(step);
    this.tail = run.catch(() => {});
    return run;
  }

  private async append(data: Uint8Array): Promise<void> {
    this.assertUsable("write");
    let offset = 0;
    while (offset < data.byteLength) {
      if (this.filled === this.buffer.byteLength) {
        // Small files stay small in memory: the buffer doubles up to one part.
        if (this.buffer.byteLength < this.options.partSize) this.grow();
        // A full part waits for more bytes before it goes, so close() can PUT a one-part object.
        else await this.flushPart();
      }
      const n = Math.min(data.byteLength - offset, this.buffer.byteLength - this.filled);
      this.buffer.set(data.subarray(offset, offset + n), this.filled);
      this.filled += n;
      offset += n;
      this.size += n;
    }
  }

  private async finish(): Promise<void> {
    this.assertUsable("close");
    this.state = "closing";
    try {
      if (this.upload === undefined) {
        const body = this.buffer.subarray(0, this.filled);
        await withRetry(() => this.backend.put(this.key, body, undefined, this.signal), this.options, this.signal);
      } else {
        if (this.filled > 0) await this.flushPart();
        await this.settle();
        this.rethrow();
        const upload = await this.upload;
        await withRetry(() => upload.complete(this.partCount, this.signal), this.options, this.signal);
      }
      this.state = "closed";
    } catch (error) {
      await this.abort();
      throw error;
    } finally {
      this.buffer = Buffer.alloc(0);
    }
  }

  /** Stops uploading and drops the parts; safe to call in any state. */
  async abort(): Promise<void> {
    if (this.state === "closed" || this.state === "aborted") return;
    this.state = "aborted";
    await this.settle();
    const upload = await this.upload?.catch(() => undefined);
    await upload?.abort().catch(() => {}); // best effort: the parts expire on the service anyway
  }

  private grow(): void {
    const bigger = Buffer.allocUnsafe(Math.min(this.options.partSize, this.buffer.byteLength * 2));
    this.buffer.copy(bigger, 0, 0, this.filled);
    this.buffer = bigger;
  }

  /** Sends the filled buffer as the next part and starts a fresh buffer. */
  private async flushPart(): Promise<void> {
    if (this.partCount + 1 > this.backend.maxParts) {
      throw new RangeError(`${this.backend.location}: ${this.key} needs more than ${this.backend.maxParts} parts; raise the part size`);
    }
    this.upload ??= withRetry(() => this.backend.startPartUpload(this.key, this.signal), this.options, this.signal);
    this.upload.catch(() => {}); // observed through the part uploads
    const partNumber = ++this.partCount;
    const data = this.buffer.subarray(0, this.filled);
    this.buffer = Buffer.allocUnsafe(this.options.partSize);
    this.filled = 0;
    const task = (async () => {
      const upload = await this.upload!;
      await withRetry(() => upload.uploadPart(partNumber, data, this.signal), this.options, this.signal);
    })().catch((error: unknown) => {
      this.failure ??= error;
    });
    this.inFlight.add(task);
    void task.finally(() => this.inFlight.delete(task));
    while (this.inFlight.size >= this.options.uploadConcurrency) await Promise.race(this.inFlight);
    this.rethrow();
  }

  private async settle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  private rethrow(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private assertUsable(what: string): void {
    this.rethrow();
    if (this.signal.aborted) throw new Error(`${this.backend.location}: ${what} of ${this.key} after the checkpoint write was aborted`);
    if (this.state !== "open") throw new Error(`${this.backend.location}: ${what} of ${this.key}, which is ${this.state}`);
  }
}
