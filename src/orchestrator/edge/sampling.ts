// The request fields chat and text completions share: sampling (OpenAI's and vLLM's extra
// fields), choices, stop strings, streaming options.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SamplingParamsSchema } from "../../gen/thaw/engine/v1/engine_pb.js";
import type { CompletionOptionsSchema } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";
import { MAX_CHOICES } from "../scheduler/requests.js";
import { badRequest } from "./errors.js";
import { UINT32_MAX, type Params } from "./params.js";

export interface CommonFields {
  model: string;
  n: number;
  stream: boolean;
  includeUsage: boolean;
  sampling: MessageInitShape<typeof SamplingParamsSchema>;
  options: MessageInitShape<typeof CompletionOptionsSchema>;
  /** Top alternatives per position wanted in the output (undefined: no logprobs at all). */
  topLogprobs: number | undefined;
}

export const MAX_TOP_LOGPROBS = 20;

/**
 * Reads the shared fields. `defaultMaxTokens` is 16 for text completions (OpenAI's legacy
 * default) and undefined (up to the context length) for chat.
 */
export function parseCommon(p: Params, defaultMaxTokens: number | undefined): Omit<CommonFields, "topLogprobs"> {
  const model = p.string("model");
  if (model === undefined || model === "") throw badRequest("you must provide a model parameter", "model");
  const n = p.uint32("n", { min: 1, max: MAX_CHOICES }) ?? 1;
  const bestOf = p.uint32("best_of", { min: 1 });
  if (bestOf !== undefined && bestOf !== n) throw badRequest("best_of other than n is not supported", "best_of");
  const stream = p.boolean("stream") ?? false;
  const streamOptions = p.object("stream_options");
  if (streamOptions !== undefined && !stream) {
    throw badRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options");
  }
  const includeUsage = streamOptions?.include_usage;
  if (includeUsage !== undefined && includeUsage !== null && typeof includeUsage !== "boolean") {
    throw badRequest("'stream_options.include_usage' must be a boolean", "stream_options.include_usage");
  }

  // Every number is checked against the proto field it fills (uint32, float, uint64): a value
  // that cannot be serialized is the caller's 400, never a 500 that blames an agent.
  const maxTokens = p.uint32("max_completion_tokens", { min: 1 }) ?? p.uint32("max_tokens", { min: 1 }) ?? defaultMaxTokens;
  const minTokens = p.uint32("min_tokens") ?? 0;
  if (maxTokens !== undefined && minTokens > maxTokens) throw badRequest(`min_tokens (${minTokens}) is larger than max_tokens (${maxTokens})`, "min_tokens");
  const topK = p.integer("top_k", { min: -1, max: UINT32_MAX });
  // uint64 on the wire; negative seeds (as vLLM takes) wrap to their two's complement.
  const seed = p.integer("seed", { min: -(2 ** 63), below: 2 ** 64 });
  const logitBias = p.object("logit_bias");
  if (logitBias !== undefined && Object.keys(logitBias).length > 0) throw badRequest("logit_bias is not supported", "logit_bias");
  const responseFormat = p.object("response_format");
  if (responseFormat !== undefined && responseFormat.type !== "text") {
    throw badRequest(`response_format ${JSON.stringify(responseFormat.type)} is not supported; only "text"`, "response_format");
  }

  const sampling: MessageInitShape<typeof SamplingParamsSchema> = {
    temperature: p.float32("temperature", { min: 0, max: 2 }),
    topP: p.float32("top_p", { above: 0, max: 1 }),
    topK: topK === undefined || topK <= 0 ? 0 : topK,
    minP: p.float32("min_p", { min: 0, max: 1 }) ?? 0,
    seed: seed === undefined ? undefined : BigInt.asUintN(64, BigInt(seed)),
    presencePenalty: p.float32("presence_penalty", { min: -2, max: 2 }) ?? 0,
    frequencyPenalty: p.float32("frequency_penalty", { min: -2, max: 2 }) ?? 0,
    repetitionPenalty: p.float32("repetition_penalty", { above: 0 }),
    maxTokens: maxTokens ?? 0,
    minTokens,
    stopTokenIds: p.tokenIds("stop_token_ids") ?? [],
    ignoreEos: p.boolean("ignore_eos") ?? false,
  };
  const options: MessageInitShape<typeof CompletionOptionsSchema> = {
    n,
    stop: (p.strings("stop") ?? []).filter((s) => s !== ""),
    includeStopStrInOutput: p.boolean("include_stop_str_in_output") ?? false,
    skipSpecialTokens: p.boolean("skip_special_tokens") ?? true,
    user: p.string("user") ?? "",
  };
  return { model, n, stream, includeUsage: includeUsage === true, sampling, options };
}
