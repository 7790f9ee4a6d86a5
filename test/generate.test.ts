// Generation: the byte LM's KV-cached decoding against its full-window forward, and the generic
// loop (prefill, cached decode, EOS, limits, empty prompts, routing, timing) on a fake decoder
// with the MoEDecoder interface and on MODEL's tiny preset when it is there.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor } from '../src/index.js';
import { ByteLM, generate as generateBytes, type LMConfig } from '../src/models/lm.js';
import { forwardCached, newByteLMCache } from '../src/models/lm-kv.js';
import { assertClose } from './helpers.js';

const BYTE_CONFIGS: Array<[string, Partial<LMConfig>]> = [
  ['rope + rms + top-2 moe', { dModel: 16, layers: 2, heads: 2, maxSeqLen: 24, numExperts: 4, k: 2, dFF: 12 }],
  ['learned + layer norm + tied + moe every 2', { dModel: 12, layers: 2, heads: 3, maxSeqLen: 20, positions: 'learned', norm: 'layer', tieEmbeddings: true, moeEvery: 2, numExperts: 3, k: 1, dFF: 8 }],
  ['dense swiglu', { dModel: 8, layers: 1, heads: 1, maxSeqLen: 16, ffn: 'dense', activation: 'swiglu', dFF: 8 }],
  ['hash router', { dModel: 8, layers: 2, heads: 2, maxSeqLen: 16, numExperts: 4, k: 1, dFF: 8, router: { type: 'hash' } }],
];

function randomBytes(rng: Rng, n: number): Int32Array {
  return Int32Array.from({ length: n }, () => rng.int(256));
}

test('byte LM KV cache: prefill + one byte at a time gives the full forward logits (T = 1 .. maxSeqLen)', () => {
  for (const [name, cfg] of BYTE_CONFIGS) {
    const model = new ByteLM(cfg, 3);
    model.eval();
    const L = model.config.maxSeqLen;
    const ids = randomBytes(new Rng(5), L);
    const full = model.forward(new Tensor(ids, [1, L])).logits; // [1, L, 256]
    for (const prefill of [1, 5, L]) {
      const cache = newByteLMCache(model);
      const rows: number[] = [...forwardCached(model, ids.subarray(0, prefill), cache).data];
      for (let t = prefill; t < L; t++) rows.push(...forwardCached(model, ids.subarray(t, t + 1), cache).data);
      assert.equal(cache.length, L);
      assertClose(rows, full.data, 1e-4, 1e-5, `${name}, prefill ${prefill}`);
    }
    assert.throws(() => forwardCached(model, Int32Array.of(1), (() => { const c = newByteLMCache(model); forwardCached(model, ids, c); return c; })()), /exceed the cache's maxLen/);
  }
});

test('byte LM generate: the cached path gives the same bytes as the window re-run, within and past maxSeqLen', () => {
  for (const [name, cfg] of BYTE_CONFIGS) {
    const model = new ByteLM(cfg, 7);
    const prompt = Uint8Array.from(randomBytes(new Rng(1), 4));
    const L = model.config.maxSeqLen;
    for (const opts of [{ maxNewTokens: L - 4 }, { maxNewTokens: L + 6, temperature: 1, topK: 20, seed: 9 }]) {
      const cached = generateBytes(model, prompt, opts);
      const plain = generateBytes(model, prompt, { ...opts, useCache: false });
      assert.deepEqual([...cached], [...plain], `${name} ${JSON.stringify(opts)}`);
    }
    // a prompt longer than maxSeqLen takes the window path throughout
    const long = Uint8Array.from(randomBytes(new Rng(2), L + 3));
    assert.deepEqual([...generateBytes(model, long, { maxNewTokens: 3 })], [...generateBytes(model, long, { maxNewTokens: 3, useCache: false })]);
  }
});

test('byte LM cache: bad input is a clear error', () => {
  const model = new ByteLM(BYTE_CONFIGS[0]![1], 1);
  const cache = newByteLMCache(model);
  assert.throws(() => forwardCached(model, new Int32Array(0), cache), /no tokens/);
  assert.throws(() => forwardCached(model, Int32Array.of(300), cache), /id 300 at 0 is not a byte/);
  assert.throws(() => newByteLMCache(model, 1000), /exceeds the model's maxSeqLen/);
  const other = new ByteLM({ ...BYTE_CONFIGS[0]![1], layers: 3 }, 1);
  assert.throws(() => forwardCached(other, Int32Array.of(1), cache), /cache is for 2 layers/);
});
