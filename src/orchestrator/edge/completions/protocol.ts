// POST /v1/completions: the legacy text completion request. The prompt is a text, a list of
// texts, a list of token ids or a list of such lists; each prompt becomes one
// thaw.scheduler.v1.CompletionRequest, and choice indexes run prompt by prompt (i·n + j).
import { create } from "@bufbuild/protobuf";
import { CompletionRequestSchema, type CompletionRequest } from "../../../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { badRequest } from "../errors.js";
import { isTokenId, Params } from "../params.js";
import { MAX_TOP_LOGPROBS, parseCommon, type CommonFields } from "../sampling.js";

export interface CompletionsRequest extends CommonFields {
  /** One request per prompt. */
  requests: CompletionRequest[];
  echo: boolean;
}

/** Most prompts in one request. */
export const MAX_PROMPTS = 256;

export function parseCompletionRequest(body: Record<string, unknown>, requestId: string): CompletionsRequest {
  const p = new Params(body);
  const common = parseCommon(p, 16);
  const prompts = parsePrompt(body.prompt);
  if (prompts.length * common.n > 1024) throw badRequest(`${prompts.length} prompts × n=${common.n} is more than 1024 choices`, "n");
  const logprobs = p.uint32("logprobs", { max: MAX_TOP_LOGPROBS });
  const echo = p.boolean("echo") ?? false;
  const suffix = p.string("suffix");
  if (suffix !== undefined && suffix !== "") throw badRequest("suffix is not supported", "suffix");
  const sampling = { ...common.sampling, logprobs: logprobs !== undefined, topLogprobs: logprobs ?? 0 };
  const requests = prompts.map((prompt, i) =>
    create(CompletionRequestSchema, {
      model: common.model,
      prompt: typeof prompt === "string" ? { case: "text", value: prompt } : { case: "tokens", value: { tokenIds: prompt } },
      sampling,
      options: common.options,
      requestId: prompts.length > 1 ? `${requestId}#${i}` : requestId,
      echo,
    }),
  );
  return { ...common, requests, echo, topLogprobs: logprobs };
}

function parsePrompt(prompt: unknown): (string | number[])[] {
  if (typeof prompt === "string") return [prompt];
  if (Array.isArray(prompt) && prompt.length > 0) {
    if (prompt.length > MAX_PROMPTS && !prompt.every(isTokenId)) throw badRequest(`at most ${MAX_PROMPTS} prompts per request`, "prompt");
    if (prompt.every((x) => typeof x === "string")) return prompt as string[];
    if (prompt.every(isTokenId)) return [prompt as number[]];
    if (prompt.every((x) => Array.isArray(x) && x.length > 0 && x.every(isTokenId))) return prompt as number[][];
  }
  if (prompt === undefined || prompt === null) throw badRequest("you must provide a prompt", "prompt");
  throw badRequest("'prompt' must be a string, a list of strings, a list of token ids, or a list of lists of token ids (none empty)", "prompt");
}
