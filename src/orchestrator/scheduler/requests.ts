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
