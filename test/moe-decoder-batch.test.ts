// MoEDecoder.forwardBatch: several sequences (prefill and decode mixed, caches at different lengths)
// in one step give each sequence's forward alone; one routing (hence one grouped GEMM) per MoE layer.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../src/tensor/autograd.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { MoEDecoder, decoderConfigToHF, isSparseLayer, type MoEFamily } from '../src/models/moe-decoder.js';
import type { KVCache } from '../src/nn/kv-cache.js';
import { maxDiff } from './helpers.js';

const FAMILIES: MoEFamily[] = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe'];

const model = (fam: MoEFamily): MoEDecoder => {
  const c = presetConfig(fam, 'tiny');
  return fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 5)));
};

/** Deterministic token ids for sequence s. */
const tokens = (s: number, n: number, V: number): Int32Array => Int32Array.from({ length: n }, (_, i) => (s * 37 + i * 11 + 1) % V);

describe('forwardBatch equals each sequence alone', () => {
  for (const fam of FAMILIES) {
    test(`${fam}: prefill and decode mixed, caches at different lengths, two steps`, () => {
      const m = model(fam);
      const V = m.config.vocabSize;
      // history already in the cache, then the new tokens of this step (0: a fresh prompt, 1: decode,
      // 2: a prefill chunk on top of a cache; 3: one token on an empty cache; 4: nothing this step)
      const plan = [{ past: 0, now: 5 }, { past: 9, now: 1 }, { past: 3, now: 4 }, { past: 0, now: 1 }, { past: 2, now: 0 }];
      const hist = plan.map((p, s) => tokens(s, p.past + p.now + 1, V));
      const mk = (): KVCache[] => plan.map((p, s) => {
        const cache = m.newCache(32);
        if (p.past > 0) m.forward(hist[s]!.subarray(0, p.past), cache);
        return cache;
      });
      const batchCaches = mk();
      const aloneCaches = mk();
      let routingCalls = 0;
      let routedRows = 0;
      m.onRouting = (_l, idx) => { routingCalls++; routedRows += idx.length; };
      const out = m.forwardBatch(plan.map((p, s) => ({ ids: hist[s]!.subarray(p.past, p.past + p.now), cache: batchCaches[s]! })));
      m.onRouting = undefined;
      const moeLayers = Array.from({ length: m.config.numLayers }, (_, l) => isSparseLayer(m.config, l)).filter(Boolean).length;
      const N = plan.reduce((s, p) => s + p.now, 0);
      assert.equal(routingCalls, moeLayers, 'one routing (one dispatch, one grouped GEMM per projection) per MoE layer for the whole batch');
      assert.equal(routedRows, moeLayers * N * m.config.topK);
      assert.equal(out.length, plan.length);
      for (const [s, p] of plan.entries()) {
        const alone = m.forward(hist[s]!.subarray(p.past, p.past + p.now), aloneCaches[s]!);
        assert.deepEqual(out[s]!.shape, [p.now, V]);
        const d = maxDiff(out[s]!.data, alone.data);
        assert.ok(d < 1e-5, `${fam} sequence ${s}: batched logits differ from alone by ${d}`);
        assert.equal(batchCaches[s]!.length, p.past + p.now);
        // and from the full forward without any cache (a separate attention path)
        if (p.now > 0) {
          const full = noGrad(() => m.forward(hist[s]!.subarray(0, p.past + p.now))).data;
          const df = maxDiff(out[s]!.data, full.subarray(p.past * V));
          assert.ok(df < 1e-4, `${fam} sequence ${s}: batched logits differ from the full forward by ${df}`);
        }
      }
      // second step: every sequence decodes one token on the caches the batch filled
      const out2 = m.forwardBatch(plan.map((p, s) => ({ ids: hist[s]!.subarray(p.past + p.now, p.past + p.now + 1), cache: batchCaches[s]! })));
      for (const [s, p] of plan.entries()) {
        const alone = m.forward(hist[s]!.subarray(p.past + p.now, p.past + p.now + 1), aloneCaches[s]!);
        const d = maxDiff(out2[s]!.data, alone.data);
        assert.ok(d < 1e-5, `${fam} step 2 sequence ${s}: differs by ${d}`);
      }
    });
  }

  test('a batch of 1 is forward; an empty batch and all-empty sequences give empty logits', () => {
    const m = model('qwen3_moe');
    const V = m.config.vocabSize;
    const ids = tokens(1, 6, V);
    const a = m.newCache(16);
    const b = m.newCache(16);
    const one = m.forwardBatch([{ ids, cache: a }]);
    assert.equal(one.length, 1);
    assert.ok(maxDiff(one[0]!.data, m.forward(ids, b).data) < 1e-6);
    assert.deepEqual(m.forwardBatch([]), []);
    const e = m.forwardBatch([{ ids: new Int32Array(0), cache: a }, { ids: new Int32Array(0), cache: b }]);
    assert.deepEqual(e.map((t) => t.shape), [[0, V], [0, V]]);
    assert.equal(a.length, 6);
  });
});

describe('forwardBatch refuses bad input before touching any cache', () => {
  const m = model('mixtral');
  const ids = Int32Array.from([1, 2, 3]);
  test('the same cache twice', () => {
    const c = m.newCache(8);
    assert.throws(() => m.forwardBatch([{ ids, cache: c }, { ids, cache: c }]), /sequence 1 uses the same cache/);
    assert.equal(c.length, 0);
  });
  test('a full cache names the sequence; nothing is written', () => {
    const a = m.newCache(8);
    const b = m.newCache(4);
    assert.throws(() => m.forwardBatch([{ ids, cache: a }, { ids: Int32Array.from([1, 2, 3, 4, 5]), cache: b }]), /\(sequence 1\): KVCache: full/);
    assert.equal(a.length, 0);
  });
  test('a cache of another shape, ids that are not Int32Array', () => {
    const other = model('olmoe').newCache(8);
    assert.throws(() => m.forwardBatch([{ ids, cache: other }]), /cache is for .* the model has/);
    assert.throws(() => m.forwardBatch([{ ids: [1, 2] as unknown as Int32Array, cache: m.newCache(8) }]), /ids must be an Int32Array/);
  });
});
