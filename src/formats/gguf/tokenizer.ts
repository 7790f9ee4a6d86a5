// Byte-level BPE tokenizers between HF tokenizer.json / tokenizer_config.json and llama.cpp's
// tokenizer.ggml.* metadata (model "gpt2": tokens, token types, merges, special ids, chat template).
// SentencePiece ("llama") vocabularies are not converted yet: their HF form needs merges that GGUF
// does not store.

import { GGUFValueType } from '@huggingface/gguf';
import type { GGUFMetaEntry } from './read.js';
import type { MetaReader } from './arch.js';

/** llama.cpp's token types (llama_token_type). */
const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

// The split regex of Qwen2's tokenizer.json, for GGUFs whose tokenizer.ggml.pre is 'qwen2'.
const QWEN2_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function tokenId(tok: unknown, byContent: Map<string, number>): number | null {
  const content = typeof tok === 'string' ? tok : isObj(tok) && typeof tok['content'] === 'string' ? tok['content'] : null;
  return content === null ? null : byContent.get(content) ?? null;
}

/**
 * tokenizer.ggml.* entries for a byte-level BPE tokenizer.json; vocabSize pads the token list
 * (llama.cpp's converter names the gaps [PADn]). Throws naming the field for other tokenizers.
 */
export function tokenizerToMetadata(json: object, config: object | null, vocabSize: number): Array<[string, GGUFMetaEntry]> {
  const j = json as Obj;
  const model = j['model'];
  if (!isObj(model) || model['type'] !== 'BPE' || !isObj(model['vocab'])) {
    throw new Error(`tokenizer.json: model.type ${JSON.stringify(isObj(model) ? model['type'] : model)} cannot be written to GGUF (byte-level BPE only)`);
  }
  const byteLevel = [j['pre_tokenizer'], j['decoder']].some((p) => isObj(p) && (p['type'] === 'ByteLevel' || (Array.isArray(p['pretokenizers']) && p['pretokenizers'].some((q) => isObj(q) && q['type'] === 'ByteLevel'))));
  if (!byteLevel) throw new Error('tokenizer.json: not a byte-level BPE (no ByteLevel pre_tokenizer or decoder), which GGUF model "gpt2" requires');
  const byContent = new Map<string, number>();
  for (const [tok, id] of Object.entries(model['vocab'] as Obj)) if (typeof id === 'number') byContent.set(tok, id);
  const added = new Map<number, { content: string; special: boolean }>();
  for (const t of (Array.isArray(j['added_tokens']) ? j['added_tokens'] : []) as unknown[]) {
    if (isObj(t) && typeof t['id'] === 'number' && typeof t['content'] === 'string') {
      added.set(t['id'], { content: t['content'], special: t['special'] === true });
      byContent.set(t['content'], t['id']);
    }
  }
  let n = vocabSize;
  for (const id of byContent.values()) n = Math.max(n, id + 1);
  const tokens: string[] = new Array<string>(n);
  const types: number[] = new Array<number>(n).fill(TOKEN_TYPE.unused);
  for (let i = 0; i < n; i++) tokens[i] = `[PAD${i}]`;
  for (const [tok, id] of byContent) {
    tokens[id] = tok;
    const a = added.get(id);
    types[id] = a ? (a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined) : TOKEN_TYPE.normal;
  }
  const merges = ((Array.isArray(model['merges']) ? model['merges'] : []) as unknown[]).map((m, i) => {
    if (typeof m === 'string') return m;
    if (Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === 'string')) return `${m[0]} ${m[1]}`;
    throw new Error(`tokenizer.json: model.merges[${i}] is neither "a b" nor ["a", "b"]`);
  });
  const out: Array<[string, GGUFMetaEntry]> = [
    ['tokenizer.ggml.model', { type: GGUFValueType.STRING, value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: GGUFValueType.STRING, value: JSON.stringify(j['pre_tokenizer'] ?? null).includes(JSON.stringify(QWEN2_SPLIT)) ? 'qwen2' : 'default' }],
    ['tokenizer.ggml.tokens', { type: GGUFValueType.ARRAY, subType: GGUFValueType.STRING, value: tokens }],
    ['tokenizer.ggml.token_type', { type: GGUFValueType.ARRAY, subType: GGUFValueType.INT32, value: types }],
    ['tokenizer.ggml.merges', { type: GGUFValueType.ARRAY, subType: GGUFValueType.STRING, value: merges }],
  ];
  const c = (config ?? {}) as Obj;
  for (const [field, key] of [['bos_token', 'bos_token_id'], ['eos_token', 'eos_token_id'], ['pad_token', 'padding_token_id'], ['unk_token', 'unknown_token_id']] as const) {
    const id = tokenId(c[field], byContent);
    if (id !== null) out.push([`tokenizer.ggml.${key}`, { type: GGUFValueType.UINT32, value: id }]);
  }
  out.push(['tokenizer.ggml.add_bos_token', { type: GGUFValueType.BOOL, value: c['add_bos_token'] === true }]);
  out.push(['tokenizer.ggml.add_eos_token', { type: GGUFValueType.BOOL, value: c['add_eos_token'] === true }]);
  if (typeof c['chat_template'] === 'string') out.push(['tokenizer.chat_template', { type: GGUFValueType.STRING, value: c['chat_template'] }]);
  return out;
}

function preTokenizer(pre: string, hasMerges: boolean): Obj {
  const byteLevel = (useRegex: boolean): Obj => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: useRegex });
  if (pre === 'qwen2') {
    return { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: QWEN2_SPLIT }, behavior: 'Isolated', invert: false }, byteLevel(false)] };
  }
  // 'default' and 'gpt2' split words with GPT-2's regex, which ByteLevel's use_regex is.
  if (pre === 'default' || pre === 'gpt2' || !hasMerges) return byteLevel(hasMerges);
  throw new Error(`tokenizer.ggml.pre = '${pre}' is not supported for tokenizer.json (default, gpt2, qwen2)`);
}

/**
 * tokenizer.json and tokenizer_config.json from GGUF metadata, or null with the reason when the
 * file has no tokenizer or one this module does not convert.
 */
export function metadataToTokenizer(m: MetaReader & { array(key: string, elem: 'string' | 'number'): Array<string | number> }):
  { json: Obj; config: Obj } | { json: null; config: null; reason: string } {
  if (!m.has('tokenizer.ggml.model')) return { json: null, config: null, reason: 'the file has no tokenizer.ggml.model' };
  const model = m.str('tokenizer.ggml.model');
  if (model !== 'gpt2') return { json: null, config: null, reason: `tokenizer.ggml.model '${model}' is not converted to tokenizer.json (gpt2 only)` };
  const tokens = m.array('tokenizer.ggml.tokens', 'string') as string[];
  const types = m.has('tokenizer.ggml.token_type') ? (m.array('tokenizer.ggml.token_type', 'number') as number[]) : [];
  const merges = m.has('tokenizer.ggml.merges') ? (m.array('tokenizer.ggml.merges', 'string') as string[]) : [];
  const pre = m.has('tokenizer.ggml.pre') ? m.str('tokenizer.ggml.pre') : 'default';
  const vocab: Obj = {};
  const addedTokens: Obj[] = [];
  const decoder: Obj = {};
  tokens.forEach((t, id) => {
    const type = types[id] ?? TOKEN_TYPE.normal;
    if (type === TOKEN_TYPE.control || type === TOKEN_TYPE.userDefined) {
      const entry = { content: t, single_word: false, lstrip: false, rstrip: false, normalized: type !== TOKEN_TYPE.control, special: type === TOKEN_TYPE.control };
      addedTokens.push({ id, ...entry });
      decoder[String(id)] = entry;
    } else if (type !== TOKEN_TYPE.unused) {
      vocab[t] = id;
    }
  });
  const json: Obj = {
    version: '1.0', truncation: null, padding: null, added_tokens: addedTokens, normalizer: null,
    pre_tokenizer: preTokenizer(pre, merges.length > 0),
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false,
      byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  };
  const special = (key: string): string | null => {
    if (!m.has(key)) return null;
    const id = m.int(key);
    if (id >= tokens.length) throw new Error(`GGUF metadata ${key} = ${id} is not a token id (vocabulary of ${tokens.length})`);
    return tokens[id]!;
  };
  const config: Obj = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    added_tokens_decoder: decoder,
    bos_token: special('tokenizer.ggml.bos_token_id'),
    eos_token: special('tokenizer.ggml.eos_token_id'),
    pad_token: special('tokenizer.ggml.padding_token_id'),
    unk_token: special('tokenizer.ggml.unknown_token_id'),
    add_bos_token: m.has('tokenizer.ggml.add_bos_token') ? m.bool('tokenizer.ggml.add_bos_token') : false,
    add_eos_token: m.has('tokenizer.ggml.add_eos_token') ? m.bool('tokenizer.ggml.add_eos_token') : false,
    clean_up_tokenization_spaces: false,
  };
  if (m.has('tokenizer.chat_template')) config['chat_template'] = m.str('tokenizer.chat_template');
  return { json, config };
}
