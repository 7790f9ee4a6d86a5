// An HF tokenizer (tokenizer.json + tokenizer_config.json) for generation: ids, streaming text, chat template.

import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

export interface ChatMessage { role: string; content: string }

/** Turns generated ids into text piece by piece without cutting a UTF-8 character in two. */
export interface StreamDecoder {
  /** The text that this id completes ('' while the id only starts a character). */
  push(id: number): string;
  /** Whatever is still held back (e.g. a stray invalid byte at the end), decoded as is. */
  flush(): string;
}

export interface LoadedTokenizer {
  /** Ids of text; addSpecialTokens (default false) applies the post-processor (e.g. a BOS). */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): Int32Array;
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
  streamDecoder(opts?: { skipSpecialTokens?: boolean }): StreamDecoder;
  /** Ids that end generation: eos_token and the end-of-turn tokens of common chat formats present in the vocabulary. */
  readonly eosIds: number[];
  readonly bosId: number | null;
  readonly vocabSize: number;
  readonly hasChatTemplate: boolean;
  /** The chat template rendered to text (encode it with addSpecialTokens false: templates add their own BOS). */
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

/** End-of-turn tokens of well-known chat formats (ChatML, Llama 3, Phi, Gemma). */
const END_OF_TURN = ['<|im_end|>', '<|eot_id|>', '<|end|>', '<end_of_turn>', '<|endoftext|>'];

/** A held-back window longer than this is emitted anyway: no UTF-8 character needs more tokens. */
const MAX_HELD_TOKENS = 8;

function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

function chatTemplateOf(config: Record<string, unknown>): string | null {
  const t = config['chat_template'];
  if (typeof t === 'string') return t;
  // some configs hold a list of named templates; 'default' is the one apply_chat_template uses
  if (Array.isArray(t)) {
    const named = t as Array<{ name?: unknown; template?: unknown }>;
    const d = named.find((x) => x.name === 'default') ?? named[0];
    if (d && typeof d.template === 'string') return d.template;
  }
  return null;
}

export function loadTokenizer(tokenizerJson: unknown, tokenizerConfig: unknown = {}): LoadedTokenizer {
  if (!tokenizerJson || typeof tokenizerJson !== 'object') throw new Error('loadTokenizer: tokenizer.json must be a JSON object');
  const tj = tokenizerJson as Record<string, unknown>;
  if (!tj['model'] || typeof tj['model'] !== 'object') throw new Error('loadTokenizer: tokenizer.json has no "model" object');
  const config = (tokenizerConfig && typeof tokenizerConfig === 'object' ? tokenizerConfig : {}) as Record<string, unknown>;
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tj, config);
  } catch (e) {
    throw new Error(`loadTokenizer: @huggingface/tokenizers rejected tokenizer.json: ${(e as Error).message}`);
  }
  const idOf = (field: string): number | null => {
    const s = tokenString(config[field]);
    if (s === null) return null;
    const id = tok.token_to_id(s);
    if (id === undefined) throw new Error(`loadTokenizer: tokenizer_config.json ${field} "${s}" is not in the tokenizer's vocabulary`);
    return id;
  };
  const bosId = idOf('bos_token');
  const eosId = idOf('eos_token');
  const eosIds: number[] = eosId === null ? [] : [eosId];
  for (const s of END_OF_TURN) {
    const id = tok.token_to_id(s);
    if (id !== undefined && !eosIds.includes(id)) eosIds.push(id);
  }
  const vocab = tok.get_vocab(true);
  let vocabSize = 0;
  for (const id of vocab.values()) vocabSize = Math.max(vocabSize, id + 1);

  const templateText = chatTemplateOf(config);
  let template: Template | null = null;
  const specials: Record<string, string> = {};
  for (const f of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
    const s = tokenString(config[f]);
    if (s !== null) specials[f] = s;
  }

  const decode = (ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string => {
    if (ids.length === 0) return ''; // tokenizers.js refuses an empty list
    return tok.decode(Array.from(ids), { skip_special_tokens: opts.skipSpecialTokens ?? false });
  };

  return {
    bosId, eosIds, vocabSize,
    hasChatTemplate: templateText !== null,
    encode(text, opts = {}) {
      if (typeof text !== 'string') throw new Error(`encode: text must be a string, got ${typeof text}`);
      if (text.length === 0) return new Int32Array(0);
      return Int32Array.from(tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids);
    },
    decode,
    streamDecoder(opts = {}) {
      // vLLM-style incremental detokenisation: decode a short window that starts a little before
      // the new ids (so tokenizers whose pieces depend on their left neighbour, e.g. SentencePiece
      // spaces, come out right) and emit only what grew past the already-emitted part; hold back
      // while the tail is an incomplete character (decoded as U+FFFD).
      const ids: number[] = [];
      let prefix = 0; // window start
      let read = 0; // ids up to here are emitted
      const step = (force: boolean): string => {
        const before = decode(ids.slice(prefix, read), opts);
        const now = decode(ids.slice(prefix), opts);
        const held = ids.length - read;
        if (!force && now.endsWith('\uFFFD') && held < MAX_HELD_TOKENS) return '';
        if (now.length <= before.length && !force) return '';
        const out = now.startsWith(before) ? now.slice(before.length) : now.slice(Math.min(before.length, now.length));
        prefix = read;
        read = ids.length;
        return out;
      };
      return {
        push(id) {
          if (!Number.isInteger(id) || id < 0) throw new Error(`streamDecoder: id must be a non-negative integer, got ${id}`);
          ids.push(id);
          return step(false);
        },
        flush() {
          return read < ids.length ? step(true) : '';
        },
      };
    },
    applyChatTemplate(messages, opts = {}) {
      if (templateText === null) throw new Error('applyChatTemplate: tokenizer_config.json has no chat_template');
      for (const [i, m] of messages.entries()) {
        if (!m || typeof m.role !== 'string' || typeof m.content !== 'string') {
          throw new Error(`applyChatTemplate: message ${i} must be { role: string, content: string }`);
        }
      }
      template ??= new Template(templateText);
      return template.render({ ...specials, messages, add_generation_prompt: opts.addGenerationPrompt ?? false });
    },
  };
}
