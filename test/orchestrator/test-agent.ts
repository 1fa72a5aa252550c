// TestAgent: a real AgentService on a loopback port with scripted behaviour (no engine, no
// tiers), heartbeating to a scheduler like a real agent. Lets scheduler and edge tests control
// cache levels, bandwidths, queue lengths, token timing and failures, and observe every call.
// Like the real agent it serves only models it holds on its GPU (an Infer for another answers
// FAILED_PRECONDITION "not loaded": the scheduler owns loads) and, given devices, keeps a byte
// budget per device: a load goes to a device with room, else evicts the least recently used idle
// models down to DRAM, and heartbeats report each device's budget and resident models.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  AgentStatusSchema,
  EngineState,
  Tier,
  type AgentStatus,
} from "../../src/gen/thaw/agent/v1/agent_pb.js";
import {
  AgentService,
  type DownloadChunksRequest,
  type InferRequest,
  type LoadModelRequest,
  type UnloadModelRequest,
} from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { FinishReason } from "../../src/gen/thaw/engine/v1/engine_pb.js";
import { SchedulerService } from "../../src/gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { AGENT_ACCESS } from "../../src/agent/routes.js";
import { authorize, sendToken } from "../../src/shared/auth.js";
import { startServer, type RunningServer } from "../../src/shared/server.js";

export interface TestAgentOptions {
  id: string;
  /** Scheduler base URL to heartbeat to. */
  scheduler?: string;
  heartbeatMs?: number;
  /** Initial cache: model id → tier. */
  models?: Record<string, Tier>;
  /** Model size in bytes reported in the cache entries (default 1 GB). */
  modelBytes?: number;
  /** Measured bandwidth per tier (bytes/s) reported in heartbeats. */
  bandwidth?: Partial<Record<Tier, number>>;
  kvHitRate?: number;
  /** Extra queue length reported on top of the running requests. */
  extraQueue?: number;
  /** Tokens of the reply (default "Hello", ",", " world", "!"); cycled up to max_tokens when it is larger. */
  reply?: string[];
  tokenDelayMs?: number;
  /** Milliseconds a LoadModel takes. */
  loadMs?: number;
  /** LoadModel sends its first progress message and then nothing until it is cancelled. */
  hangLoads?: boolean;
  /** DownloadChunks sends nothing until it is cancelled. */
  hangDownloads?: boolean;
  /** Every model it loads is gone again before the Infer arrives (as if other loads kept taking the room). */
  loseModelsAfterLoad?: boolean;
  maxModelLen?: number;
  /** GPU devices and their byte budgets; absent: the agent reports no devices (as older agents did). */
  devices?: { device: string; budgetBytes: number }[];
  /** KV floor per resident model, counted in the device budget (default 0). */
  kvFloorBytes?: number;
  /** Bytes of particular models (others: modelBytes). */
  sizes?: Record<string, number>;
  /** Pinned DRAM pool reported in heartbeats (0: not reported). */
  dramPoolBytes?: number;
  /** Called as each Infer arrives (before any token). */
  onInfer?: (call: InferCall) => void;
  /** Internal token: required on its RPCs, proven to the scheduler, sent with heartbeats (as a real agent does). */
  token?: string;
  /** Address it reports in heartbeats instead of its own (a stranger's, or one where nothing listens). */
  advertise?: string;
}

export interface InferCall {
  request: InferRequest;
  signal: AbortSignal;
  tokensSent: number;
  done: boolean;
}

/** A failure to inject into the next Infer: before any token, or after `afterTokens` tokens. */
export interface InjectedFailure {
  code: Code;
  message?: string;
  afterTokens?: number;
}

const DEFAULT_REPLY = ["Hello", ",", " world", "!"];

export class TestAgent {
  readonly id: string;
  readonly infers: InferCall[] = [];
  readonly loads: LoadModelRequest[] = [];
  /** LoadModel calls the caller cancelled before they finished. */
  readonly cancelledLoads: LoadModelRequest[] = [];
  readonly unloads: UnloadModelRequest[] = [];
  readonly downloads: DownloadChunksRequest[] = [];
  readonly failures: InjectedFailure[] = [];
  /** model id → tier, as reported in heartbeats. */
  readonly tiers = new Map<string, Tier>();
  /** model id → device, for models on the GPU of an agent with devices. */
  readonly deviceOf = new Map<string, string>();
  readonly lastUsed = new Map<string, number>();
  /** Infers running per model id. */
  readonly runningBy = new Map<string, number>();
  options: TestAgentOptions;
  heartbeats = 0;
  private server: RunningServer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = 0;
  private beating = false;
  private paused: Promise<void> | undefined;

  private constructor(options: TestAgentOptions) {
    this.id = options.id;
    this.options = options;
    for (const [model, tier] of Object.entries(options.models ?? {})) {
      this.tiers.set(model, tier);
      if (tier === Tier.GPU && options.devices !== undefined) this.deviceOf.set(model, this.placeOnDevice(model).device);
    }
  }

  static async start(options: TestAgentOptions): Promise<TestAgent> {
    const agent = new TestAgent(options);
    agent.server = await startServer({
      routes: (router: ConnectRouter) => router.service(AgentService, agent.impl()),
      interceptors: [authorize({ internalToken: options.token }, AGENT_ACCESS, () => ({ agentId: agent.id, address: agent.address }))],
    });
    if (options.scheduler) await agent.beat(options.scheduler);
    return agent;
  }

  get address(): string {
    return this.options.advertise ?? `127.0.0.1:${this.server!.port}`;
  }

  get url(): string {
    return this.server!.url;
  }

  get inflight(): number {
    return this.running;
  }

  /** Bytes of a model's weights. */
  sizeOf(model: string): number {
    return this.options.sizes?.[model] ?? this.options.modelBytes ?? 1e9;
  }

  /** Moves a model off the GPU without telling anyone (stop heartbeats first to keep the scheduler's view stale). */
  drop(model: string): void {
    if (this.tiers.get(model) === Tier.GPU) this.tiers.set(model, Tier.DRAM);
    this.deviceOf.delete(model);
  }

  /** Holds every Infer before its first token until the returned function is called. */
  pause(): () => void {
    let resume!: () => void;
    this.paused = new Promise<void>((resolve) => (resume = resolve));
    return () => {
      this.paused = undefined;
      resume();
    };
  }

  status(): AgentStatus {
    const o = this.options;
    const idleMs = (model: string) => ((this.runningBy.get(model) ?? 0) > 0 ? 0 : Date.now() - (this.lastUsed.get(model) ?? Date.now()));
    return create(AgentStatusSchema, {
      agentId: this.id,
      address: this.address,
      models: [...this.tiers].map(([modelId, tier]) => ({
        ref: { modelId, revision: "main" },
        tier,
        bytes: BigInt(this.sizeOf(modelId)),
        kvHitRate: tier === Tier.GPU ? (o.kvHitRate ?? 0) : 0,
        idleMs: tier === Tier.GPU && this.running === 0 ? BigInt(idleMs(modelId)) : 0n,
        queueLength: 0,
        device: this.deviceOf.get(modelId) ?? "",
      })),
      devices: (o.devices ?? []).map((d) => {
        const resident = this.residentOn(d.device).map((model) => ({
          ref: { modelId: model, revision: "main" },
          bytes: BigInt(this.held(model)),
          running: this.runningBy.get(model) ?? 0,
          idleMs: BigInt(idleMs(model)),
        }));
        const used = resident.reduce((sum, r) => sum + Number(r.bytes), 0);
        const floor = o.kvFloorBytes ?? 0;
        return {
          device: d.device,
          engineId: "e0",
          budgetBytes: BigInt(d.budgetBytes),
          usedBytes: BigInt(used),
          freeBytes: BigInt(Math.max(0, d.budgetBytes - used)),
          resident,
          maxModelBytes: BigInt(Math.max(0, d.budgetBytes - floor)),
        };
      }),
      dramPoolBytes: BigInt(o.dramPoolBytes ?? 0),
      tiers: [Tier.GPU, Tier.DRAM, Tier.DISK, Tier.REMOTE].map((tier) => ({
        tier,
        totalBytes: 100n << 30n,
        freeBytes: 50n << 30n,
        bandwidthBytesPerSecond: o.bandwidth?.[tier] ?? 0,
      })),
      engines: [{ engineId: "e0", state: EngineState.SERVING, device: "cpu" }],
      queueLength: this.running + (o.extraQueue ?? 0),
      gpuCount: 0,
    });
  }

  /** Starts heartbeating to the scheduler at `url` (first heartbeat before returning). */
  async beat(url: string): Promise<void> {
    this.beating = true;
    const interceptors = this.options.token ? [sendToken(this.options.token)] : [];
    const client = createClient(SchedulerService, createGrpcTransport({ baseUrl: url, interceptors }));
    const send = async () => {
      try {
        await client.heartbeat({ status: this.status() });
        this.heartbeats++;
      } catch {
        // the scheduler may be restarting; keep trying
      }
    };
    await send();
    const loop = () => {
      this.timer = setTimeout(async () => {
        if (!this.beating) return;
        await send();
        if (this.beating) loop();
      }, this.options.heartbeatMs ?? 100);
      this.timer.unref?.();
    };
    loop();
  }

  stopHeartbeats(): void {
    this.beating = false;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Dies: heartbeats stop and every connection is cut (running streams break). */
  async kill(): Promise<void> {
    this.stopHeartbeats();
    await this.server?.close();
  }

  close(): Promise<void> {
    return this.kill();
  }

  private residentOn(device: string): string[] {
    return [...this.deviceOf].filter(([, d]) => d === device).map(([model]) => model);
  }

  /** Bytes a resident model holds in its device's budget. */
  private held(model: string): number {
    return this.sizeOf(model) + (this.options.kvFloorBytes ?? 0);
  }

  /**
   * The device a model goes to: the first with room, else the first where evicting idle models
   * (least recently used first) makes room. RESOURCE_EXHAUSTED when none can.
   */
  private placeOnDevice(model: string): { device: string; evicted: string[] } {
    const devices = this.options.devices ?? [];
    const need = this.held(model);
    const free = (device: string, budget: number) => budget - this.residentOn(device).reduce((sum, m) => sum + this.held(m), 0);
    const roomy = devices.find((d) => free(d.device, d.budgetBytes) >= need);
    if (roomy !== undefined) return { device: roomy.device, evicted: [] };
    for (const d of devices) {
      const idle = this.residentOn(d.device)
        .filter((m) => (this.runningBy.get(m) ?? 0) === 0)
        .sort((a, b) => (this.lastUsed.get(a) ?? 0) - (this.lastUsed.get(b) ?? 0));
      let room = free(d.device, d.budgetBytes);
      const evicted: string[] = [];
      for (const m of idle) {
        if (room >= need) break;
        room += this.held(m);
        evicted.push(m);
      }
      if (room < need) continue;
      for (const m of evicted) this.drop(m);
      return { device: d.device, evicted };
    }
    throw new ConnectError(`no device of agent ${this.id} has room for ${model} (${need} bytes)`, Code.ResourceExhausted);
  }

  private impl() {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const agent = this;
    return {
      async *downloadChunks(req: DownloadChunksRequest, ctx: HandlerContext) {
        agent.downloads.push(req);
        if (agent.options.hangDownloads) await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }));
        for (const f of req.fileNames) yield { fileName: f, bytesDone: 10n, bytesTotal: 10n, source: "store", complete: true };
        const model = req.ref!.modelId;
        if ((agent.tiers.get(model) ?? Tier.REMOTE) === Tier.REMOTE) agent.tiers.set(model, Tier.DISK);
      },
      async *readChunk() {},
      async *loadModel(req: LoadModelRequest, ctx: HandlerContext) {
        agent.loads.push(req);
        const model = req.ref!.modelId;
        const start = agent.tiers.get(model) ?? Tier.REMOTE;
        const bytes = BigInt(agent.sizeOf(model));
        yield { tier: start, bytesDone: 0n, bytesTotal: bytes, startTier: start };
        try {
          if (agent.options.hangLoads) await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }));
          if (agent.options.loadMs) await sleep(agent.options.loadMs, ctx.signal);
        } catch (err) {
          agent.cancelledLoads.push(req);
          throw err;
        }
        let device = "";
        let evicted: string[] = [];
        if (agent.options.devices !== undefined && !agent.deviceOf.has(model)) {
          ({ device, evicted } = agent.placeOnDevice(model));
          agent.deviceOf.set(model, device);
        }
        agent.tiers.set(model, Tier.GPU);
        agent.lastUsed.set(model, Date.now());
        const seconds = (agent.options.loadMs ?? 0) / 1000;
        if (agent.options.loseModelsAfterLoad) agent.drop(model);
        yield {
          tier: start,
          bytesDone: bytes,
          bytesTotal: bytes,
          ready: true,
          startTier: start,
          seconds,
          engineId: "e0",
          timings: [{ tier: start, bytes, seconds }],
          evicted: evicted.map((modelId) => ({ modelId, revision: "main" })),
          device: device || (agent.deviceOf.get(model) ?? ""),
        };
      },
      async unloadModel(req: UnloadModelRequest) {
        agent.unloads.push(req);
        const model = req.ref!.modelId;
        const was = agent.tiers.get(model);
        agent.drop(model);
        return { unloaded: was === Tier.GPU };
      },
      getStatus() {
        return { status: agent.status() };
      },
      async *infer(req: InferRequest, ctx: HandlerContext) {
        const call: InferCall = { request: req, signal: ctx.signal, tokensSent: 0, done: false };
        agent.infers.push(call);
        agent.options.onInfer?.(call);
        const model = req.ref!.modelId;
        if (agent.tiers.get(model) !== Tier.GPU) {
          throw new ConnectError(`${model}@main is not loaded on this agent (LoadModel first)`, Code.FailedPrecondition);
        }
        agent.running++;
        agent.runningBy.set(model, (agent.runningBy.get(model) ?? 0) + 1);
        try {
          if (agent.paused) await agent.paused;
          const failure = agent.failures.shift();
          if (failure !== undefined && (failure.afterTokens ?? 0) === 0) throw new ConnectError(failure.message ?? "injected failure", failure.code);
          const prompt = promptText(req);
          const promptTokens = Buffer.byteLength(prompt);
          const maxLen = agent.options.maxModelLen ?? 4096;
          if (promptTokens >= maxLen) {
            throw new ConnectError(`the prompt has ${promptTokens} tokens; this model serves at most ${maxLen - 1} (max_model_len ${maxLen})`, Code.InvalidArgument);
          }
          const reply = agent.options.reply ?? DEFAULT_REPLY;
          const max = req.sampling?.maxTokens || reply.length;
          const wantLogprobs = req.sampling?.logprobs ?? false;
          const top = req.sampling?.topLogprobs ?? 0;
          let text = req.echo ? prompt : "";
          let produced = "";
          let emitted = 0;
          for (let i = 0; i < max; i++) {
            if (failure !== undefined && i === failure.afterTokens) throw new ConnectError(failure.message ?? "injected failure", failure.code);
            if (agent.options.tokenDelayMs) await sleep(agent.options.tokenDelayMs, ctx.signal);
            ctx.signal.throwIfAborted();
            const piece = reply[i % reply.length];
            const id = 100 + (i % reply.length);
            produced += piece;
            const stop = req.stop.find((s) => produced.includes(s));
            const allowed = stop === undefined ? produced.length : produced.indexOf(stop) + (req.includeStopStrInOutput ? stop.length : 0);
            text += produced.slice(emitted, Math.max(emitted, allowed));
            emitted = Math.max(emitted, allowed);
            const token = {
              tokenId: id,
              text: piece,
              logprobs: wantLogprobs
                ? {
                    sampled: { tokenId: id, logprob: -0.25, text: piece },
                    top: Array.from({ length: top }, (_, k) => ({ tokenId: id + k, logprob: -0.25 - k, text: k === 0 ? piece : `alt${k}` })),
                  }
                : undefined,
            };
            call.tokensSent++;
            if (stop !== undefined || i === max - 1) {
              const finishReason = stop !== undefined || !req.sampling?.maxTokens ? FinishReason.STOP : FinishReason.LENGTH;
              yield { tokens: [token], text, finishReason, stopReason: stop ?? "", usage: { promptTokens, completionTokens: i + 1, cachedTokens: 0 } };
              call.done = true;
              return;
            }
            yield { tokens: [token], text };
            text = "";
          }
        } finally {
          agent.running--;
          agent.runningBy.set(model, (agent.runningBy.get(model) ?? 1) - 1);
          agent.lastUsed.set(model, Date.now());
        }
      },
    };
  }
}

function promptText(req: InferRequest): string {
  switch (req.prompt.case) {
    case "chat":
      return req.prompt.value.messages.map((m) => m.content).join("\n");
    case "text":
      return req.prompt.value;
    case "tokens":
      return req.prompt.value.tokenIds.map((id) => String.fromCharCode(97 + (id % 26))).join("");
    default:
      return "";
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
