// Helpers both completion endpoints use: merging the streams of several prompts, usage totals,
// finish reason names, ids.
import { randomUUID } from "node:crypto";
import { CompletionFinishReason } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";
import { Channel } from "../scheduler/channel.js";
import type { ChoiceOutput } from "./backend.js";

export function finishReasonName(reason: CompletionFinishReason): string | null {
  switch (reason) {
    case CompletionFinishReason.STOP:
      return "stop";
    case CompletionFinishReason.LENGTH:
      return "length";
    case CompletionFinishReason.ABORT:
      return "abort";
    default:
      return null;
  }
}

/** A fresh completion id ("chatcmpl-…", "cmpl-…"). */
export function completionId(prefix: string): string {
  return `${prefix}-${randomUUID().replaceAll("-", "")}`;
}

export function unixSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** Usage over choices: prompt tokens once per prompt (choices of a prompt share it), completions summed. */
export class UsageTally {
  private readonly prompt = new Map<number, { tokens: number; cached: number }>();
  private completion = 0;

  /** `group` identifies the prompt the choice belongs to. */
  add(group: number, usage: ChoiceOutput["usage"]): void {
    if (usage === undefined) return;
    const p = this.prompt.get(group) ?? { tokens: 0, cached: 0 };
    p.tokens = Math.max(p.tokens, usage.promptTokens);
    p.cached = Math.max(p.cached, usage.cachedTokens);
    this.prompt.set(group, p);
    this.completion += usage.completionTokens;
  }

  toJSON(): OpenAIUsage {
    let prompt = 0;
    let cached = 0;
    for (const p of this.prompt.values()) {
      prompt += p.tokens;
      cached += p.cached;
    }
    return {
      prompt_tokens: prompt,
      completion_tokens: this.completion,
      total_tokens: prompt + this.completion,
      prompt_tokens_details: { cached_tokens: cached },
    };
  }
}

/**
 * One stream out of several (one per prompt), each choice index shifted by its stream's offset.
 * The first error ends the merged stream; ending it early stops every part.
 */
export function mergeChoices(parts: { stream: AsyncIterable<ChoiceOutput>; offset: number }[], controller: AbortController): AsyncIterable<ChoiceOutput> {
  if (parts.length === 1 && parts[0].offset === 0) return parts[0].stream;
  const channel = new Channel<ChoiceOutput>();
  let remaining = parts.length;
  for (const part of parts) {
    (async () => {
      for await (const out of part.stream) channel.push(part.offset === 0 ? out : { ...out, index: out.index + part.offset });
    })().then(
      () => {
        if (--remaining === 0) channel.close();
      },
      (err) => {
        channel.fail(err);
        controller.abort(err);
      },
    );
  }
  return channel;
}
