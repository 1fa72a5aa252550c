// AgentService (DESIGN.md §2): chunk transfer, loading, inference and status on one node.
import { open } from "node:fs/promises";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentStatus } from "../gen/thaw/agent/v1/agent_pb.js";
import { Tier } from "../gen/thaw/agent/v1/agent_pb.js";
import type {
  AgentService,
  DownloadChunksRequest,
  DownloadChunksResponseSchema,
  InferRequest,
  LoadModelRequest,
  LoadModelResponseSchema,
  ReadChunkRequest,
  UnloadModelRequest,
} from "../gen/thaw/agent/v1/agent_service_pb.js";
import { encodeIndex } from "../checkpoint/index-codec.js";
import { checkFileName } from "../checkpoint/model-key.js";
import { INDEX_FILE } from "../store/store.js";
import type { ChunkProgress } from "./chunk-download.js";
import type { DiskTier } from "./disk-tier.js";
import type { ExternalModels } from "./external-models.js";
import type { GpuTier } from "./gpu-tier.js";
import type { PeerAdmission } from "./peer-admission.js";
import { type InferResponseInit, inferOnEngine, inferOnExternal, notLoaded } from "./inference.js";
import { type LoadProgress, type LoadResult, type ModelLoader, normalRef, refKey } from "./model-loader.js";
import { pushStream } from "../shared/push-stream.js";
import type { RequestCounter } from "./request-counter.js";
import type { TextWorkers } from "./text-workers.js";

/** Bytes per ReadChunk message (as the converter sends them). */
export const READ_CHUNK_PIECE = 1 << 20;

export interface AgentServiceDeps {
  loader: ModelLoader;
  disk: DiskTier;
  gpu: GpuTier;
  external: ExternalModels;
  requests: RequestCounter;
  /** Which peers a caller names may be fetched from. */
  peers: PeerAdmission;
  /** Where prompts are rendered and tokenised (off the event loop). */
  textWorkers: TextWorkers;
  status(): AgentStatus;
  log: (line: string) => void;
}

type LoadModelInit = MessageInitShape<typeof LoadModelResponseSchema>;

function loadMessage(p: LoadProgress): LoadModelInit {
  return {
    tier: p.tier,
    bytesDone: BigInt(p.bytesDone),
    bytesTotal: BigInt(p.bytesTotal),
    timings: p.timings.map((t) => ({ tier: t.tier, bytes: BigInt(t.bytes), seconds: t.seconds })),
    startTier: p.startTier,
    seconds: p.seconds,
  };
}

export class AgentServiceImpl implements ServiceImpl<typeof AgentService> {
  constructor(private readonly deps: AgentServiceDeps) {}

  async *downloadChunks(request: DownloadChunksRequest, ctx: HandlerContext): AsyncGenerator<MessageInitShape<typeof DownloadChunksResponseSchema>> {
    const ref = request.ref;
    refKey(ref);
    const peers = await this.deps.peers.admit(request.peers, ctx.signal);
    const progress = pushStream<ChunkProgress>(
      (emit) => this.deps.loader.downloadChunks(ref!, request.fileNames, peers, emit, ctx.signal),
      ctx.signal,
    );
    for await (const p of progress) {
      yield { fileName: p.fileName, bytesDone: BigInt(p.bytesDone), bytesTotal: BigInt(p.bytesTotal), source: p.source, complete: p.complete };
    }
  }

  async *readChunk(request: ReadChunkRequest, ctx: HandlerContext) {
    const key = refKey(request.ref);
    const name = request.fileName;
    checkFileName(name);
    const { disk } = this.deps;
    const index = disk.index(key);
    if (index === undefined) throw new ConnectError(`${key} is not cached on this agent`, Code.NotFound);
    if (name === INDEX_FILE) {
      yield* sendBytes(encodeIndex(index), request);
      return;
    }
    if (index.extraFiles.some((f) => f.name === name)) {
      const bytes = await disk.readFile(key, name);
      if (bytes === undefined) throw new ConnectError(`${key}/${name} is not cached on this agent`, Code.NotFound);
      yield* sendBytes(bytes, request);
      return;
    }
    const chunk = index.chunks.find((c) => c.fileName === name);
    if (chunk === undefined) throw new ConnectError(`${key} has no chunk named ${JSON.stringify(name)}`, Code.NotFound);
    const unpin = disk.pin(key);
    try {
      if (!disk.hasChunk(key, name)) throw new ConnectError(`${key}/${name} is not cached on this agent`, Code.NotFound);
      // Never serve bytes that do not match the index: a corrupt copy is removed and fetched again.
      if (!(await disk.ensureVerified(key, chunk))) {
        this.deps.log(`${key}/${name} on disk does not match its checksum; fetching it again before serving it`);
        try {
          await this.deps.loader.refetchChunk(request.ref!, key, chunk, ctx.signal);
        } catch (err) {
          throw new ConnectError(`${key}/${name} was corrupt here and could not be fetched again: ${(err as Error).message}`, Code.NotFound);
        }
        if (!(await disk.ensureVerified(key, chunk))) throw new ConnectError(`${key}/${name} is not cached on this agent`, Code.NotFound);
      }
      const fileLength = chunk.byteLength;
      if (request.offset > fileLength) {
        throw new ConnectError(`offset ${request.offset} is past the end of ${name} (${fileLength} bytes)`, Code.OutOfRange);
      }
      const available = fileLength - request.offset;
      const length = request.length === 0n || request.length > available ? available : request.length;
      const handle = await open(disk.chunkPath(key, name), "r");
      try {
        let at = Number(request.offset);
        const end = at + Number(length);
        while (at < end) {
          ctx.signal.throwIfAborted();
          const piece = Buffer.allocUnsafe(Math.min(READ_CHUNK_PIECE, end - at));
          const { bytesRead } = await handle.read(piece, 0, piece.length, at);
          if (bytesRead === 0) throw new ConnectError(`${name} is shorter than its index says`, Code.DataLoss);
          yield { offset: BigInt(at), data: piece.subarray(0, bytesRead), fileLength };
          at += bytesRead;
        }
      } finally {
        await handle.close();
      }
    } finally {
      unpin();
    }
  }

  async *loadModel(request: LoadModelRequest, ctx: HandlerContext): AsyncGenerator<LoadModelInit> {
    const key = refKey(request.ref);
    const ref = normalRef(request.ref!);
    const { external } = this.deps;
    if (request.launchCommand.length > 0) external.register(ref, key, request.launchCommand);
    const peers = external.has(key) ? [] : await this.deps.peers.admit(request.peers, ctx.signal);
    let result: LoadResult | undefined;
    const progress = pushStream<LoadProgress>(async (emit) => {
      result = external.has(key)
        ? await external.load(key)
        : await this.deps.loader.load(ref, { peers, maxModelLen: request.maxModelLen, inferFollows: request.inferFollows }, emit, ctx.signal);
    }, ctx.signal);
    for await (const p of progress) yield loadMessage(p);
    const r = result!;
    yield {
      tier: Tier.GPU,
      timings: r.timings.map((t) => ({ tier: t.tier, bytes: BigInt(t.bytes), seconds: t.seconds })),
      ready: true,
      engineId: r.engineId,
      startTier: r.startTier,
      seconds: r.seconds,
      bytesDone: BigInt(r.bytes),
      bytesTotal: BigInt(r.bytes),
      evicted: r.evicted,
      device: r.device,
    };
  }

  async unloadModel(request: UnloadModelRequest) {
    const key = refKey(request.ref);
    if (this.deps.external.has(key)) return { unloaded: await this.deps.external.stop(key) };
    return { unloaded: await this.deps.loader.unload(request.ref!, request.downTo) };
  }

  /** Serves a model that is resident; never loads one (the scheduler owns loads). */
  async *infer(request: InferRequest, ctx: HandlerContext): AsyncGenerator<InferResponseInit> {
    const key = refKey(request.ref);
    const done = this.deps.requests.begin(key);
    try {
      if (this.deps.external.has(key)) {
        const runtime = this.deps.external.running(key);
        if (runtime === undefined) throw notLoaded(key);
        yield* inferOnExternal(runtime, request, ctx.signal);
        return;
      }
      if (this.deps.gpu.find(key) === undefined) throw notLoaded(key);
      yield* inferOnEngine(this.deps.gpu, key, this.deps.loader.text(key), this.deps.textWorkers, request, ctx.signal);
    } finally {
      done();
    }
  }

  async getStatus() {
    return { status: this.deps.status() };
  }
}

/** Sends [offset, offset+length) of an in-memory file in ReadChunk pieces. */
function* sendBytes(bytes: Uint8Array, request: ReadChunkRequest) {
  const fileLength = BigInt(bytes.byteLength);
  if (request.offset > fileLength) throw new ConnectError(`offset ${request.offset} is past the end (${fileLength} bytes)`, Code.OutOfRange);
  const start = Number(request.offset);
  const end = request.length === 0n ? bytes.byteLength : Math.min(bytes.byteLength, start + Number(request.length));
  for (let at = start; at < end; at += READ_CHUNK_PIECE) {
    yield { offset: BigInt(at), data: bytes.subarray(at, Math.min(end, at + READ_CHUNK_PIECE)), fileLength };
  }
  if (start === end) yield { offset: BigInt(start), data: new Uint8Array(0), fileLength };
}
