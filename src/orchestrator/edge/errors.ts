// The one place where errors become OpenAI's: gRPC Code → HTTP status, and the body
// {"error": {"message", "type", "param", "code"}} that the OpenAI SDKs turn into typed errors
// (BadRequestError 400, AuthenticationError 401, PermissionDeniedError 403, NotFoundError 404,
// ConflictError 409, UnprocessableEntityError 422, RateLimitError 429, InternalServerError ≥500).
import { Code, ConnectError } from "@connectrpc/connect";

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error with everything needed to answer it the way OpenAI does. */
export class OpenAIError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "OpenAIError";
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function badRequest(message: string, param: string | null = null, code: string | null = null): OpenAIError {
  return new OpenAIError(400, message, "invalid_request_error", param, code);
}

export function invalidApiKey(): OpenAIError {
  return new OpenAIError(
    401,
    "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.",
    "invalid_request_error",
    null,
    "invalid_api_key",
  );
}

export function modelNotFound(model: string): OpenAIError {
  return new OpenAIError(404, `The model \`${model}\` does not exist.`, "invalid_request_error", "model", "model_not_found");
}

export function unknownUrl(method: string, url: string): OpenAIError {
  return new OpenAIError(
    404,
    `Unrecognized request URL (${method} ${url}). Please check the URL for typos.`,
    "invalid_request_error",
  );
}

/** HTTP status of a gRPC code, as the edge answers it. */
export function httpStatus(code: Code): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
    case Code.FailedPrecondition:
      return 400;
    case Code.Unauthenticated:
      return 401;
    case Code.PermissionDenied:
      return 403;
    case Code.NotFound:
      return 404;
    case Code.AlreadyExists:
    case Code.Aborted:
      return 409;
    case Code.ResourceExhausted:
      return 429;
    case Code.Canceled:
      return 499;
    case Code.Unimplemented:
      return 501;
    case Code.Unavailable:
      return 503;
    case Code.DeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

const CONTEXT_LENGTH = /max_model_len|context length|maximum context/i;
/** The scheduler's FAILED_PRECONDITION for a model larger than any agent can load (placer.ts). */
const MODEL_TOO_LARGE = /^model .* fits no agent: /;

/**
 * Any error (a ConnectError from the scheduler or an agent, an OpenAIError from validation, or
 * anything else) as OpenAI would report it. `promptParam` names the field a too-long prompt
 * came in ("messages" or "prompt").
 */
export function toOpenAIError(err: unknown, promptParam = "messages"): OpenAIError {
  if (err instanceof OpenAIError) return err;
  const e = ConnectError.from(err);
  const status = httpStatus(e.code);
  const message = e.rawMessage;
  switch (status) {
    case 400:
      if (CONTEXT_LENGTH.test(message)) return badRequest(message, promptParam, "context_length_exceeded");
      if (MODEL_TOO_LARGE.test(message)) return badRequest(message, "model", "model_too_large");
      return badRequest(message);
    case 401:
      return new OpenAIError(401, message, "invalid_request_error", null, "invalid_api_key");
    case 403:
      return new OpenAIError(403, message, "permission_error");
    case 404: {
      const model = /^The model `(.*)` does not exist\.$/.exec(message);
      return model ? modelNotFound(model[1]) : new OpenAIError(404, message, "invalid_request_error", null, "not_found");
    }
    case 409:
      return new OpenAIError(409, message, "invalid_request_error", null, "conflict");
    case 429: {
      const retryAfter = e.metadata.get("retry-after") ?? "1";
      return new OpenAIError(429, message, "requests", null, "rate_limit_exceeded", { "retry-after": retryAfter });
    }
    case 499:
      return new OpenAIError(499, message, "invalid_request_error", null, "cancelled");
    case 503:
      return new OpenAIError(503, message, "server_error", null, "service_unavailable", { "retry-after": "1" });
    default:
      return new OpenAIError(status, message || "internal error", "server_error", null, null);
  }
}
