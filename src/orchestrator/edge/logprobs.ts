// Token log probabilities in OpenAI's two shapes: chat ("content": [{token, logprob, bytes,
// top_logprobs}]) and legacy completions (tokens, token_logprobs, top_logprobs, text_offset).
import type { TokenOutput } from "../../gen/thaw/agent/v1/agent_pb.js";
import type { TokenLogprob } from "../../gen/thaw/engine/v1/engine_pb.js";

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
  top_logprobs: { token: string; logprob: number; bytes: number[] | null }[];
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: Record<string, number>[] | null;
  text_offset: number[];
}

/** The text of a token: what the agent wrote for it, else the sampled text, else vLLM's "token_id:N". */
function tokenText(lp: TokenLogprob | undefined, fallback: string, id: number): string {
  if (lp !== undefined && lp.text !== "") return lp.text;
  if (fallback !== "") return fallback;
  return `token_id:${id}`;
}

/** UTF-8 bytes of a token's text; "bytes:\xe2\x80" (a partial character) gives the raw bytes. */
function tokenBytes(text: string): number[] {
  if (text.startsWith("bytes:")) {
    const raw = [...text.slice(6).matchAll(/\\x([0-9a-fA-F]{2})/g)].map((m) => parseInt(m[1], 16));
    if (raw.length > 0) return raw;
  }
  return [...Buffer.from(text, "utf8")];
}

function finite(x: number): number {
  return Number.isFinite(x) ? x : -9999;
}

export function chatLogprobs(tokens: readonly TokenOutput[], top: number): ChatTokenLogprob[] {
  return tokens.map((t) => {
    const sampled = t.logprobs?.sampled;
    const token = tokenText(sampled, t.text, t.tokenId);
    return {
      token,
      logprob: finite(sampled?.logprob ?? 0),
      bytes: tokenBytes(token),
      top_logprobs: (t.logprobs?.top ?? []).slice(0, top).map((alt) => {
        const text = tokenText(alt, alt.tokenId === t.tokenId ? t.text : "", alt.tokenId);
        return { token: text, logprob: finite(alt.logprob), bytes: tokenBytes(text) };
      }),
    };
  });
}

/** Legacy completions logprobs; `offset` is the length of the choice's text before these tokens. */
export function completionLogprobs(tokens: readonly TokenOutput[], top: number, offset: number): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const t of tokens) {
    const sampled = t.logprobs?.sampled;
    const token = tokenText(sampled, t.text, t.tokenId);
    out.tokens.push(token);
    out.token_logprobs.push(sampled === undefined ? null : finite(sampled.logprob));
    const alternatives: Record<string, number> = {};
    for (const alt of (t.logprobs?.top ?? []).slice(0, top)) {
      alternatives[tokenText(alt, alt.tokenId === t.tokenId ? t.text : "", alt.tokenId)] = finite(alt.logprob);
    }
    if (top > 0 && sampled !== undefined && !(token in alternatives)) alternatives[token] = finite(sampled.logprob);
    out.top_logprobs!.push(alternatives);
    out.text_offset.push(at);
    at += t.text.length;
  }
  return out;
}

/** Appends one piece of completions logprobs to another (non-streaming responses). */
export function appendCompletionLogprobs(into: CompletionLogprobs, more: CompletionLogprobs): void {
  into.tokens.push(...more.tokens);
  into.token_logprobs.push(...more.token_logprobs);
  into.top_logprobs!.push(...(more.top_logprobs ?? []));
  into.text_offset.push(...more.text_offset);
}
