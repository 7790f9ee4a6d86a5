// Tensors as text (PyTorch's layout and summary), util.inspect, and toList()/toFlatList().
// Expected strings are torch 2.x's own output for the same values, plus moe-ts's shape/dtype suffix.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { ops, Tensor } from '../src/index.js';

/** torch's text without moe-ts's suffix, to compare with what torch prints. */
const torchText = (t: Tensor): string => t.toString().replace(/, shape=\[[\d, ]*\], dtype=\w+(, requiresGrad=true)?\)$/, ')');

test('small float tensors print every value with 4 decimals, aligned, plus shape and dtype', () => {
  const t = ops.tensor([[1.5, -2], [3.25, 4]]);
  assert.equal(t.toString(), 'tensor([[ 1.5000, -2.0000],\n        [ 3.2500,  4.0000]], shape=[2, 2], dtype=float32)');
});

test('whole-valued floats print as "1.", as torch does', () => {
  assert.equal(torchText(ops.tensor([1, 2, 3])), 'tensor([1., 2., 3.])');
  assert.equal(torchText(ops.scalar(2)), 'tensor(2.)');
  assert.equal(torchText(ops.scalar(3.5)), 'tensor(3.5000)');
  assert.equal(ops.scalar(3.5).toString(), 'tensor(3.5000, shape=[], dtype=float32)');
});

test('rank 3: blocks separated by a blank line', () => {
  assert.equal(torchText(ops.zeros([2, 3, 4])), [
    'tensor([[[0., 0., 0., 0.],',
    '         [0., 0., 0., 0.],',
    '         [0., 0., 0., 0.]],',
    '',
    '        [[0., 0., 0., 0.],',
    '         [0., 0., 0., 0.],',
    '         [0., 0., 0., 0.]]])',
  ].join('\n'));
});

test('more than 1000 elements: first and last 3 of each dimension around ...', () => {
  assert.equal(torchText(ops.ones([100, 100])), [
    'tensor([[1., 1., 1.,  ..., 1., 1., 1.],',
    '        [1., 1., 1.,  ..., 1., 1., 1.],',
    '        [1., 1., 1.,  ..., 1., 1., 1.],',
    '        ...,',
    '        [1., 1., 1.,  ..., 1., 1., 1.],',
    '        [1., 1., 1.,  ..., 1., 1., 1.],',
    '        [1., 1., 1.,  ..., 1., 1., 1.]])',
  ].join('\n'));
  const ints = new Tensor(Int32Array.from({ length: 10000 }, (_, i) => i), [10000]);
  assert.equal(ints.toString(), 'tensor([   0,    1,    2,  ..., 9997, 9998, 9999], shape=[10000], dtype=int32)');
});

test('a range past 1000x switches to scientific notation and wraps at 80 columns', () => {
  const t = new Tensor(Float32Array.from({ length: 2000 }, (_, i) => i), [2000]);
  assert.equal(torchText(t), 'tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n        1.9990e+03])');
  assert.equal(torchText(ops.tensor([1e-5, 1])), 'tensor([1.0000e-05, 1.0000e+00])');
  const long = new Tensor(Float32Array.from({ length: 20 }, (_, i) => i / 4), [20]);
  assert.equal(torchText(long), [
    'tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000, 1.2500, 1.5000, 1.7500, 2.0000,',
    '        2.2500, 2.5000, 2.7500, 3.0000, 3.2500, 3.5000, 3.7500, 4.0000, 4.2500,',
    '        4.5000, 4.7500])',
  ].join('\n'));
});

test('NaN and infinities print as nan and inf, padded like the other values', () => {
  assert.equal(torchText(ops.tensor([1.5, NaN, Infinity, -Infinity])), 'tensor([1.5000,    nan,    inf,   -inf])');
});

test('empty tensors, int32 and requiresGrad are shown', () => {
  assert.equal(ops.zeros([0, 3]).toString(), 'tensor([], shape=[0, 3], dtype=float32)');
  assert.equal(ops.tensor([[1, -20], [3, 4]], undefined, { dtype: 'int32' }).toString(), 'tensor([[  1, -20],\n        [  3,   4]], shape=[2, 2], dtype=int32)');
  assert.equal(ops.tensor([0.5], undefined, { requiresGrad: true }).toString(), 'tensor([0.5000], shape=[1], dtype=float32, requiresGrad=true)');
  assert.equal(ops.tensor([0.5], undefined, { dtype: 'float64' }).toString(), 'tensor([0.5000], shape=[1], dtype=float64)');
});

test('util.inspect and console.log show the values, also inside objects', () => {
  const t = ops.tensor([[1.5, -2], [3.25, 4]]);
  assert.equal(inspect(t), t.toString());
  assert.match(inspect({ logits: t }), /logits: tensor\(\[\[ 1\.5000, -2\.0000\],/);
  assert.equal(`${ops.tensor([1, 2])}`, 'tensor([1., 2.], shape=[2], dtype=float32)');
});

test('toString options: precision and threshold', () => {
  assert.equal(torchText(ops.tensor([1 / 3])), 'tensor([0.3333])');
  assert.equal(ops.tensor([1 / 3]).toString({ precision: 2 }), 'tensor([0.33], shape=[1], dtype=float32)');
  assert.equal(ops.tensor([1, 2, 3, 4, 5, 6, 7, 8]).toString({ threshold: 4, edgeItems: 1 }), 'tensor([1.,  ..., 8.], shape=[8], dtype=float32)');
});

test('toList() nests like torch.tolist(); toFlatList() is row-major and flat', () => {
  const t = ops.tensor([[[1, 2], [3, 4], [5, 6]]]);
  assert.deepEqual(t.toList(), [[[1, 2], [3, 4], [5, 6]]]);
  assert.deepEqual(t.toArray(), t.toList());
  assert.deepEqual(t.toFlatList(), [1, 2, 3, 4, 5, 6]);
  assert.equal(ops.scalar(7).toList(), 7);
  assert.deepEqual(ops.scalar(7).toFlatList(), [7]);
  assert.deepEqual(ops.zeros([0, 4]).toList(), []);
  assert.deepEqual(ops.zeros([2, 0]).toList(), [[], []]);
  assert.deepEqual(ops.tensor([1, 2], undefined, { dtype: 'int32' }).toList(), [1, 2]);
});
