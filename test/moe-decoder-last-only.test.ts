// MoEDecoder.forwardBatch({ lastOnly }): each sequence's last-row logits, equal bit for bit to the last rows of the full logits.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { MoEDecoder, decoderConfigToHF, type MoEFamily } from '../src/models/moe-decoder.js';
import type { KVCache } from '../src/nn/kv-cache.js';
import type { LoadDType } from '../src/models/moe-decoder-weights.js';
import { withBackend } from '../src/kernels/registry.js';

const model = (fam: MoEFamily, dtype: LoadDType = 'f32'): MoEDecoder => {
  const c = presetConfig(fam, 'tiny');
  return fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 7)), 'test', { dtype });
};

const tokens = (s: number, n: number, V: number): Int32Array => Int32Array.from({ length: n }, (_, i) => (s * 31 + i * 7 + 3) % V);

/** Runs the same step twice on fresh, equal caches: full logits and lastOnly logits. */
function both(m: MoEDecoder, plan: Array<{ past: number; now: number }>): { full: Float32Array[]; last: Float32Array[]; shapes: number[][]; caches: number[] } {
  const V = m.config.vocabSize;
  const hist = plan.map((p, s) => tokens(s, p.past + p.now, V));
  const mk = (): KVCache[] => plan.map((p, s) => {
    const cache = m.newCache(64);
    if (p.past > 0) m.forward(hist[s]!.subarray(0, p.past), cache);
    return cache;
  });
  const step = (caches: KVCache[], lastOnly: boolean) =>
    m.forwardBatch(plan.map((p, s) => ({ ids: hist[s]!.subarray(p.past, p.past + p.now), cache: caches[s]! })), undefined, { lastOnly });
  const full = step(mk(), false);
  const lastCaches = mk();
  const last = step(lastCaches, true);
  return { full: full.map((t) => t.data as Float32Array), last: last.map((t) => t.data as Float32Array), shapes: last.map((t) => [...t.shape]), caches: lastCaches.map((c) => c.length) };
}

const PLANS: Array<[string, Array<{ past: number; now: number }>]> = [
  ['decode only, 3 sequences', [{ past: 4, now: 1 }, { past: 9, now: 1 }, { past: 1, now: 1 }]],
  ['prefill chunks and decode mixed, one empty', [{ past: 0, now: 6 }, { past: 9, now: 1 }, { past: 3, now: 5 }, { past: 2, now: 0 }, { past: 0, now: 1 }]],
  ['one sequence, one token (T = 1)', [{ past: 0, now: 1 }]],
  ['one long chunk', [{ past: 5, now: 17 }]],
];

/** Asserts lastOnly's rows against the full logits' last rows: bit for bit, or within tol (relative) with the same argmax. */
function check(m: MoEDecoder, tol: number | null, plans = PLANS): void {
  const V = m.config.vocabSize;
  for (const [name, plan] of plans) {
    const { full, last, shapes, caches } = both(m, plan);
    plan.forEach((p, s) => {
      assert.deepEqual(shapes[s], [p.now === 0 ? 0 : 1, V], `${name}: sequence ${s} shape`);
      assert.equal(caches[s], p.past + p.now, `${name}: sequence ${s}'s cache grows by all its rows`);
      if (p.now === 0) return;
      const want = full[s]!.subarray((p.now - 1) * V, p.now * V);
      const got = last[s]!;
      assert.equal(got.length, V);
      let argGot = 0;
      let argWant = 0;
      for (let j = 0; j < V; j++) {
        if (tol === null) {
          if (!Object.is(got[j], want[j])) assert.fail(`${name}: sequence ${s} logit ${j}: lastOnly ${got[j]} != full ${want[j]}`);
        } else {
          assert.ok(Math.abs(got[j]! - want[j]!) <= tol * Math.max(1, Math.abs(want[j]!)), `${name}: sequence ${s} logit ${j}: lastOnly ${got[j]} vs full ${want[j]}`);
        }
        if (got[j]! > got[argGot]!) argGot = j;
        if (want[j]! > want[argWant]!) argWant = j;
      }
      assert.equal(argGot, argWant, `${name}: sequence ${s}: the greedy token`);
    });
  }
}

for (const fam of ['olmoe', 'qwen2_moe', 'mixtral'] as MoEFamily[]) {
  // Q8_0 products quantise and reduce each row on its own: the same bits whatever the row count
  test(`${fam} q8_0: lastOnly logits are the full logits' last rows, bit for bit`, () => check(model(fam, 'q8_0'), null));

  // the js backend's matmul sums each output in one fixed order: the same bits whatever the row count
  test(`${fam} f32, js backend: bit for bit`, () => withBackend('js', () => check(model(fam), null)));

  test(`${fam} f32, default backend: bit for bit where both products have the same row-count class, else within 1e-5`, () => {
    const m = model(fam);
    // decode only: full and lastOnly both have <= 4 rows (the native matrix-vector kernel)
    check(m, null, PLANS.filter(([, plan]) => plan.every((p) => p.now <= 1) && plan.length <= 4));
    // a native product of 1-4 rows runs the matrix-vector kernel, of 5 or more a BLAS GEMM: their
    // sums round differently (the full forward of one sequence alone and in a batch differ the same way)
    check(m, 1e-5);
  });
}

test('lastOnly with no new tokens at all gives [0, V] per sequence', () => {
  const m = model('olmoe');
  const out = m.forwardBatch([{ ids: new Int32Array(0), cache: m.newCache(8) }], undefined, { lastOnly: true });
  assert.deepEqual(out[0]!.shape, [0, m.config.vocabSize]);
});
