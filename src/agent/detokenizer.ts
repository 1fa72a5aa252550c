// Incremental detokenisation: turns a stream of token ids into text deltas without ever emitting a
// broken multi-byte character. The window of tokens is decoded twice (up to the last emitted
// token, and to the newest) and the difference is the new text; while the decoded text ends in
// U+FFFD (an incomplete UTF-8 sequence) nothing is emitted and the bytes wait for the next token.
// This is how vLLM and Hugging Face TGI do it, and it works for byte-level BPE and byte-fallback
// SentencePiece tokenizers alike (the window keeps the context SentencePiece needs for spaces).

/** The one thing the detokenizer needs from a tokenizer. */
export interface TokenDecoder {
  decode(ids: readonly number[], skipSpecialTokens: boolean): string;
}

const REPLACEMENT = "\uFFFD";
/** Prompt tokens kept as context, so the first output token decodes as it would inside the text. */
const CONTEXT_TOKENS = 5;

export class IncrementalDetokenizer {
  private readonly ids: number[];
  private prefixOffset = 0;
  private readOffset: number;

  constructor(
    private readonly decoder: TokenDecoder,
    promptIds: readonly number[] = [],
    private readonly skipSpecialTokens = false,
  ) {
    this.ids = promptIds.slice(-CONTEXT_TOKENS);
    this.readOffset = this.ids.length;
  }

  /** Adds one generated token; returns the text it completes ("" while a character is incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.decode(this.prefixOffset, this.readOffset);
    const full = this.decode(this.prefixOffset, this.ids.length);
    if (full.length <= prefix.length || full.endsWith(REPLACEMENT)) return "";
    return this.advance(prefix, full);
  }

  /** At the end of a sequence: whatever is still held back (an incomplete character becomes U+FFFD). */
  flush(): string {
    const prefix = this.decode(this.prefixOffset, this.readOffset);
    const full = this.decode(this.prefixOffset, this.ids.length);
    if (full.length <= prefix.length) return "";
    return this.advance(prefix, full);
  }

  private advance(prefix: string, full: string): string {
    // The window always starts at a character boundary, so `full` extends `prefix`; should a
    // tokenizer ever rewrite earlier text, emit only what is new at the end.
    const delta = full.startsWith(prefix) ? full.slice(prefix.length) : full.slice(commonPrefixLength(prefix, full));
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    // Keep the window short: drop tokens before the prefix start.
    if (this.prefixOffset > 64) {
      this.ids.splice(0, this.prefixOffset);
      this.readOffset -= this.prefixOffset;
      this.prefixOffset = 0;
    }
    return delta;
  }

  private decode(from: number, to: number): string {
    return from >= to ? "" : this.decoder.decode(this.ids.slice(from, to), this.skipSpecialTokens);
  }
}

function commonPrefixLength(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}
