// The edge's HTTP router: OpenAI's REST endpoints plus health, readiness and metrics, mounted as
// the fallback of the one-port server (RPCs never reach it). HTTP glue only: protocols and
// serving live beside it, per endpoint. Every response carries x-request-id; a client that goes
// away cancels its generation; shutdown() ends the generations still running, streams with an
// in-band error event and [DONE] (never a bare end of stream), others with a 503.
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import type { OrchestratorMetrics } from "../metrics.js";
import type { EdgeBackend } from "./backend.js";
import { parseChatRequest } from "./chat/protocol.js";
import { serveChat } from "./chat/serving.js";
import { parseCompletionRequest } from "./completions/protocol.js";
import { serveCompletion } from "./completions/serving.js";
import { badRequest, invalidApiKey, modelNotFound, OpenAIError, toOpenAIError, unknownUrl } from "./errors.js";
import { clientGone, readJson, sendJson, sendText, type EdgeRequest, type EdgeResponse } from "./http.js";
import { modelList, modelObject } from "./models.js";

export interface EdgeOptions {
  backend: EdgeBackend;
  metrics: OrchestratorMetrics;
  /** The registry /metrics shows. */
  registry: Registry;
  /** API keys accepted on /v1/* as `Authorization: Bearer <key>`; empty: no key needed. */
  apiKeys?: readonly string[];
  log?: (line: string) => void;
}

const REQUEST_ID = /^[\w.:@/+=-]{1,200}$/;

/** Why generations still running at shutdown end: a 503 the client may retry elsewhere or later. */
const SHUTTING_DOWN = new ConnectError("the server is shutting down; retry the request", Code.Unavailable);

export class Edge {
  private readonly keyDigests: Buffer[];
  private readonly log: (line: string) => void;
  /** Aborted by shutdown(): every generation listens to it. */
  private readonly stopping = new AbortController();
  /** Requests being answered. */
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly options: EdgeOptions) {
    this.keyDigests = (options.apiKeys ?? []).filter((k) => k !== "").map(digest);
    this.log = options.log ?? (() => {});
  }

  /** The fallback handler for startServer. */
  readonly handle = (req: EdgeRequest, res: EdgeResponse): void => {
    const given = req.headers["x-request-id"];
    const requestId = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
    res.setHeader("x-request-id", requestId);
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    const endpoint = endpointOf(path);
    res.once("finish", () => this.options.metrics.httpRequests.inc({ endpoint, status: String(res.statusCode) }));
    const answering = this.route(req, res, path, requestId).catch((err) => this.fail(res, err, path));
    this.running.add(answering);
    void answering.finally(() => this.running.delete(answering));
  };

  /**
   * Ends every generation still running, and any that starts from now on: an event stream with a
   * `data: {"error": …}` event (503 service_unavailable) and `data: [DONE]`, any other response
   * with a 503. Resolves once every request being answered has ended.
   */
  async shutdown(): Promise<void> {
    this.stopping.abort(SHUTTING_DOWN);
    await Promise.allSettled([...this.running]);
  }

  private async route(req: EdgeRequest, res: EdgeResponse, path: string, requestId: string): Promise<void> {
    const method = req.method ?? "GET";
    if (path === "/health") return void this.only(method, ["GET", "HEAD"], () => sendJson(res, 200, { status: "ok" }));
    if (path === "/ready") {
      return void this.only(method, ["GET", "HEAD"], () => {
        const ready = this.options.backend.ready();
        sendJson(res, ready ? 200 : 503, ready ? { status: "ready" } : { status: "not ready", reason: "no live agent yet" });
      });
    }
    if (path === "/metrics") {
      this.only(method, ["GET"], () => undefined);
      const text = await this.options.registry.metrics();
      return sendText(res, 200, text, this.options.registry.contentType);
    }
    if (path !== "/v1" && !path.startsWith("/v1/")) throw unknownUrl(method, path);
    this.authorize(req);
    const headers = { "x-request-id": requestId };
    if (path === "/v1/models") {
      this.only(method, ["GET"], () => undefined);
      return sendJson(res, 200, modelList(this.options.backend.listModels()), headers);
    }
    if (path.startsWith("/v1/models/")) {
      this.only(method, ["GET"], () => undefined);
      const id = decodePathPart(path.slice("/v1/models/".length));
      const info = this.options.backend.getModel(id);
      if (info === undefined) throw modelNotFound(id);
      return sendJson(res, 200, modelObject(info), headers);
    }
    if (path === "/v1/chat/completions") {
      this.only(method, ["POST"], () => undefined);
      const signal = AbortSignal.any([clientGone(req, res), this.stopping.signal]);
      const chat = parseChatRequest(await readJson(req), requestId);
      return serveChat(this.options.backend, chat, res, headers, signal);
    }
    if (path === "/v1/completions") {
      this.only(method, ["POST"], () => undefined);
      const signal = AbortSignal.any([clientGone(req, res), this.stopping.signal]);
      const completion = parseCompletionRequest(await readJson(req), requestId);
      return serveCompletion(this.options.backend, completion, res, headers, signal);
    }
    throw unknownUrl(method, path);
  }

  /** Runs `then` for an allowed method; throws 405 otherwise. */
  private only(method: string, allowed: string[], then: () => void): void {
    if (!allowed.includes(method)) {
      throw new OpenAIError(405, `Method ${method} is not allowed here; use ${allowed.join(" or ")}`, "invalid_request_error", null, "method_not_allowed", {
        allow: allowed.join(", "),
      });
    }
    then();
  }

  private authorize(req: EdgeRequest): void {
    if (this.keyDigests.length === 0) return;
    const header = req.headers.authorization;
    const m = typeof header === "string" ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
    if (m === null) throw invalidApiKey();
    const given = digest(m[1]);
    let ok = false;
    for (const d of this.keyDigests) ok = timingSafeEqual(given, d) || ok;
    if (!ok) throw invalidApiKey();
  }

  private fail(res: EdgeResponse, err: unknown, path: string): void {
    const e = toOpenAIError(err, path === "/v1/completions" ? "prompt" : "messages");
    if (e.status >= 500 && e.status !== 503) this.log(`${path}: ${e.status} ${e.message}`);
    if (res.headersSent) {
      // A stream that already began reports in-band (the serving modules do); anything else is cut.
      if (!res.writableEnded) res.destroy();
      return;
    }
    if (res.destroyed) return;
    sendJson(res, e.status, e.body(), e.headers);
  }
}

/** A percent-encoded path segment, decoded; malformed encoding ("%", "%zz", broken UTF-8) is the caller's 400. */
function decodePathPart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw badRequest(`the URL path holds malformed percent-encoding (${JSON.stringify(part.length > 80 ? `${part.slice(0, 80)}…` : part)})`, null, "invalid_url");
  }
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

function endpointOf(path: string): string {
  if (path === "/v1/chat/completions" || path === "/v1/completions" || path === "/v1/models" || path === "/health" || path === "/ready" || path === "/metrics") return path;
  if (path.startsWith("/v1/models/")) return "/v1/models/{id}";
  return "other";
}
