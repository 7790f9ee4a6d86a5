// Autograd mechanics: accumulation, fan-out, noGrad, explicit output gradients, errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad, ops, Tensor, isGradEnabled } from '../src/index.js';

test('gradient of a value used twice accumulates (fan-out)', () => {
  const x = ops.tensor([1, 2, 3], undefined, { requiresGrad: true });
  const y = ops.sum(ops.mul(x, x)); // d/dx sum(x^2) = 2x
  y.backward();
  assert.deepEqual(x.grad!.toList(), [2, 4, 6]);
});

test('leaf gradients accumulate across backward calls until zeroGrad', () => {
  const x = ops.tensor([1, -1], undefined, { requiresGrad: true });
  ops.sum(ops.mul(x, 3)).backward();
  ops.sum(ops.mul(x, 3)).backward();
  assert.deepEqual(x.grad!.toList(), [6, 6]);
  x.zeroGrad();
  assert.equal(x.grad, null);
});

test('backward with an explicit output gradient', () => {
  const x = ops.tensor([[1, 2], [3, 4]], undefined, { requiresGrad: true });
  const y = ops.mul(x, 2);
  y.backward(ops.tensor([[1, 0], [0, 1]]));
  assert.deepEqual(x.grad!.toList(), [[2, 0], [0, 2]]);
});

test('backward without a gradient needs a single-element tensor', () => {
  const x = ops.tensor([1, 2], undefined, { requiresGrad: true });
  assert.throws(() => ops.mul(x, 2).backward(), /backward: called without a gradient on a tensor of shape \[2\]/);
});

test('backward with a gradient of the wrong shape names both shapes', () => {
  const x = ops.tensor([1, 2], undefined, { requiresGrad: true });
  assert.throws(() => ops.mul(x, 2).backward(ops.tensor([1, 2, 3])), /gradient shape \[3\] does not match tensor shape \[2\]/);
});

test('noGrad records nothing and restores the previous state, even on throw', () => {
  const x = ops.tensor([1, 2], undefined, { requiresGrad: true });
  const y = noGrad(() => ops.mul(x, 2));
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
  assert.throws(() => noGrad(() => { throw new Error('boom'); }), /boom/);
  assert.equal(isGradEnabled(), true);
});

test('only inputs that require gradients receive them', () => {
  const a = ops.tensor([1, 2], undefined, { requiresGrad: true });
  const b = ops.tensor([3, 4]);
  ops.sum(ops.mul(a, b)).backward();
  assert.deepEqual(a.grad!.toList(), [3, 4]);
  assert.equal(b.grad, null);
});

test('backward on a tensor outside any graph is an error', () => {
  assert.throws(() => ops.tensor([1]).backward(), /does not require gradients/);
});

test('int32 tensors cannot require gradients', () => {
  assert.throws(() => ops.arange(3).requireGrad(), /int32/);
});

test('a long chain does not overflow the stack (iterative topological sort)', () => {
  const x = ops.tensor([1], undefined, { requiresGrad: true });
  let y: Tensor = x;
  for (let i = 0; i < 20000; i++) y = ops.add(y, 1);
  y.backward();
  assert.deepEqual(x.grad!.toList(), [1]);
});

test('detach cuts the graph', () => {
  const x = ops.tensor([2], undefined, { requiresGrad: true });
  const y = ops.mul(ops.mul(x, x).detach(), x); // d/dx (c * x) with c = x^2 held constant = 4
  y.backward();
  assert.deepEqual(x.grad!.toList(), [4]);
});

test('savedForBackward counts each saved buffer once and skips parameters and inputs', async () => {
  const { savedForBackward } = await import('../src/index.js');
  const x = ops.randn([4, 3]).requireGrad();
  const w = ops.randn([3, 5]).requireGrad();
  const h = ops.matmul(x, w); // saves x and w: excluded
  const y = ops.gelu(h); // saves h and y
  const z = ops.mul(y, y); // saves y twice: counted once
  const kept = savedForBackward([z], [x, w]);
  assert.equal(kept.bytes, 2 * 4 * 5 * 4);
  // the walk meets mul first: y is attributed to it, h to gelu
  assert.deepEqual(kept.entries.map((e) => e.op).sort(), ['gelu', 'mul']);
  assert.equal(savedForBackward([ops.tensor([1])]).bytes, 0);
});

test('leaves never share a gradient buffer (add hands one tensor to both inputs)', () => {
  const a = ops.tensor([1, 2], undefined, { requiresGrad: true });
  const b = ops.tensor([3, 4], undefined, { requiresGrad: true });
  ops.sum(ops.add(a, b)).backward();
  assert.notEqual(a.grad!.data.buffer, b.grad!.data.buffer);
  a.grad!.data[0] = 99;
  assert.deepEqual(b.grad!.toList(), [1, 1]);
});
