// Model registrations: the only state of the orchestrator that is not soft. Kept in a small JSON
// file (written to a temporary name and renamed, so a crash never leaves half a file) so that a
// restarted orchestrator serves the same models.
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { checkModelId, checkRevision, DEFAULT_REVISION } from "../../checkpoint/model-key.js";
import { ModelSpecSchema, type ModelSpec } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";

/** One registration and what the scheduler learnt about it. */
export interface RegisteredModel {
  spec: ModelSpec;
  createdUnixMs: number;
  /** Bytes of the converted checkpoint; 0n until known. */
  bytes: bigint;
}

interface FileShape {
  version: 1;
  models: { spec: JsonValue; createdUnixMs: number; bytes: string }[];
}

export class ModelRegistry {
  private readonly models = new Map<string, RegisteredModel>();
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly file: string | undefined,
    private readonly now: () => number,
  ) {}

  /** Opens the registry kept in `file` (created on the first change); undefined keeps it in memory only. */
  static async open(file: string | undefined, now: () => number = Date.now): Promise<ModelRegistry> {
    const registry = new ModelRegistry(file, now);
    if (file === undefined) return registry;
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return registry;
      throw err;
    }
    let parsed: FileShape;
    try {
      parsed = JSON.parse(text) as FileShape;
      if (parsed.version !== 1 || !Array.isArray(parsed.models)) throw new Error("unknown layout");
    } catch (err) {
      throw new Error(`model registry ${file} is unreadable (${(err as Error).message}); fix or remove it`);
    }
    for (const m of parsed.models) {
      const spec = fromJson(ModelSpecSchema, m.spec, { ignoreUnknownFields: true });
      registry.models.set(spec.id, { spec, createdUnixMs: m.createdUnixMs, bytes: BigInt(m.bytes || "0") });
    }
    return registry;
  }

  get(id: string): RegisteredModel | undefined {
    return this.models.get(id);
  }

  /** Registrations ordered by id. */
  list(): RegisteredModel[] {
    return [...this.models.values()].sort((a, b) => (a.spec.id < b.spec.id ? -1 : a.spec.id > b.spec.id ? 1 : 0));
  }

  get size(): number {
    return this.models.size;
  }

  /** Registers or replaces `spec` (validated, source and revision filled in) and persists the registry. */
  async register(input: ModelSpec): Promise<RegisteredModel> {
    const spec = normalise(input);
    const previous = this.models.get(spec.id);
    const sameCheckpoint = previous && previous.spec.source === spec.source && previous.spec.revision === spec.revision;
    const model: RegisteredModel = {
      spec,
      createdUnixMs: previous?.createdUnixMs ?? this.now(),
      bytes: sameCheckpoint ? previous.bytes : 0n,
    };
    this.models.set(spec.id, model);
    await this.persist();
    return model;
  }

  /** Removes a registration; false when there was none. */
  async unregister(id: string): Promise<boolean> {
    if (!this.models.delete(id)) return false;
    await this.persist();
    return true;
  }

  /** Records the checkpoint size once a conversion (or the converter) reports it. */
  async setBytes(id: string, bytes: bigint): Promise<void> {
    const model = this.models.get(id);
    if (!model || model.bytes === bytes) return;
    model.bytes = bytes;
    await this.persist();
  }

  private persist(): Promise<void> {
    const file = this.file;
    if (file === undefined) return Promise.resolve();
    const body: FileShape = {
      version: 1,
      models: this.list().map((m) => ({ spec: toJson(ModelSpecSchema, m.spec), createdUnixMs: m.createdUnixMs, bytes: m.bytes.toString() })),
    };
    const text = JSON.stringify(body, null, 2) + "\n";
    // Writes are chained so the file always ends with the latest state.
    this.writing = this.writing.catch(() => undefined).then(async () => {
      await mkdir(path.dirname(file), { recursive: true });
      const temp = `${file}.${process.pid}.tmp`;
      await writeFile(temp, text);
      await rename(temp, file);
    });
    return this.writing;
  }
}

/**
 * Validates a registration and fills in its defaults (source = id, revision = main, owner = thaw).
 * A launch_command marks a model served by an external OpenAI-compatible runtime that agents
 * started with --allow-launch start on LoadModel; it is never converted.
 */
export function normalise(input: ModelSpec): ModelSpec {
  const id = input.id.trim();
  if (id === "") throw new ConnectError("model id is empty", Code.InvalidArgument);
  checkModelId(id);
  const revision = input.revision.trim() || DEFAULT_REVISION;
  checkRevision(revision);
  if (input.launchCommand.some((part) => part.trim() === "")) {
    throw new ConnectError("launch_command has an empty part", Code.InvalidArgument);
  }
  return create(ModelSpecSchema, {
    id,
    source: input.source.trim() || id,
    revision,
    keepAliveSeconds: input.keepAliveSeconds,
    maxModelLen: input.maxModelLen,
    ownedBy: input.ownedBy.trim() || "thaw",
    launchCommand: input.launchCommand,
  });
}
