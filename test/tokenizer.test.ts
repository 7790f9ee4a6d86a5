// HF tokenizers: the byte-level tokenizer.json round-trips any UTF-8 text through its bytes, the
// streaming decoder never cuts a character, special tokens and the chat template, bad input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/index.js';
import {
  BYTE_BOS_ID, BYTE_EOS_ID, BYTE_IM_END_ID, BYTE_IM_START_ID, BYTE_TOKENIZER_VOCAB_SIZE,
  byteLevelTokenizerConfig, byteLevelTokenizerJson, bytesToUnicode,
} from '../src/formats/hf/byte-tokenizer.js';
import { loadTokenizer } from '../src/formats/hf/tokenizer.js';

const tok = loadTokenizer(byteLevelTokenizerJson(), byteLevelTokenizerConfig());

/** Random text over ASCII, controls, Latin-1, CJK, emoji (with ZWJ and skin tones): valid UTF-16 only. */
function randomText(rng: Rng, n: number): string {
  const pools: Array<[number, number]> = [[0x00, 0x7f], [0xa0, 0xff], [0x370, 0x3ff], [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0x1f300, 0x1faff], [0x200d, 0x200d], [0x1f3fb, 0x1f3ff], [0x10000, 0x10ffff]];
  let s = '';
  for (let i = 0; i < n; i++) {
    const [lo, hi] = pools[rng.int(pools.length)]!;
    let cp = lo + rng.int(hi - lo + 1);
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41; // no lone surrogates (not valid UTF-8)
    s += String.fromCodePoint(cp);
  }
  return s;
}

test('byte table: 256 distinct printable symbols, printable ASCII maps to itself', () => {
  const t = bytesToUnicode();
  assert.equal(new Set(t).size, 256);
  assert.equal(t[0x41], 'A');
  assert.equal(t[0x20], '\u0120'); // GPT-2's Ġ for space
  for (const s of t) assert.equal([...s].length, 1);
});

test('byte tokenizer: ids are the UTF-8 bytes and decode gives the text back (emoji, CJK, controls, random)', () => {
  const fixed = ['', 'Hello World', '  two  spaces\n\ttab\r\n', 'héllo 世界 🤖👍🏽 👨‍👩‍👧', '\u0000\u0001\u007f', 'Ġ Ā ĉ', '한국어 العربية हिन्दी'];
  const rng = new Rng(7);
  const random = Array.from({ length: 40 }, () => randomText(rng, 1 + rng.int(60)));
  for (const s of [...fixed, ...random]) {
    const ids = tok.encode(s);
    assert.ok(ids instanceof Int32Array);
    assert.deepEqual([...ids], [...Buffer.from(s, 'utf8')], `ids of ${JSON.stringify(s)}`);
    assert.equal(tok.decode(ids), s, `round trip of ${JSON.stringify(s)}`);
  }
});

test('byte tokenizer: special ids, eos/bos, vocabulary size, special tokens in text', () => {
  assert.equal(tok.bosId, BYTE_BOS_ID);
  assert.deepEqual(tok.eosIds, [BYTE_EOS_ID, BYTE_IM_END_ID]);
  assert.equal(tok.vocabSize, BYTE_TOKENIZER_VOCAB_SIZE);
  assert.deepEqual([...tok.encode('<|bos|>a<|im_end|>')], [BYTE_BOS_ID, 0x61, BYTE_IM_END_ID]);
  assert.equal(tok.decode([BYTE_BOS_ID, 0x61, BYTE_EOS_ID]), '<|bos|>a<|eos|>');
  assert.equal(tok.decode([BYTE_BOS_ID, 0x61, BYTE_EOS_ID], { skipSpecialTokens: true }), 'a');
  assert.equal(tok.decode([]), '');
});

test('stream decoder: pieces join to the full text and never hold a broken character', () => {
  const rng = new Rng(11);
  for (let trial = 0; trial < 20; trial++) {
    const s = randomText(rng, 1 + rng.int(30));
    const ids = tok.encode(s);
    const sd = tok.streamDecoder();
    let out = '';
    for (const id of ids) {
      const piece = sd.push(id);
      assert.ok(!piece.includes('\uFFFD'), `piece ${JSON.stringify(piece)} of ${JSON.stringify(s)} holds a replacement character`);
      out += piece;
      // what has come out so far is a prefix of the text, cut at a character boundary
      assert.ok(s.startsWith(out));
    }
    out += sd.flush();
    assert.equal(out, s);
  }
  // a 4-byte emoji comes out only with its last byte
  const sd = tok.streamDecoder();
  const bytes = [...Buffer.from('🤖', 'utf8')];
  assert.deepEqual(bytes.map((b) => sd.push(b)), ['', '', '', '🤖']);
  // a stray invalid byte at the end is emitted by flush, not lost
  const bad = tok.streamDecoder();
  assert.equal(bad.push(0x61), 'a');
  assert.equal(bad.push(0xf0), '');
  assert.equal(bad.flush(), '\uFFFD');
  // special tokens in the stream
  const sp = tok.streamDecoder({ skipSpecialTokens: true });
  assert.equal([0x68, BYTE_EOS_ID, 0x69].map((id) => sp.push(id)).join(''), 'hi');
});

test('chat template: ChatML blocks, generation prompt, BOS from the template', () => {
  const text = tok.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi 👋' }], { addGenerationPrompt: true });
  assert.equal(text, '<|bos|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 👋<|im_end|>\n<|im_start|>assistant\n');
  const ids = tok.encode(text);
  assert.equal(ids[0], BYTE_BOS_ID);
  assert.equal(ids[1], BYTE_IM_START_ID);
  assert.equal(tok.decode(ids), text);
  assert.ok(!tok.applyChatTemplate([{ role: 'user', content: 'x' }]).endsWith('assistant\n'));
  assert.throws(() => tok.applyChatTemplate([{ role: 'user' } as never]), /message 0 must be/);
  const noTemplate = loadTokenizer(byteLevelTokenizerJson(), { eos_token: '<|eos|>' });
  assert.equal(noTemplate.hasChatTemplate, false);
  assert.equal(noTemplate.bosId, null);
  assert.throws(() => noTemplate.applyChatTemplate([]), /no chat_template/);
});

test('loadTokenizer: bad files are clear errors', () => {
  assert.throws(() => loadTokenizer(null, {}), /tokenizer.json must be a JSON object/);
  assert.throws(() => loadTokenizer({ version: '1.0' }, {}), /no "model" object/);
  assert.throws(() => loadTokenizer(byteLevelTokenizerJson(), { eos_token: '<|nope|>' }), /eos_token "<\|nope\|>" is not in the tokenizer's vocabulary/);
  assert.throws(() => tok.streamDecoder().push(-1), /non-negative integer/);
});

test('stream decoder on a SentencePiece-style (Metaspace) vocabulary keeps the spaces between pieces', () => {
  const sp = loadTokenizer({
    version: '1.0', added_tokens: [{ id: 4, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null, pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    post_processor: null, decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { type: 'WordLevel', vocab: { '▁Hello': 0, '▁world': 1, '!': 2, '<unk>': 3, '</s>': 4 }, unk_token: '<unk>' },
  }, { eos_token: '</s>' });
  assert.deepEqual(sp.eosIds, [4]);
  const ids = [0, 1, 2, 1, 4];
  const sd = sp.streamDecoder({ skipSpecialTokens: true });
  const pieces = ids.map((id) => sd.push(id));
  assert.deepEqual(pieces, ['Hello', ' world', '!', ' world', '']);
  assert.equal(pieces.join('') + sd.flush(), sp.decode(ids, { skipSpecialTokens: true }));
});
