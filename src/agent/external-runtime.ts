// An external OpenAI-compatible runtime (e.g. `vllm serve ...`) standing behind the agent for one
// model: the agent starts the server as its subprocess, waits until its health endpoint answers,
// and forwards Infer as a streaming /v1/completions (or /v1/chat/completions) call, turning the SSE
// chunks back into InferResponse messages.
//
// The server runs under runtime-guardian.js, in a process group of its own that is stopped whole
// when the runtime is stopped or the agent goes away, even killed: no server outlives its agent.
import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import net from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { EngineState, type EngineInfo, EngineInfoSchema } from "../gen/thaw/agent/v1/agent_pb.js";
import type { InferRequest } from "../gen/thaw/agent/v1/agent_service_pb.js";
import { FinishReason } from "../gen/thaw/engine/v1/engine_pb.js";

export interface ExternalModelConfig {
  modelId: string;
  revision?: string;
  /** Command and arguments; "{port}" in any of them becomes the port the agent chose. */
  command: string[];
  /** Port the server listens on (default: a free one, given as {port} and $PORT). */
  port?: number;
  /** Polled until it answers 200 (default "/health"). */
  healthPath?: string;
  /** The "model" field of forwarded requests (default: modelId). */
  servedModelName?: string;
  /** Longest the server may take to become healthy (default 10 minutes). */
  startTimeoutMs?: number;
}

/** What one forwarded call yields: text as it arrives, then the finish and usage. */
export interface ExternalOutput {
  text: string;
  finishReason?: FinishReason;
  stopReason?: string;
  usage?: { promptTokens: number; completionTokens: number; cachedTokens: number };
}

const GUARDIAN = fileURLToPath(new URL("./runtime-guardian.js", import.meta.url));

/** Ports handed to runtimes of this process that may not be listening yet. */
const handedOut = new Set<number>();

/**
 * A port for a runtime to listen on. Between the check and the runtime's own bind another process
 * could take it, so it comes from below the kernel's ephemeral range (which bind(0) and outgoing
 * connections draw from), at random, free on every interface when checked, and never one this
 * process handed out and still uses.
 */
async function pickPort(): Promise<number> {
  const [ephemeralStart] = (await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8").catch(() => "32768 60999")).trim().split(/\s+/).map(Number);
  const low = 20_000;
  const high = Number.isInteger(ephemeralStart) && ephemeralStart > low + 1000 ? ephemeralStart - 1 : 30_000;
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (handedOut.has(port) || !(await bindable(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new ConnectError(`no free port between ${low} and ${high} for an external runtime`, Code.ResourceExhausted);
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen({ port, host: "0.0.0.0", exclusive: true }, () => server.close(() => resolve(true)));
  });
}

function statusCode(status: number): Code {
  if (status === 400 || status === 422) return Code.InvalidArgument;
  if (status === 401) return Code.Unauthenticated;
  if (status === 403) return Code.PermissionDenied;
  if (status === 404) return Code.NotFound;
  if (status === 429) return Code.ResourceExhausted;
  if (status >= 500) return Code.Unavailable;
  return Code.Unknown;
}

/** A float32 field as the decimal it was written as (0.9, not 0.8999999761581421). */
function decimal(x: number): number {
  return Number(x.toPrecision(7));
}

function finish(reason: unknown): FinishReason | undefined {
  if (reason === "stop") return FinishReason.STOP;
  if (reason === "length") return FinishReason.LENGTH;
  if (reason === "abort" || reason === "cancelled") return FinishReason.ABORT;
  return undefined;
}

export class ExternalRuntime {
  readonly id: string;
  private child: ChildProcess | undefined;
  private starting: Promise<void> | undefined;
  private port = 0;
  private healthy = false;
  private readonly streams = new Set<AbortController>();
  private exitReason: string | undefined;

  constructor(
    readonly config: ExternalModelConfig,
    private readonly log: (line: string) => void,
  ) {
    this.id = `external-${config.modelId.replace("/", "--")}`;
  }

  get running(): boolean {
    return this.healthy && this.child !== undefined;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the server (once; concurrent callers share the start) and waits for its health. */
  start(): Promise<void> {
    if (this.running) return Promise.resolve();
    this.starting ??= this.launch().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async launch(): Promise<void> {
    if (this.config.command.length === 0) throw new ConnectError(`no launch command for ${this.config.modelId}`, Code.FailedPrecondition);
    if (this.config.port === undefined) {
      handedOut.delete(this.port);
      this.port = await pickPort();
    } else {
      this.port = this.config.port;
    }
    const command = this.config.command.map((a) => a.replaceAll("{port}", String(this.port)));
    this.exitReason = undefined;
    // stdin stays open and unused: the guardian stops the server when it closes (this process ended).
    const child = spawn(process.execPath, [GUARDIAN, ...command], { env: { ...process.env, PORT: String(this.port) }, stdio: ["pipe", "pipe", "pipe"] });
    this.child = child;
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => this.log(`[${this.id}] ${line}`));
    }
    const exited = new Promise<void>((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitReason = signal !== null ? `killed by ${signal}` : `exited with status ${code}`;
        this.healthy = false;
        if (this.child === child) this.child = undefined;
        const error = new ConnectError(`${this.id} ${this.exitReason}`, Code.Unavailable);
        for (const s of this.streams) s.abort(error);
        resolve();
      });
      child.once("error", (err) => {
        this.exitReason = `could not start ${command[0]}: ${err.message}`;
        if (this.child === child) this.child = undefined;
        resolve();
      });
    });
    const deadline = Date.now() + (this.config.startTimeoutMs ?? 600_000);
    const health = `${this.baseUrl}${this.config.healthPath ?? "/health"}`;
    let gone = false;
    void exited.then(() => (gone = true));
    while (!gone) {
      try {
        const res = await fetch(health, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        if (res.ok) {
          this.healthy = true;
          return;
        }
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        child.kill("SIGTERM"); // the guardian stops the whole group (SIGKILL after its grace)
        throw new ConnectError(`${this.id} did not become healthy at ${health} in time`, Code.DeadlineExceeded);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new ConnectError(`${this.id} ${this.exitReason ?? "exited"} before it was healthy`, Code.Unavailable);
  }

  /** Stops the server; false when it was not running. */
  async stop(): Promise<boolean> {
    const child = this.child;
    if (child === undefined) return false;
    this.healthy = false;
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once("exit", () => resolve());
    });
    // The guardian stops the server's whole group: SIGTERM, then SIGKILL after 5 s.
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
    return true;
  }

  info(): EngineInfo {
    return create(EngineInfoSchema, {
      engineId: this.id,
      state: this.running ? EngineState.SERVING : this.starting ? EngineState.STARTING : EngineState.IDLE,
      device: "external",
      models: this.running ? [{ modelId: this.config.modelId, revision: this.config.revision || "main" }] : [],
      pid: this.child?.pid ?? 0,
      running: this.streams.size,
    });
  }

  get activeStreams(): number {
    return this.streams.size;
  }

  /** Forwards one completion and yields its output as it streams back. */
  async *infer(request: InferRequest, signal: AbortSignal): AsyncGenerator<ExternalOutput> {
    if (!this.running) throw new ConnectError(`${this.id} is not running`, Code.Unavailable);
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    this.streams.add(controller);
    try {
      const { path, body } = this.requestBody(request);
      let res: Response;
      try {
        res = await fetch(`${this.baseUrl}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "text/event-stream", ...(request.requestId ? { "x-request-id": request.requestId } : {}) },
          body: JSON.stringify(body),
          signal: controller.signal,
        });
      } catch (err) {
        throw this.failure(err, controller);
      }
      if (!res.ok || res.body === null) {
        const text = await res.text().catch(() => "");
        throw new ConnectError(`${this.id} answered ${res.status}: ${text.slice(0, 500)}`, statusCode(res.status));
      }
      let finishReason: FinishReason | undefined;
      let stopReason: string | undefined;
      let usage: ExternalOutput["usage"];
      let pieces = 0;
      try {
        for await (const data of sseData(res.body)) {
          if (data === "[DONE]") break;
          let event: Record<string, unknown>;
          try {
            event = JSON.parse(data) as Record<string, unknown>;
          } catch {
            throw new ConnectError(`${this.id} sent an event that is not JSON: ${data.slice(0, 200)}`, Code.Internal);
          }
          if (event.error !== undefined) {
            const e = event.error as { message?: string };
            throw new ConnectError(`${this.id}: ${e.message ?? JSON.stringify(event.error)}`, Code.Internal);
          }
          const u = event.usage as { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } } | null | undefined;
          if (u) {
            usage = { promptTokens: u.prompt_tokens ?? 0, completionTokens: u.completion_tokens ?? 0, cachedTokens: u.prompt_tokens_details?.cached_tokens ?? 0 };
          }
          const choice = (event.choices as Record<string, unknown>[] | undefined)?.[0];
          if (choice === undefined) continue;
          const delta = choice.delta as { content?: string } | undefined;
          const text = typeof choice.text === "string" ? choice.text : (delta?.content ?? "");
          if (text !== "") {
            pieces++;
            yield { text };
          }
          finishReason = finish(choice.finish_reason) ?? finishReason;
          if (typeof choice.stop_reason === "string") stopReason = choice.stop_reason;
        }
      } catch (err) {
        throw this.failure(err, controller);
      }
      if (finishReason === undefined) {
        throw new ConnectError(`${this.id} ended the stream without a finish reason`, Code.Unavailable);
      }
      yield { text: "", finishReason, stopReason, usage: usage ?? { promptTokens: 0, completionTokens: pieces, cachedTokens: 0 } };
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.streams.delete(controller);
      controller.abort();
    }
  }

  private failure(err: unknown, controller: AbortController): ConnectError {
    if (err instanceof ConnectError) return err;
    const reason: unknown = controller.signal.reason;
    if (controller.signal.aborted && reason instanceof ConnectError) return reason;
    return new ConnectError(`${this.id}: ${(err as Error).message}`, Code.Unavailable);
  }

  private requestBody(request: InferRequest): { path: string; body: Record<string, unknown> } {
    const s = request.sampling;
    const body: Record<string, unknown> = {
      model: this.config.servedModelName ?? this.config.modelId,
      stream: true,
      stream_options: { include_usage: true },
    };
    if (s !== undefined) {
      if (s.maxTokens > 0) body.max_tokens = s.maxTokens;
      if (s.temperature !== undefined) body.temperature = decimal(s.temperature);
      if (s.topP !== undefined) body.top_p = decimal(s.topP);
      if (s.topK > 0) body.top_k = s.topK;
      if (s.minP > 0) body.min_p = decimal(s.minP);
      if (s.seed !== undefined) body.seed = Number(s.seed);
      if (s.presencePenalty !== 0) body.presence_penalty = decimal(s.presencePenalty);
      if (s.frequencyPenalty !== 0) body.frequency_penalty = decimal(s.frequencyPenalty);
      if (s.repetitionPenalty !== undefined) body.repetition_penalty = decimal(s.repetitionPenalty);
      if (s.minTokens > 0) body.min_tokens = s.minTokens;
      if (s.stopTokenIds.length > 0) body.stop_token_ids = s.stopTokenIds;
      if (s.ignoreEos) body.ignore_eos = true;
    }
    if (request.stop.length > 0) body.stop = request.stop;
    if (request.includeStopStrInOutput) body.include_stop_str_in_output = true;
    body.skip_special_tokens = request.skipSpecialTokens;
    switch (request.prompt.case) {
      case "chat": {
        const chat = request.prompt.value;
        body.messages = chat.messages.map((m) => (m.name ? { role: m.role, content: m.content, name: m.name } : { role: m.role, content: m.content }));
        body.add_generation_prompt = chat.addGenerationPrompt;
        if (chat.chatTemplate) body.chat_template = chat.chatTemplate;
        return { path: "/v1/chat/completions", body };
      }
      case "text":
        body.prompt = request.prompt.value;
        if (request.echo) body.echo = true;
        return { path: "/v1/completions", body };
      case "tokens":
        body.prompt = request.prompt.value.tokenIds;
        if (request.echo) body.echo = true;
        return { path: "/v1/completions", body };
      default:
        throw new ConnectError("the request has no prompt", Code.InvalidArgument);
    }
  }
}

/** The `data:` payloads of a server-sent event stream. */
async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const bytes of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(bytes, { stream: true });
    for (;;) {
      const end = buffer.search(/\r?\n\r?\n/);
      if (end === -1) break;
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data !== "") yield data;
    }
  }
}
