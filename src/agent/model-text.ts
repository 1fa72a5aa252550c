// Text in and out of a model: its chat template (tokenizer_config.json, rendered with
// @huggingface/jinja), its tokenizer (tokenizer.json, @huggingface/tokenizers) and its
// end-of-sequence ids (generation_config.json, then config.json, then the tokenizer's eos token).
//
// A template, even one a request brings, runs bounded: a step budget, range() no longer than the
// budget, output no longer than the prompt may be. The agent renders and tokenises in worker
// threads (text-workers.ts), which add a time and a memory limit; what runs here is the same code.
import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { Code, ConnectError } from "@connectrpc/connect";
import type { TokenDecoder } from "./detokenizer.js";

/** The side files a model's text handling reads (absent ones are undefined). */
export interface ModelTextFiles {
  tokenizerJson?: Uint8Array;
  tokenizerConfigJson?: Uint8Array;
  generationConfigJson?: Uint8Array;
  configJson?: Uint8Array;
}

export interface ChatMessageLike {
  role: string;
  content: string;
  name?: string;
}

/** Bounds of one template rendering. */
export interface TemplateLimits {
  /** Expressions and statements evaluated (a 100-message chat takes about 1,500). */
  maxSteps: number;
  /** Characters of output, and of any one value on the way. */
  maxOutputChars: number;
}

export const DEFAULT_TEMPLATE_LIMITS: TemplateLimits = { maxSteps: 200_000, maxOutputChars: 64 << 20 };

/** Longest chat template a request may bring, bytes. */
export const MAX_TEMPLATE_BYTES = 256 << 10;

/** Context length assumed for a model whose config.json does not say (tokens). */
const UNKNOWN_CONTEXT_TOKENS = 1 << 20;

/** Compiled templates kept per model (a request may bring its own; the cache must not grow with them). */
const TEMPLATE_CACHE = 16;

type Json = Record<string, unknown>;

function parse(bytes: Uint8Array | undefined, name: string): Json | undefined {
  if (bytes === undefined) return undefined;
  try {
    const value: unknown = JSON.parse(Buffer.from(bytes).toString("utf8"));
    return typeof value === "object" && value !== null ? (value as Json) : undefined;
  } catch (err) {
    throw new ConnectError(`${name} is not valid JSON: ${(err as Error).message}`, Code.FailedPrecondition);
  }
}

/** A special token as tokenizer_config.json spells it: a string or an AddedToken object. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && typeof (value as Json).content === "string") return (value as Json).content as string;
  return undefined;
}

function ids(value: unknown): number[] {
  if (typeof value === "number" && Number.isInteger(value) && value >= 0) return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0);
  return [];
}

export class ModelText implements TokenDecoder {
  /** End-of-sequence ids for SamplingParams.eos_token_ids. */
  readonly eosTokenIds: number[];
  readonly bosToken?: string;
  readonly eosToken?: string;
  private readonly tokenizer?: Tokenizer;
  private readonly chatTemplate?: string;
  private readonly specialTokens: Record<string, string> = {};
  private readonly templates = new Map<string, Template>();
  /** Byte-level BPE: token characters stand for bytes (GPT-2's map). */
  private readonly byteLevel: boolean;
  private readonly tokenTexts = new Map<number, string>();
  /** Tokens the model takes at most (config.json max_position_embeddings). */
  readonly contextTokens: number;
  /**
   * Bytes of text that can never fit the context: no token stands for more bytes than the longest
   * one in the vocabulary, so a prompt longer than context × that (× 2, for normalizers) is refused
   * before it is tokenised. Infinity without a tokenizer.
   */
  readonly maxPromptBytes: number;

  constructor(readonly files: ModelTextFiles) {
    const tokenizerJson = parse(files.tokenizerJson, "tokenizer.json");
    const tokenizerConfig = parse(files.tokenizerConfigJson, "tokenizer_config.json") ?? {};
    const generationConfig = parse(files.generationConfigJson, "generation_config.json") ?? {};
    const config = parse(files.configJson, "config.json") ?? {};
    if (tokenizerJson !== undefined) this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    this.byteLevel = usesByteLevel(tokenizerJson?.decoder);
    for (const [key, value] of Object.entries(tokenizerConfig)) {
      const text = key.endsWith("_token") ? tokenText(value) : undefined;
      if (text !== undefined) this.specialTokens[key] = text;
    }
    this.bosToken = this.specialTokens.bos_token;
    this.eosToken = this.specialTokens.eos_token;
    this.chatTemplate = pickTemplate(tokenizerConfig.chat_template, "default");
    let eos = ids(generationConfig.eos_token_id);
    if (eos.length === 0) eos = ids(config.eos_token_id);
    if (eos.length === 0 && this.eosToken !== undefined && this.tokenizer !== undefined) {
      const id = this.tokenizer.token_to_id(this.eosToken);
      if (id !== undefined) eos = [id];
    }
    this.eosTokenIds = [...new Set(eos)];
    const positions = config.max_position_embeddings;
    this.contextTokens = typeof positions === "number" && Number.isInteger(positions) && positions > 0 ? positions : UNKNOWN_CONTEXT_TOKENS;
    this.maxPromptBytes = tokenizerJson === undefined ? Infinity : 2 * this.contextTokens * longestTokenBytes(tokenizerJson);
  }

  get hasTokenizer(): boolean {
    return this.tokenizer !== undefined;
  }

  /** Renders chat messages with the model's template (or `template`, when given), within `limits`. */
  renderChat(messages: readonly ChatMessageLike[], addGenerationPrompt: boolean, template?: string, limits: TemplateLimits = DEFAULT_TEMPLATE_LIMITS): string {
    const source = template || this.chatTemplate;
    if (source === undefined) {
      throw new ConnectError("the model has no chat template (tokenizer_config.json chat_template); send a text prompt or a template", Code.FailedPrecondition);
    }
    if (template && Buffer.byteLength(template) > MAX_TEMPLATE_BYTES) {
      throw new ConnectError(`the chat template is longer than ${MAX_TEMPLATE_BYTES} bytes`, Code.InvalidArgument);
    }
    let compiled = this.templates.get(source);
    if (compiled === undefined) {
      try {
        compiled = new Template(source);
      } catch (err) {
        throw new ConnectError(`the chat template does not parse: ${(err as Error).message}`, Code.InvalidArgument);
      }
      if (this.templates.size >= TEMPLATE_CACHE) this.templates.delete(this.templates.keys().next().value!);
      this.templates.set(source, compiled);
    }
    const context = {
      ...this.specialTokens,
      messages: messages.map((m) => (m.name ? { role: m.role, content: m.content, name: m.name } : { role: m.role, content: m.content })),
      add_generation_prompt: addGenerationPrompt,
    };
    try {
      return renderBounded(compiled, context, limits);
    } catch (err) {
      if (err instanceof TemplateLimitError) throw new ConnectError(`the chat template ${err.message}`, Code.InvalidArgument);
      throw new ConnectError(`the chat template failed: ${(err as Error).message}`, Code.InvalidArgument);
    }
  }

  /** Token ids of `text`; special tokens (BOS) added for plain prompts, not after a chat template. */
  encode(text: string, addSpecialTokens: boolean): number[] {
    return this.require().encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(tokenIds: readonly number[], skipSpecialTokens: boolean): string {
    return this.require().decode(tokenIds as number[], { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  /**
   * One token as text, for logprobs: its decoded text, or, when the token is not valid UTF-8 on
   * its own (part of a multi-byte character), its bytes written as vLLM does: "bytes:\\xe2\\x80".
   */
  tokenText(id: number): string {
    const known = this.tokenTexts.get(id);
    if (known !== undefined) return known;
    if (this.tokenizer === undefined) return "";
    let text: string = this.tokenizer.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    if (text.includes(REPLACEMENT)) {
      const bytes = this.tokenBytes(id);
      if (bytes !== undefined) text = "bytes:" + [...bytes].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("");
    }
    this.tokenTexts.set(id, text);
    return text;
  }

  /** The raw bytes a token stands for, where the vocabulary says (byte-level or byte-fallback tokens). */
  private tokenBytes(id: number): Uint8Array | undefined {
    const token = this.tokenizer?.id_to_token(id);
    if (token === undefined) return undefined;
    const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
    if (fallback !== null) return Uint8Array.of(parseInt(fallback[1], 16));
    if (!this.byteLevel) return undefined;
    const out: number[] = [];
    for (const ch of token) {
      const b = UNICODE_TO_BYTE.get(ch);
      if (b === undefined) return undefined;
      out.push(b);
    }
    return Uint8Array.from(out);
  }

  private require(): Tokenizer {
    if (this.tokenizer === undefined) {
      throw new ConnectError("the model has no tokenizer.json: send token ids", Code.FailedPrecondition);
    }
    return this.tokenizer;
  }
}

const REPLACEMENT = "\uFFFD";

/** INVALID_ARGUMENT naming the context (the edge makes it context_length_exceeded): `bytes` of text can never fit. */
export function promptTooLong(bytes: number, text: ModelText): ConnectError {
  return new ConnectError(
    `the prompt is ${bytes} bytes, more than this model's maximum context length of ${text.contextTokens} tokens can hold ` +
      `(at most ${text.maxPromptBytes} bytes of text); shorten it`,
    Code.InvalidArgument,
  );
}

/** A template went past one of its limits. */
class TemplateLimitError extends Error {}

type Evaluate = (this: unknown, statement: unknown, environment: unknown) => { type: string; value: unknown };

/**
 * Renders with a step budget, a cap on every value's length and a bounded range(). The
 * interpreter's evaluate (and the globals' range) are replaced for this one synchronous render
 * and restored after it, so nothing else sees them.
 */
function renderBounded(template: Template, context: Record<string, unknown>, limits: TemplateLimits): string {
  const proto = Interpreter.prototype as unknown as { evaluate: Evaluate };
  const env = Environment.prototype as unknown as { set: (name: string, value: unknown) => unknown };
  const original = proto.evaluate;
  const originalSet = env.set;
  let steps = 0;
  proto.evaluate = function (statement, environment) {
    if (++steps > limits.maxSteps) throw new TemplateLimitError(`ran more than ${limits.maxSteps} steps`);
    const value = original.call(this, statement, environment);
    if (typeof value?.value === "string" && value.value.length > limits.maxOutputChars) {
      throw new TemplateLimitError(`made more than ${limits.maxOutputChars} characters`);
    }
    return value;
  };
  // range() builds its whole list at once: no longer than the step budget could walk.
  const range = (start: number, stop?: number, step = 1): number[] => {
    const [from, to] = stop === undefined ? [0, start] : [start, stop];
    if (step === 0) throw new Error("range() step must not be zero");
    const length = Math.max(0, Math.ceil((to - from) / step));
    if (!Number.isFinite(length) || length > limits.maxSteps) throw new TemplateLimitError(`asked for a range of ${length} numbers (at most ${limits.maxSteps})`);
    return Array.from({ length }, (_, i) => from + i * step);
  };
  env.set = function (name, value) {
    return originalSet.call(this, name, name === "range" ? range : value); // the globals' range
  };
  try {
    const out = template.render(context);
    if (out.length > limits.maxOutputChars) throw new TemplateLimitError(`made more than ${limits.maxOutputChars} characters`);
    return out;
  } finally {
    proto.evaluate = original;
    env.set = originalSet;
  }
}

/** UTF-8 bytes of the longest token of a tokenizer.json (vocabulary and added tokens); 64 when it cannot tell. */
function longestTokenBytes(tokenizer: Json): number {
  let longest = 1;
  const consider = (token: unknown) => {
    if (typeof token === "string") longest = Math.max(longest, Buffer.byteLength(token));
  };
  const model = tokenizer.model as Json | undefined;
  const vocab = model?.vocab;
  if (Array.isArray(vocab)) for (const entry of vocab) consider(Array.isArray(entry) ? entry[0] : entry); // Unigram: [piece, score]
  else if (typeof vocab === "object" && vocab !== null) for (const token of Object.keys(vocab)) consider(token);
  else longest = 64;
  if (Array.isArray(tokenizer.added_tokens)) for (const t of tokenizer.added_tokens) consider((t as Json | null)?.content);
  return longest;
}

/** GPT-2's reversible map from printable characters back to bytes (byte-level BPE vocabularies). */
const UNICODE_TO_BYTE: Map<string, number> = (() => {
  const printable = new Set<number>();
  for (let b = 33; b <= 126; b++) printable.add(b);
  for (let b = 161; b <= 172; b++) printable.add(b);
  for (let b = 174; b <= 255; b++) printable.add(b);
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) map.set(String.fromCodePoint(printable.has(b) ? b : 256 + extra++), b);
  return map;
})();

/** Whether a tokenizer.json decoder (or a Sequence of them) is ByteLevel. */
function usesByteLevel(decoder: unknown): boolean {
  if (typeof decoder !== "object" || decoder === null) return false;
  const d = decoder as Json;
  if (d.type === "ByteLevel") return true;
  return d.type === "Sequence" && Array.isArray(d.decoders) && d.decoders.some(usesByteLevel);
}

/** tokenizer_config.json's chat_template: a string, or a list of named templates. */
function pickTemplate(value: unknown, name: string): string | undefined {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => typeof t === "object" && t !== null && (t as Json).name === name) as Json | undefined;
    const first = named ?? (value[0] as Json | undefined);
    return typeof first?.template === "string" ? first.template : undefined;
  }
  return undefined;
}
