// Chat templates and tokenisation off the event loop: a few worker threads (text-worker.ts) do them,
// one job at a time each, every job within a time limit (its worker is terminated past it) and every
// worker within a memory limit. A job that breaks a limit is the caller's fault (INVALID_ARGUMENT,
// a 400) and its worker is replaced; the agent's other requests never wait on its event loop.
// Jobs wait for a free worker in arrival order.
import { Worker } from "node:worker_threads";
import { Code, ConnectError } from "@connectrpc/connect";
import { DEFAULT_TEMPLATE_LIMITS, type ModelText, type TemplateLimits } from "./model-text.js";
import type { TextJob, TextJobReply, TextJobRequest } from "./text-worker.js";

export interface TextWorkersOptions {
  /** Worker threads (default 2). */
  workers?: number;
  /** Longest one job may take, ms (default 10 000). */
  timeoutMs?: number;
  /** Heap of each worker, MiB (default 512). */
  memoryMb?: number;
  /** Step and output bounds of a template. */
  limits?: TemplateLimits;
}

/** What a prompt became: its token ids, and the rendered text of a chat (for echo). */
export interface PromptTokens {
  ids: number[];
  text?: string;
}

interface Job {
  text: ModelText;
  job: TextJob;
  resolve: (tokens: PromptTokens) => void;
  reject: (err: unknown) => void;
  signal?: AbortSignal;
}

interface Thread {
  worker: Worker;
  /** Loaded and listening (a job's time counts from when it is handed over, never the start-up). */
  ready: boolean;
  /** Models (by serial) this worker was sent. */
  holds: Set<number>;
  running?: { id: number; job: Job; timer: NodeJS.Timeout };
}

/** Each ModelText's number, by which workers know it. */
const serials = new WeakMap<ModelText, number>();
let lastSerial = 0;
function serialOf(text: ModelText): number {
  let serial = serials.get(text);
  if (serial === undefined) serials.set(text, (serial = ++lastSerial));
  return serial;
}

// Run from TypeScript sources (tsx) or from compiled JavaScript, the worker module has the same kind.
const WORKER_MODULE = new URL(`./text-worker${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url).href;
const WORKER_ENTRY = new URL("./text-worker-entry.js", import.meta.url);

export class TextWorkers {
  private readonly threads: Thread[] = [];
  private readonly queue: Job[] = [];
  private readonly size: number;
  private readonly timeoutMs: number;
  private readonly memoryMb: number;
  private readonly limits: TemplateLimits;
  private nextId = 1;
  private closed = false;

  constructor(options: TextWorkersOptions = {}) {
    this.size = Math.max(1, options.workers ?? 2);
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.memoryMb = options.memoryMb ?? 512;
    this.limits = options.limits ?? DEFAULT_TEMPLATE_LIMITS;
  }

  /** Token ids of a prompt (a chat rendered with its template first), computed in a worker thread. */
  tokenize(text: ModelText, job: TextJob, signal?: AbortSignal): Promise<PromptTokens> {
    if (this.closed) return Promise.reject(new ConnectError("the agent is shutting down", Code.Unavailable));
    return new Promise<PromptTokens>((resolve, reject) => {
      const queued: Job = { text, job, resolve, reject, signal };
      const onAbort = (): void => {
        const at = this.queue.indexOf(queued);
        if (at !== -1) this.queue.splice(at, 1);
        reject(signal!.reason); // a job already running finishes within its limit; its answer is dropped
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      queued.resolve = (tokens) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(tokens);
      };
      queued.reject = (err) => {
        signal?.removeEventListener("abort", onAbort);
        reject(err);
      };
      this.queue.push(queued);
      this.pump();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(new ConnectError("the agent is shutting down", Code.Unavailable));
    await Promise.all(this.threads.splice(0).map((t) => this.stop(t, new ConnectError("the agent is shutting down", Code.Unavailable))));
  }

  /** Gives waiting jobs to idle workers, starting workers up to the pool's size. */
  private pump(): void {
    while (this.queue.length > 0 && !this.closed) {
      const thread = this.threads.find((t) => t.ready && t.running === undefined);
      if (thread === undefined) {
        // Busy or starting: start another while the pool has room (it pumps once ready).
        const wanted = Math.min(this.size, this.threads.filter((t) => t.running !== undefined).length + this.queue.length);
        while (this.threads.length < wanted) this.spawn();
        return;
      }
      this.send(thread, this.queue.shift()!);
    }
  }

  private send(thread: Thread, job: Job, withFiles = false): void {
    const serial = serialOf(job.text);
    const id = this.nextId++;
    const first = withFiles || !thread.holds.has(serial);
    const request: TextJobRequest = { id, serial, job: job.job, limits: this.limits, ...(first ? { files: job.text.files } : {}) };
    thread.holds.add(serial);
    const timer = thread.running?.timer ?? setTimeout(() => this.overrun(thread), this.timeoutMs);
    thread.running = { id, job, timer };
    thread.worker.postMessage(request);
  }

  private spawn(): Thread {
    const worker = new Worker(WORKER_ENTRY, {
      workerData: { module: WORKER_MODULE },
      resourceLimits: { maxOldGenerationSizeMb: this.memoryMb },
    });
    worker.unref(); // a job's timer keeps the process alive while one runs
    const thread: Thread = { worker, ready: false, holds: new Set() };
    this.threads.push(thread);
    worker.on("message", (reply: TextJobReply) => this.answered(thread, reply));
    worker.on("error", (err: Error & { code?: string }) => {
      const outOfMemory = err.code === "ERR_WORKER_OUT_OF_MEMORY";
      this.lost(
        thread,
        outOfMemory
          ? new ConnectError(`rendering the chat template and tokenising the prompt needed more than ${this.memoryMb} MiB; shorten the prompt or simplify the template`, Code.InvalidArgument)
          : new ConnectError(`the text worker failed: ${err.message}`, Code.Internal),
      );
    });
    worker.on("exit", () => this.lost(thread, new ConnectError("the text worker exited", Code.Internal)));
    return thread;
  }

  private answered(thread: Thread, reply: TextJobReply): void {
    if ("ready" in reply) {
      thread.ready = true;
      return this.pump();
    }
    const running = thread.running;
    if (running === undefined || running.id !== reply.id) return;
    if ("missing" in reply) return this.send(thread, running.job, true); // the worker let the model go: send it again
    clearTimeout(running.timer);
    thread.running = undefined;
    if ("error" in reply) running.job.reject(new ConnectError(reply.error.message, reply.error.code));
    else running.job.resolve({ ids: Array.from(reply.ids), text: reply.text });
    this.pump();
  }

  /** A job ran past its time: the caller's 400, and the worker (stuck in it) is replaced. */
  private overrun(thread: Thread): void {
    void this.stop(
      thread,
      new ConnectError(
        `rendering the chat template and tokenising the prompt took longer than ${this.timeoutMs} ms; shorten the prompt or simplify the template`,
        Code.InvalidArgument,
      ),
    );
  }

  /** The worker is gone (or going): its job fails with `err`; waiting jobs go to the others. */
  private lost(thread: Thread, err: ConnectError): void {
    const at = this.threads.indexOf(thread);
    if (at === -1) return;
    this.threads.splice(at, 1);
    const running = thread.running;
    thread.running = undefined;
    if (running !== undefined) {
      clearTimeout(running.timer);
      running.job.reject(err);
    }
    if (!thread.ready) {
      // It never started: starting another would fail alike, so the waiting jobs fail now.
      for (const job of this.queue.splice(0)) job.reject(new ConnectError(`a text worker could not start: ${err.rawMessage}`, Code.Internal));
      return;
    }
    this.pump();
  }

  private async stop(thread: Thread, err: ConnectError): Promise<void> {
    this.lost(thread, err);
    await thread.worker.terminate();
  }
}
