// Tensor basics, creation helpers and the seeded RNG.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ops, Rng, Tensor, manualSeed, withBackend } from '../src/index.js';
import { backendsUnderTest } from './helpers.js';

test('tensor from nested arrays infers shape; toArray round-trips', () => {
  const t = ops.tensor([[1, 2, 3], [4, 5, 6]]);
  assert.deepEqual([...t.shape], [2, 3]);
  assert.equal(t.dtype, 'float32');
  assert.deepEqual(t.toArray(), [[1, 2, 3], [4, 5, 6]]);
  assert.equal(ops.scalar(7).toArray(), 7);
  assert.deepEqual(ops.tensor([1, 2, 3, 4], [2, 2], { dtype: 'int32' }).toArray(), [[1, 2], [3, 4]]);
});

test('ragged arrays and mismatched sizes are errors', () => {
  assert.throws(() => ops.tensor([[1, 2], [3]]), /ragged/);
  assert.throws(() => ops.tensor([1, 2, 3], [2, 2]), /3 values do not fill shape \[2, 2\]/);
  assert.throws(() => new Tensor(new Float32Array(3), [2, 2]), /3 elements but shape \[2, 2\] needs 4/);
  assert.throws(() => ops.zeros([2, -1]), /invalid shape/);
});

test('empty tensors have size 0 and work through ops', () => {
  const t = ops.zeros([0, 4]);
  assert.equal(t.size, 0);
  assert.deepEqual(t.toArray(), []);
  assert.deepEqual([...ops.sum(t, 0).shape], [4]);
});

test('item() needs exactly one element', () => {
  assert.equal(ops.tensor([3]).item(), 3);
  assert.throws(() => ops.tensor([1, 2]).item(), /item: tensor of shape \[2\] has 2 elements/);
});

test('the same seed gives the same numbers; different seeds differ', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const xs = Array.from({ length: 100 }, () => a.next());
  const ys = Array.from({ length: 100 }, () => b.next());
  assert.deepEqual(xs, ys);
  assert.notDeepEqual(xs, Array.from({ length: 100 }, () => new Rng(43).next()));
  for (const x of xs) assert.ok(x >= 0 && x < 1);
});

test('normal samples have mean ~0 and std ~1', () => {
  const rng = new Rng(1);
  const n = 200000;
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) { const v = rng.normal(); s += v; s2 += v * v; }
  const mean = s / n;
  const std = Math.sqrt(s2 / n - mean * mean);
  assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(std - 1) < 0.01, `std ${std}`);
});

test('seeded creation gives identical tensors on every backend', () => {
  const results = backendsUnderTest().map((b) => withBackend(b, () => {
    manualSeed(123);
    const x = ops.randn([64]);
    const y = ops.rand([16]);
    const d = ops.dropout(ops.ones([32]), 0.5);
    return [...x.data, ...y.data, ...d.data];
  }));
  for (const r of results.slice(1)) assert.deepEqual(r, results[0]);
});

test('permutation is a permutation', () => {
  const p = new Rng(5).permutation(1000);
  assert.deepEqual([...p].sort((a, b) => a - b), [...Array(1000).keys()]);
});
