// POST /v1/chat/completions: the request as OpenAI (and vLLM) define it, validated and turned
// into a thaw.scheduler.v1.ChatCompletionRequest. Unknown fields are ignored.
import { create } from "@bufbuild/protobuf";
import { ChatCompletionRequestSchema, type ChatCompletionRequest } from "../../../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { badRequest } from "../errors.js";
import { describe, Params } from "../params.js";
import { MAX_TOP_LOGPROBS, parseCommon, type CommonFields } from "../sampling.js";

export interface ChatRequest extends CommonFields {
  request: ChatCompletionRequest;
}

const ROLES = new Set(["system", "developer", "user", "assistant", "tool", "function"]);

export function parseChatRequest(body: Record<string, unknown>, requestId: string): ChatRequest {
  const p = new Params(body);
  const common = parseCommon(p, undefined);
  const messages = parseMessages(body.messages);

  const logprobs = p.boolean("logprobs") ?? false;
  const top = p.uint32("top_logprobs", { max: MAX_TOP_LOGPROBS });
  if (top !== undefined && top > 0 && !logprobs) throw badRequest("when using `top_logprobs`, `logprobs` must be set to true", "top_logprobs");
  const tools = body.tools;
  const toolChoice = body.tool_choice;
  if (Array.isArray(tools) && tools.length > 0 && toolChoice !== "none") {
    throw badRequest('tool calling is not supported; leave out "tools" or set "tool_choice": "none"', "tools");
  }
  if (Array.isArray(body.functions) && body.functions.length > 0 && body.function_call !== "none") {
    throw badRequest("function calling is not supported", "functions");
  }

  const request = create(ChatCompletionRequestSchema, {
    model: common.model,
    messages,
    sampling: { ...common.sampling, logprobs, topLogprobs: logprobs ? (top ?? 0) : 0 },
    options: common.options,
    requestId,
    chatTemplate: p.string("chat_template") ?? "",
    addGenerationPrompt: p.boolean("add_generation_prompt"),
  });
  return { ...common, request, topLogprobs: logprobs ? (top ?? 0) : undefined };
}

function parseMessages(value: unknown): { role: string; content: string; name: string }[] {
  if (!Array.isArray(value)) throw badRequest(`'messages' must be a list of messages, got ${describe(value)}`, "messages");
  if (value.length === 0) throw badRequest("'messages' must contain at least one message", "messages");
  return value.map((m, i) => {
    const param = `messages[${i}]`;
    if (m === null || typeof m !== "object" || Array.isArray(m)) throw badRequest(`${param} must be an object`, param);
    const msg = m as Record<string, unknown>;
    const role = msg.role;
    if (typeof role !== "string" || !ROLES.has(role)) {
      throw badRequest(`${param}.role must be one of system, developer, user, assistant, tool; got ${describe(role)}`, `${param}.role`);
    }
    const name = msg.name;
    if (name !== undefined && name !== null && typeof name !== "string") throw badRequest(`${param}.name must be a string`, `${param}.name`);
    return { role: role === "developer" ? "system" : role, content: contentText(msg.content, role, param), name: (name as string | undefined) ?? "" };
  });
}

/** A message's content as text: a string, or a list of text parts (joined with newlines). */
function contentText(content: unknown, role: string, param: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) {
    if (role === "assistant") return ""; // an assistant turn that only called tools
    throw badRequest(`${param}.content is missing`, `${param}.content`);
  }
  if (!Array.isArray(content)) throw badRequest(`${param}.content must be a string or a list of content parts`, `${param}.content`);
  const texts = content.map((part, j) => {
    const where = `${param}.content[${j}]`;
    if (part === null || typeof part !== "object") throw badRequest(`${where} must be an object`, where);
    const type = (part as Record<string, unknown>).type;
    const text = (part as Record<string, unknown>).text;
    if (type !== "text" && type !== "input_text") throw badRequest(`${where}: content of type ${describe(type)} is not supported; only text`, where);
    if (typeof text !== "string") throw badRequest(`${where}.text must be a string`, `${where}.text`);
    return text;
  });
  return texts.join("\n");
}
