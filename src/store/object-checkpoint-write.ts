// One checkpoint being written into an object store: files go under a fresh generation, the
// index goes last and flips the checkpoint to it (see object-layout.ts). Until publish nothing
// is visible; abort stops the uploads, aborts part uploads and deletes what arrived.
import { checkFileName } from "../checkpoint/model-key.js";
import type { ObjectBackend } from "./object-backend.js";
import { ObjectFileWriter } from "./object-file-writer.js";
import { GENERATION_METADATA, type ObjectLayout } from "./object-layout.js";
import { withRetry } from "./retry.js";
import { INDEX_FILE, type CheckpointWrite, type StoreObjectWriter } from "./store.js";
import type { TransferOptions } from "./transfer-options.js";

/** What a write needs from its store. */
export interface ObjectWriteContext {
  backend: ObjectBackend;
  layout: ObjectLayout;
  transfer: TransferOptions;
  /** Reports trouble that does not fail the write (an old generation left behind). */
  warn(message: string): void;
  /** Told when the index is published, so the store's readers switch generation. */
  onPublished(modelKey: string, generation: string): void;
}

export class ObjectCheckpointWrite implements CheckpointWrite {
  private readonly writers = new Map<string, ObjectFileWriter>();
  private readonly controller = new AbortController();
  private state: "writing" | "publishing" | "published" | "aborted" = "writing";
  private publishTried = false;
  private aborting?: Promise<void>;

  constructor(
    private readonly ctx: ObjectWriteContext,
    readonly modelKey: string,
    /** The generation this write fills. */
    readonly generation: string,
  ) {}

  async create(name: string): Promise<StoreObjectWriter> {
    this.assertWriting(`create ${name}`);
    checkFileName(name);
    if (name === INDEX_FILE) throw new Error(`${this.ctx.backend.location}: ${INDEX_FILE} is written by publish, not create`);
    if (this.writers.has(name)) throw new Error(`${this.ctx.backend.location}: ${this.modelKey}/${name} was already created`);
    const key = this.ctx.layout.fileKey(this.modelKey, this.generation, name);
    const writer = new ObjectFileWriter(this.ctx.backend, key, this.ctx.transfer, this.controller.signal);
    this.writers.set(name, writer);
    return writer;
  }

  async publish(index: Uint8Array): Promise<void> {
    this.assertWriting("publish");
    const open = [...this.writers].filter(([, writer]) => !writer.closed).map(([name]) => name);
    if (open.length > 0) throw new Error(`${this.ctx.backend.location}: publish of ${this.modelKey} before ${open.join(", ")} closed`);
    this.state = "publishing";
    const { backend, layout, transfer } = this.ctx;
    const indexKey = layout.indexKey(this.modelKey);
    try {
      const previous = await withRetry(() => backend.head(indexKey), transfer);
      this.publishTried = true;
      await withRetry(() => backend.put(indexKey, index, { [GENERATION_METADATA]: this.generation }), transfer);
      this.state = "published";
      this.ctx.onPublished(this.modelKey, this.generation);
      if (previous !== undefined) await this.removeGeneration(layout.generationOf(previous.metadata));
    } catch (error) {
      if (this.state === "publishing") this.state = "writing"; // the caller may abort, which cleans up
      throw error;
    }
  }

  abort(): Promise<void> {
    if (this.state === "published") return Promise.resolve();
    this.aborting ??= this.doAbort();
    return this.aborting;
  }

  private async doAbort(): Promise<void> {
    this.state = "aborted";
    this.controller.abort(new Error(`checkpoint write of ${this.modelKey} aborted`));
    await Promise.all([...this.writers.values()].map((writer) => writer.abort()));
    const { backend, layout, transfer } = this.ctx;
    if (this.publishTried) {
      // The index PUT may have landed although its response never came: unpublish it first.
      const head = await withRetry(() => backend.head(layout.indexKey(this.modelKey)), transfer);
      if (head !== undefined && layout.generationOf(head.metadata) === this.generation) {
        await withRetry(() => backend.deleteObjects([layout.indexKey(this.modelKey)]), transfer);
      }
    }
    const folder = layout.generationFolder(this.modelKey, this.generation);
    const objects = await withRetry(() => backend.listObjects(folder), transfer);
    if (objects.length > 0) await withRetry(() => backend.deleteObjects(objects.map((o) => o.key)), transfer);
  }

  /** Deletes the files of a replaced generation; a failure leaves orphans that delete() removes. */
  private async removeGeneration(generation: string): Promise<void> {
    if (generation === this.generation) return;
    const { backend, layout, transfer } = this.ctx;
    const folder = layout.generationFolder(this.modelKey, generation);
    try {
      let objects = await withRetry(() => backend.listObjects(folder), transfer);
      // The flat layout shares its folder with the index and with every generation folder.
      if (generation === "") {
        objects = objects.filter((o) => {
          const rest = o.key.slice(folder.length);
          return !rest.includes("/") && rest !== INDEX_FILE;
        });
      }
      if (objects.length > 0) await withRetry(() => backend.deleteObjects(objects.map((o) => o.key)), transfer);
    } catch (error) {
      this.ctx.warn(`${backend.location}: could not remove the replaced files of ${this.modelKey} (${folder}): ${String(error)}; delete() removes them later`);
    }
  }

  private assertWriting(what: string): void {
    if (this.state !== "writing") throw new Error(`${this.ctx.backend.location}: ${what} in ${this.modelKey}, whose write is ${this.state}`);
  }
}
