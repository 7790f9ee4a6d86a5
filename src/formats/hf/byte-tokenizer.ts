// A byte-level HF tokenizer (tokenizer.json + tokenizer_config.json): id b is byte b, special tokens follow at fixed ids.

/**
 * Why GPT-2's ByteLevel scheme: it is the byte-exact tokenizer every HF loader, tokenizers.js
 * and llama.cpp's converter (tokenizer model "gpt2") already understand. Each byte is shown as
 * one printable code point (the GPT-2 byte-to-unicode table), the BPE model has those 256
 * symbols as its vocabulary and no merges, so every byte is one token and id = byte value.
 * This keeps the ids of the existing byte-level LM (vocabulary 256) unchanged.
 */

/** Special tokens with their fixed ids, directly after the 256 byte ids. */
export const BYTE_SPECIAL_TOKENS: ReadonlyArray<{ id: number; content: string }> = [
  { id: 256, content: '<|bos|>' },
  { id: 257, content: '<|eos|>' },
  { id: 258, content: '<|pad|>' },
  { id: 259, content: '<|im_start|>' },
  { id: 260, content: '<|im_end|>' },
];
export const BYTE_BOS_ID = 256;
export const BYTE_EOS_ID = 257;
export const BYTE_PAD_ID = 258;
export const BYTE_IM_START_ID = 259;
export const BYTE_IM_END_ID = 260;
/** Ids in use: 256 bytes + the special tokens. A model's vocabulary must be at least this. */
export const BYTE_TOKENIZER_VOCAB_SIZE = 256 + BYTE_SPECIAL_TOKENS.length;

/** ChatML-style template: one `<|im_start|>role\ncontent<|im_end|>\n` block per message. */
export const BYTE_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * GPT-2's table: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100 upward
 * in byte order. Computed, so it cannot drift from the rule.
 */
export function bytesToUnicode(): string[] {
  const keep = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep(b) ? b : next++);
  return out;
}

/** Options of the byte-level tokenizer files. */
export interface ByteTokenizerOptions {
  /** The special tokens at ids 256.. (default true); false: the 256 bytes alone, for a model whose vocabulary is 256 (the byte LM). */
  specials?: boolean;
}

/** A valid HF tokenizer.json (loadable by @huggingface/tokenizers and the Rust `tokenizers`). */
export function byteLevelTokenizerJson(opts: ByteTokenizerOptions = {}): Record<string, unknown> {
  const specials = opts.specials ?? true;
  const symbols = bytesToUnicode();
  const vocab: Record<string, number> = {};
  symbols.forEach((s, b) => { vocab[s] = b; });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: (specials ? BYTE_SPECIAL_TOKENS : []).map((t) => ({
      id: t.id, content: t.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: null,
    // use_regex false: no word splitting, so bytes are never regrouped (there are no merges anyway).
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [],
    },
  };
}

/** tokenizer_config.json to go with it: bos/eos/pad, no automatic BOS, the chat template (bytes only: none of these). */
export function byteLevelTokenizerConfig(opts: ByteTokenizerOptions = {}): Record<string, unknown> {
  if (!(opts.specials ?? true)) {
    return {
      tokenizer_class: 'PreTrainedTokenizerFast', added_tokens_decoder: {}, bos_token: null, eos_token: null, pad_token: null, unk_token: null,
      add_bos_token: false, add_eos_token: false, clean_up_tokenization_spaces: false, model_max_length: 1_000_000,
    };
  }
  const decoder: Record<string, unknown> = {};
  for (const t of BYTE_SPECIAL_TOKENS) {
    decoder[String(t.id)] = { content: t.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  }
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    added_tokens_decoder: decoder,
    bos_token: '<|bos|>',
    eos_token: '<|eos|>',
    pad_token: '<|pad|>',
    unk_token: null,
    add_bos_token: false,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: 1_000_000,
    chat_template: BYTE_CHAT_TEMPLATE,
  };
}
