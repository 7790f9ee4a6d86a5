// The expert-parallel layer under the MoE layer's own test cases (test/moe-layer.test.ts): every
// router type with T = 0, 1, 6 (hash routing with token ids), E = 1, k = E, and dropless against
// ample capacity, at N = 1, 2, 4 worker threads, equal to the one-process layer bit for bit
// (output, aux losses, metrics, dx, every parameter gradient) on every backend.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, ops, withBackend, moe } from '../src/index.js';
import { ExpertParallel } from '../src/parallel/expert-parallel.js';
import { backendsUnderTest, layerStep, randTensor, type LayerStep } from './helpers.js';

function run(layer: moe.MoELayer, x: Tensor, tokenIds: Int32Array): LayerStep {
  const xa = new Tensor(Float32Array.from(x.data), [...x.shape]).requireGrad();
  const out = layer.forward(xa, { tokenIds });
  if (out.y.requiresGrad || out.auxLoss.requiresGrad) ops.add(ops.sum(ops.mul(out.y, out.y)), out.auxLoss).backward();
  return layerStep(layer, out, xa);
}

interface Case {
  name: string;
  config: moe.MoELayerConfig;
  /** Worker counts to check (at most numExperts). */
  ranks: number[];
}

const CASES: Case[] = [
  ...moe.routerTypes().map((type): Case => ({ name: `router ${type}`, config: { dModel: 4, dFF: 3, numExperts: 4, router: { type } as moe.RouterConfig, seed: 1 }, ranks: [1, 2, 4] })),
  { name: 'E = 1, k = 1', config: { dModel: 5, dFF: 6, numExperts: 1, router: { type: 'topk', k: 1 }, activation: 'swiglu', seed: 3 }, ranks: [1] },
  { name: 'k = E (top-4 of 4)', config: { dModel: 5, dFF: 6, numExperts: 4, router: { type: 'topk', k: 4 }, seed: 4 }, ranks: [1, 2, 4] },
  { name: 'ample capacity (capacity = T k: no drops)', config: { dModel: 8, dFF: 12, numExperts: 4, router: { type: 'topk', k: 2 }, capacityFactor: 4, seed: 5 }, ranks: [1, 2, 4] },
];

for (const backend of backendsUnderTest()) {
  test(`expert-parallel layer equals MoELayer bit for bit for every router type, E = 1, k = E, T = 0, 1, 6, at N = 1, 2, 4 (${backend})`, async () => {
    for (const N of [1, 2, 4]) {
      const cases = CASES.filter((c) => c.ranks.includes(N));
      const layers = cases.map((c) => new moe.MoELayer(c.config));
      const refs = cases.map((c) => new moe.MoELayer(c.config));
      // one group of workers serves every case's layer (each its own experts), as a model's layers share them
      const ep = new ExpertParallel(layers, { workers: N, timeoutMs: 30_000 });
      try {
        for (const [i, c] of cases.entries()) {
          for (const T of [6, 1, 0]) {
            const d = c.config.dModel;
            const x = randTensor(new Rng(100 + T), [T, d]);
            const ids = Int32Array.from({ length: T }, (_, t) => 7 * t + 1);
            // both layers run the same sequence of batches (a noisy router's generator advances per forward), from zero gradients
            for (const p of [...refs[i]!.parameters(), ...layers[i]!.parameters()]) p.grad = null;
            const want = withBackend(backend, () => run(refs[i]!, x, ids));
            const got = withBackend(backend, () => run(layers[i]!, x, ids));
            assert.deepEqual(got, want, `${c.name}, N = ${N}, T = ${T}`);
          }
        }
        assert.ok(N === 1 || ep.bytes.crossRank > 0, `N = ${N}: rows crossed between ranks`);
      } finally {
        await ep.close();
      }
    }
  });
}

test('dropless equals ample capacity through the workers (N = 2), as in one process', async () => {
  const base = { dModel: 8, dFF: 12, numExperts: 4, router: { type: 'topk' as const, k: 2 }, seed: 5 };
  const dropless = new moe.MoELayer({ ...base, capacityFactor: null });
  const capped = new moe.MoELayer({ ...base, capacityFactor: 4 });
  const ep = new ExpertParallel([dropless, capped], { workers: 2, timeoutMs: 30_000 });
  try {
    const x = randTensor(new Rng(3), [20, 8]);
    const a = run(dropless, x, new Int32Array(20));
    const b = run(capped, x, new Int32Array(20));
    assert.deepEqual(b.y, a.y);
    assert.deepEqual(b.dx, a.dx);
    assert.deepEqual(b.grads, a.grads);
  } finally {
    await ep.close();
  }
});
