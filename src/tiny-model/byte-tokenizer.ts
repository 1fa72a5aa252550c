// A byte-level BPE tokenizer with no merges, in Hugging Face tokenizer.json form: token id b is
// byte b (spelt with GPT-2's byte-to-unicode map), followed by Llama-3-style special tokens.

export const SPECIAL_TOKENS = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eot_id|>",
] as const;

/** Id of the first special token; ids below it are bytes. */
export const FIRST_SPECIAL_ID = 256;
export const BOS_ID = 256;
export const EOS_IDS = [257, 260];

export const CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}" +
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/** GPT-2's reversible map from bytes to printable unicode characters. */
function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const map: string[] = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++);
  }
  return map;
}

function addedToken(id: number, content: string): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

export function tokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  bytesToUnicode().forEach((ch, b) => (vocab[ch] = b));
  const bos = SPECIAL_TOKENS[0];
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((t, i) => addedToken(FIRST_SPECIAL_ID + i, t)),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [BOS_ID], tokens: [bos] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
}

export function tokenizerConfigJson(maxLength: number): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  SPECIAL_TOKENS.forEach((t, i) => (decoder[String(FIRST_SPECIAL_ID + i)] = addedToken(FIRST_SPECIAL_ID + i, t)));
  for (const entry of Object.values(decoder)) delete (entry as Record<string, unknown>).id;
  return {
    added_tokens_decoder: decoder,
    bos_token: "<|begin_of_text|>",
    eos_token: "<|eot_id|>",
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_input_names: ["input_ids", "attention_mask"],
    model_max_length: maxLength,
    tokenizer_class: "PreTrainedTokenizerFast",
  };
}
