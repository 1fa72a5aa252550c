// HTTP glue shared by the edge's routers: bodies in, JSON and server-sent events out. Works on
// HTTP/1.1 and on HTTP/2 (h2c) requests alike.
import type http from "node:http";
import type http2 from "node:http2";
import { badRequest, OpenAIError } from "./errors.js";

export type EdgeRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type EdgeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** Largest request body accepted (long prompts fit; a runaway upload does not). */
export const MAX_BODY_BYTES = 32 << 20;

/** Reads and parses a JSON object body. */
export async function readJson(req: EdgeRequest, limit = MAX_BODY_BYTES): Promise<Record<string, unknown>> {
  const text = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners("data");
        req.resume();
        reject(new OpenAIError(413, `request body is larger than ${limit} bytes`, "invalid_request_error"));
        return;
      }
      chunks.push(chunk);
    });
    req.once("end", () => resolve(chunks.length === 1 ? chunks[0].toString("utf8") : Buffer.concat(chunks).toString("utf8")));
    req.once("error", reject);
  });
  if (text.trim() === "") throw badRequest("the request body is empty; send a JSON object");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw badRequest(`We could not parse the JSON body of your request. (${(err as Error).message})`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw badRequest("the request body must be a JSON object");
  return value as Record<string, unknown>;
}

export function sendJson(res: EdgeResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  (res as http.ServerResponse).writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(text)),
  });
  res.end(text);
}

export function sendText(res: EdgeResponse, status: number, text: string, contentType: string): void {
  if (res.headersSent) return;
  (res as http.ServerResponse).writeHead(status, { "content-type": contentType, "content-length": String(Buffer.byteLength(text)) });
  res.end(text);
}

/**
 * A server-sent event stream in OpenAI's framing: `data: <json>\n\n` …, then `data: [DONE]\n\n`.
 * Events written in one turn of the event loop leave in one socket write (the response is corked
 * at the first and uncorked at the end of the turn), so bursts of tokens cost one syscall, and a
 * lone token waits for nothing.
 */
export class SseWriter {
  private open = false;
  private corked = false;
  private readonly res: http.ServerResponse;
  private readonly flush = () => {
    this.corked = false;
    if (!this.res.writableEnded) this.res.uncork();
  };

  constructor(res: EdgeResponse) {
    // The HTTP/2 compatibility response has the same write/end/writeHead surface.
    this.res = res as http.ServerResponse;
  }

  private cork(): void {
    if (this.corked || typeof this.res.cork !== "function") return;
    this.corked = true;
    this.res.cork();
    setImmediate(this.flush);
  }

  start(headers: Record<string, string> = {}): void {
    if (this.open) return;
    this.open = true;
    this.res.writeHead(200, {
      ...headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    });
  }

  send(data: unknown): void {
    this.cork();
    this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Writes events already framed ("data: …\n\n"). */
  write(framed: string): void {
    this.cork();
    this.res.write(framed);
  }

  /** Writes an event whose JSON is already made. */
  sendRaw(json: string): void {
    this.cork();
    this.res.write(`data: ${json}\n\n`);
  }

  /** Writes several events in one socket write. */
  sendAll(data: unknown[]): void {
    if (data.length === 0) return;
    this.cork();
    let text = "";
    for (const d of data) text += `data: ${JSON.stringify(d)}\n\n`;
    this.res.write(text);
  }

  done(): void {
    this.res.end("data: [DONE]\n\n");
  }
}

/** An AbortSignal that fires when the client goes away before the response is complete. */
export function clientGone(req: EdgeRequest, res: EdgeResponse): AbortSignal {
  const controller = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) controller.abort(new Error("client disconnected"));
  };
  res.once("close", onClose);
  req.once("aborted", onClose);
  return controller.signal;
}

/**
 * What a response cut short reports: the reason its signal was aborted for (the server shutting
 * down) rather than the cancellation that abort caused downstream; otherwise the error itself.
 */
export function ended(signal: AbortSignal, err: unknown): unknown {
  return signal.aborted ? signal.reason : err;
}
