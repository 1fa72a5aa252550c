// ThawClient: a TypeScript client for an orchestrator's SchedulerService over the generated
// stubs (gRPC over h2c by default, Connect over HTTP/1.1 on request). Operators register models,
// list agents and explain placement; applications stream chat and text completions.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Tier, type AgentStatus, type TokenOutput, type Usage } from "../gen/thaw/agent/v1/agent_pb.js";
import type { SamplingParamsSchema } from "../gen/thaw/engine/v1/engine_pb.js";
import {
  CompletionFinishReason,
  ModelSpecSchema,
  type AgentInfo,
  type ModelInfo,
  type PlacementScore,
} from "../gen/thaw/scheduler/v1/scheduler_pb.js";
import { SchedulerService, type ExplainPlacementResponse } from "../gen/thaw/scheduler/v1/scheduler_service_pb.js";

export interface ThawClientOptions {
  /** Orchestrator base URL or host:port (default http://127.0.0.1:8000). */
  baseUrl?: string;
  /**
   * Bearer credential sent on every call (default THAW_ADMIN_TOKEN): an API key grants completions
   * and ListModels; the admin token also the registry, ListAgents and ExplainPlacement.
   */
  token?: string;
  /** "grpc" (HTTP/2, default) or "connect" (HTTP/1.1, for proxies that only speak it). */
  protocol?: "grpc" | "connect";
  /** Extra interceptors (logging, headers). */
  interceptors?: Interceptor[];
}

export interface ModelRegistration {
  id: string;
  /** Hugging Face repo id or a folder the converter may read; default: the id. */
  source?: string;
  revision?: string;
  /** Seconds idle on a GPU before unloading; 0: the orchestrator's default. */
  keepAliveSeconds?: number;
  maxModelLen?: number;
  ownedBy?: string;
}

/** Sampling and choice options of a completion (OpenAI's names in camelCase). */
export interface GenerationOptions {
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  repetitionPenalty?: number;
  minTokens?: number;
  stop?: string[];
  stopTokenIds?: number[];
  ignoreEos?: boolean;
  /** Return logprobs of sampled tokens, and this many alternatives (0–20). */
  logprobs?: number;
  n?: number;
  requestId?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  name?: string;
}

/** Output of one choice since its previous delta. */
export interface Delta {
  index: number;
  text: string;
  tokens: TokenOutput[];
  /** "stop" | "length" | "abort" on the choice's last delta, else undefined. */
  finishReason?: "stop" | "length" | "abort";
  usage?: Usage;
  agentId: string;
}

/** A finished completion (choice 0 unless `n` > 1). */
export interface Completion {
  texts: string[];
  text: string;
  finishReasons: (Delta["finishReason"] | undefined)[];
  usage: { promptTokens: number; completionTokens: number };
  agentIds: string[];
}

export class ThawClient {
  /** The generated SchedulerService stub, for anything the helpers below do not cover. */
  readonly scheduler: Client<typeof SchedulerService>;

  constructor(options: ThawClientOptions | string = {}) {
    const o = typeof options === "string" ? { baseUrl: options } : options;
    const raw = o.baseUrl ?? process.env.THAW_ORCHESTRATOR ?? "http://127.0.0.1:8000";
    const baseUrl = /^https?:\/\//.test(raw) ? raw : `http://${raw}`;
    const interceptors: Interceptor[] = [...(o.interceptors ?? [])];
    const token = o.token ?? process.env.THAW_ADMIN_TOKEN;
    if (token) {
      interceptors.push((next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      });
    }
    const transport: Transport =
      o.protocol === "connect" ? createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors }) : createGrpcTransport({ baseUrl, interceptors });
    this.scheduler = createClient(SchedulerService, transport);
  }

  async registerModel(model: ModelRegistration): Promise<ModelInfo> {
    const spec = create(ModelSpecSchema, {
      id: model.id,
      source: model.source ?? "",
      revision: model.revision ?? "",
      keepAliveSeconds: model.keepAliveSeconds ?? 0,
      maxModelLen: model.maxModelLen ?? 0,
      ownedBy: model.ownedBy ?? "",
    });
    return (await this.scheduler.registerModel({ model: spec })).model!;
  }

  async unregisterModel(id: string): Promise<void> {
    await this.scheduler.unregisterModel({ id });
  }

  async listModels(): Promise<ModelInfo[]> {
    return (await this.scheduler.listModels({})).models;
  }

  async listAgents(): Promise<AgentInfo[]> {
    return (await this.scheduler.listAgents({})).agents;
  }

  /** Every agent's score for `model`, lowest (best) first, with the weights used. */
  async explainPlacement(model: string): Promise<ExplainPlacementResponse> {
    return this.scheduler.explainPlacement({ model });
  }

  /** Streams a chat completion as deltas. */
  async *chat(model: string, messages: ChatMessage[], options: GenerationOptions = {}): AsyncGenerator<Delta> {
    const stream = this.scheduler.chatCompletion(
      {
        model,
        messages: messages.map((m) => ({ role: m.role, content: m.content, name: m.name ?? "" })),
        sampling: sampling(options),
        options: { n: options.n ?? 1, stop: options.stop ?? [], skipSpecialTokens: true },
        requestId: options.requestId ?? "",
      },
      { signal: options.signal, timeoutMs: options.timeoutMs },
    );
    for await (const r of stream) yield delta(r);
  }

  /** Streams a text completion (prompt as text or token ids) as deltas. */
  async *complete(model: string, prompt: string | number[], options: GenerationOptions & { echo?: boolean } = {}): AsyncGenerator<Delta> {
    const stream = this.scheduler.completion(
      {
        model,
        prompt: typeof prompt === "string" ? { case: "text", value: prompt } : { case: "tokens", value: { tokenIds: prompt } },
        sampling: sampling(options),
        options: { n: options.n ?? 1, stop: options.stop ?? [], skipSpecialTokens: true },
        requestId: options.requestId ?? "",
        echo: options.echo ?? false,
      },
      { signal: options.signal, timeoutMs: options.timeoutMs },
    );
    for await (const r of stream) yield delta(r);
  }

  /** A whole chat completion. */
  chatText(model: string, messages: ChatMessage[], options: GenerationOptions = {}): Promise<Completion> {
    return collect(this.chat(model, messages, options), options.n ?? 1);
  }

  /** A whole text completion. */
  completeText(model: string, prompt: string | number[], options: GenerationOptions & { echo?: boolean } = {}): Promise<Completion> {
    return collect(this.complete(model, prompt, options), options.n ?? 1);
  }
}

/** "gpu", "dram", "disk", "remote". */
export function tierName(tier: Tier): string {
  return Tier[tier]?.toLowerCase() ?? "unknown";
}

export type { AgentInfo, AgentStatus, ModelInfo, PlacementScore, ExplainPlacementResponse };

function sampling(o: GenerationOptions): MessageInitShape<typeof SamplingParamsSchema> {
  return {
    temperature: o.temperature,
    topP: o.topP,
    topK: o.topK ?? 0,
    minP: o.minP ?? 0,
    seed: o.seed === undefined ? undefined : BigInt.asUintN(64, BigInt(o.seed)),
    presencePenalty: o.presencePenalty ?? 0,
    frequencyPenalty: o.frequencyPenalty ?? 0,
    repetitionPenalty: o.repetitionPenalty,
    maxTokens: o.maxTokens ?? 0,
    minTokens: o.minTokens ?? 0,
    stopTokenIds: o.stopTokenIds ?? [],
    ignoreEos: o.ignoreEos ?? false,
    logprobs: o.logprobs !== undefined,
    topLogprobs: o.logprobs ?? 0,
  };
}

function delta(r: { index: number; text: string; tokens: TokenOutput[]; finishReason: CompletionFinishReason; usage?: Usage; agentId: string }): Delta {
  const finish =
    r.finishReason === CompletionFinishReason.STOP ? "stop" : r.finishReason === CompletionFinishReason.LENGTH ? "length" : r.finishReason === CompletionFinishReason.ABORT ? "abort" : undefined;
  return { index: r.index, text: r.text, tokens: r.tokens, finishReason: finish, usage: r.usage, agentId: r.agentId };
}

async function collect(stream: AsyncIterable<Delta>, n: number): Promise<Completion> {
  const texts = Array.from({ length: n }, () => "");
  const finishReasons: Completion["finishReasons"] = Array.from({ length: n }, () => undefined);
  const agentIds = Array.from({ length: n }, () => "");
  let promptTokens = 0;
  let completionTokens = 0;
  for await (const d of stream) {
    texts[d.index] += d.text;
    agentIds[d.index] = d.agentId;
    if (d.finishReason) finishReasons[d.index] = d.finishReason;
    if (d.usage) {
      promptTokens = Math.max(promptTokens, d.usage.promptTokens);
      completionTokens += d.usage.completionTokens;
    }
  }
  return { texts, text: texts[0], finishReasons, usage: { promptTokens, completionTokens }, agentIds };
}
