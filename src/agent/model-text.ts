// Text in and out of a model: its chat template (tokenizer_config.json, rendered with
// @huggingface/jinja), its tokenizer (tokenizer.json, @huggingface/tokenizers) and its
// end-of-sequence ids (generation_config.json, then config.json, then the tokenizer's eos token).
import { Template } from "@huggingface/jinja";
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

  constructor(files: ModelTextFiles) {
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
  }

  get hasTokenizer(): boolean {
    return this.tokenizer !== undefined;
  }

  /** Renders chat messages with the model's template (or `template`, when given). */
  renderChat(messages: readonly ChatMessageLike[], addGenerationPrompt: boolean, template?: string): string {
    const source = template || this.chatTemplate;
    if (source === undefined) {
      throw new ConnectError("the model has no chat template (tokenizer_config.json chat_template); send a text prompt or a template", Code.FailedPrecondition);
    }
    let compiled = this.templates.get(source);
    if (compiled === undefined) {
      try {
        compiled = new Template(source);
      } catch (err) {
        throw new ConnectError(`the chat template does not parse: ${(err as Error).message}`, Code.InvalidArgument);
      }
      this.templates.set(source, compiled);
    }
    try {
      return compiled.render({
        ...this.specialTokens,
        messages: messages.map((m) => (m.name ? { role: m.role, content: m.content, name: m.name } : { role: m.role, content: m.content })),
        add_generation_prompt: addGenerationPrompt,
      });
    } catch (err) {
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
