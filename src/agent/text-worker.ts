// The worker thread of text-workers.ts: renders chat templates and tokenises prompts, so neither
// ever runs on the agent's event loop. It holds a few models' ModelText (sent once, by serial) and
// answers one job at a time; the pool bounds its time and memory.
import type { MessagePort } from "node:worker_threads";
import { type Code, ConnectError } from "@connectrpc/connect";
import { ModelText, promptTooLong, type ChatMessageLike, type ModelTextFiles, type TemplateLimits } from "./model-text.js";

/** A prompt to turn into token ids. */
export type TextJob =
  | { kind: "chat"; messages: ChatMessageLike[]; addGenerationPrompt: boolean; template?: string }
  | { kind: "text"; text: string; addSpecialTokens: boolean };

export interface TextJobRequest {
  id: number;
  /** Which model's text handling; `files` come along when the pool does not know the worker has it. */
  serial: number;
  files?: ModelTextFiles;
  job: TextJob;
  limits: TemplateLimits;
}

export type TextJobReply =
  /** Sent once, when the worker is ready for jobs. */
  | { ready: true }
  | { id: number; ids: Uint32Array; text?: string }
  | { id: number; error: { code: Code; message: string } }
  /** The worker no longer holds the model: send the files again. */
  | { id: number; missing: true };

/** Models a worker keeps (least recently used leaves first). */
const KEPT_MODELS = 8;

/** Answers the pool's jobs on `port` (the text-worker-entry.js thread calls it with its parentPort). */
export function serveTextJobs(port: MessagePort): void {
  const models = new Map<number, ModelText>();
  port.on("message", (request: TextJobRequest) => {
    let text = models.get(request.serial);
    if (text === undefined && request.files === undefined) return port.postMessage({ id: request.id, missing: true } satisfies TextJobReply);
    try {
      if (text === undefined) {
        text = new ModelText(request.files!);
        if (models.size >= KEPT_MODELS) models.delete(models.keys().next().value!);
      }
      models.delete(request.serial);
      models.set(request.serial, text);
      const reply = run(text, request.job, request.limits);
      port.postMessage({ id: request.id, ...reply } satisfies TextJobReply, [reply.ids.buffer as ArrayBuffer]);
    } catch (err) {
      const e = ConnectError.from(err);
      port.postMessage({ id: request.id, error: { code: e.code, message: e.rawMessage } } satisfies TextJobReply);
    }
  });
  port.postMessage({ ready: true } satisfies TextJobReply);
}

function run(text: ModelText, job: TextJob, limits: TemplateLimits): { ids: Uint32Array; text?: string } {
  if (job.kind === "chat") {
    const rendered = text.renderChat(job.messages, job.addGenerationPrompt, job.template, limits);
    if (Buffer.byteLength(rendered) > text.maxPromptBytes) throw promptTooLong(Buffer.byteLength(rendered), text);
    // The template already wrote the special tokens (BOS); encoding must not add them again.
    return { ids: Uint32Array.from(text.encode(rendered, false)), text: rendered };
  }
  return { ids: Uint32Array.from(text.encode(job.text, job.addSpecialTokens)) };
}

