// ChatCompletion and Completion requests (what the edge and RPC callers send) turned into the
// per-choice InferRequests agents run. n choices get seeds seed, seed+1, … so they differ and stay
// reproducible.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { InferRequestSchema } from "../../gen/thaw/agent/v1/agent_service_pb.js";
import type { SamplingParams } from "../../gen/thaw/engine/v1/engine_pb.js";
import type { CompletionOptions } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";
import type { ChatCompletionRequest, CompletionRequest } from "../../gen/thaw/scheduler/v1/scheduler_service_pb.js";

type InferInit = MessageInitShape<typeof InferRequestSchema>;

/** Most choices one request may ask for. */
export const MAX_CHOICES = 128;

export interface GenerationPlan {
  model: string;
  n: number;
  infer: (choice: number) => InferInit;
}

export function chatPlan(req: ChatCompletionRequest): GenerationPlan {
  if (req.model === "") throw new ConnectError("model is empty", Code.InvalidArgument);
  if (req.messages.length === 0) throw new ConnectError("messages is empty", Code.InvalidArgument);
  const n = choices(req.options);
  checkSampling(req.sampling);
  const chat = {
    messages: req.messages,
    addGenerationPrompt: req.addGenerationPrompt ?? true,
    chatTemplate: req.chatTemplate,
  };
  return {
    model: req.model,
    n,
    infer: (i) => ({
      prompt: { case: "chat", value: chat },
      ...common(req.sampling, req.options, req.requestId, i, n),
    }),
  };
}

export function completionPlan(req: CompletionRequest): GenerationPlan {
  if (req.model === "") throw new ConnectError("model is empty", Code.InvalidArgument);
  const n = choices(req.options);
  checkSampling(req.sampling);
  const prompt = req.prompt;
  if (prompt.case === undefined) throw new ConnectError("prompt is missing", Code.InvalidArgument);
  return {
    model: req.model,
    n,
    infer: (i) => ({
      prompt: prompt.case === "text" ? { case: "text", value: prompt.value } : { case: "tokens", value: prompt.value },
      echo: req.echo,
      ...common(req.sampling, req.options, req.requestId, i, n),
    }),
  };
}

function choices(options: CompletionOptions | undefined): number {
  const n = options?.n || 1;
  if (n > MAX_CHOICES) throw new ConnectError(`n is ${n}; at most ${MAX_CHOICES} choices per request`, Code.InvalidArgument);
  return n;
}

const FLOAT32_MAX = 3.4028234663852886e38;
const UINT32_MAX = 0xffffffff;
const FLOAT_FIELDS = [
  ["temperature", "temperature"],
  ["topP", "top_p"],
  ["minP", "min_p"],
  ["presencePenalty", "presence_penalty"],
  ["frequencyPenalty", "frequency_penalty"],
  ["repetitionPenalty", "repetition_penalty"],
] as const;
const UINT32_FIELDS = [
  ["topK", "top_k"],
  ["maxTokens", "max_tokens"],
  ["minTokens", "min_tokens"],
  ["topLogprobs", "top_logprobs"],
] as const;

/**
 * Numbers the wire cannot carry are the caller's INVALID_ARGUMENT here, naming the field, rather
 * than a serialization failure on the way to an agent (which would look like the agent's fault).
 * Messages decoded from the wire always pass; in-process callers (the edge) may not.
 */
export function checkSampling(sampling: SamplingParams | undefined): void {
  if (sampling === undefined) return;
  const bad = (field: string, value: unknown, what: string) => new ConnectError(`sampling.${field} is ${value}: ${what}`, Code.InvalidArgument);
  for (const [key, field] of FLOAT_FIELDS) {
    const v = sampling[key];
    if (v !== undefined && !(Math.abs(v) <= FLOAT32_MAX)) throw bad(field, v, "not a finite 32-bit float");
  }
  const uint32 = (v: number) => Number.isInteger(v) && v >= 0 && v <= UINT32_MAX;
  for (const [key, field] of UINT32_FIELDS) if (!uint32(sampling[key])) throw bad(field, sampling[key], "not an unsigned 32-bit integer");
  for (const [key, field] of [["stopTokenIds", "stop_token_ids"], ["eosTokenIds", "eos_token_ids"]] as const) {
    const v = sampling[key].find((id) => !uint32(id));
    if (v !== undefined) throw bad(field, `[… ${v} …]`, "token ids are unsigned 32-bit integers");
  }
  if (sampling.seed !== undefined && (sampling.seed < 0n || sampling.seed >= 1n << 64n)) throw bad("seed", sampling.seed, "not an unsigned 64-bit integer");
}

function common(sampling: SamplingParams | undefined, options: CompletionOptions | undefined, requestId: string, i: number, n: number) {
  const seeded = sampling !== undefined && sampling.seed !== undefined && i > 0 ? { ...sampling, seed: BigInt.asUintN(64, sampling.seed + BigInt(i)) } : sampling;
  return {
    sampling: seeded,
    stop: options?.stop ?? [],
    includeStopStrInOutput: options?.includeStopStrInOutput ?? false,
    skipSpecialTokens: options?.skipSpecialTokens ?? true,
    requestId: n > 1 ? `${requestId}/${i}` : requestId,
  };
}
