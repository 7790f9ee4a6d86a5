// Bad input gets an Error naming the op and the shapes, on every backend.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ops, withBackend, registerBackend, KernelNotFoundError, setBackend, getBackend } from '../src/index.js';
import { backendsUnderTest } from './helpers.js';

const i32 = (v: number[]) => new Int32Array(v);

for (const backend of backendsUnderTest()) {
  test(`bad input is a named error on ${backend}`, () => {
    withBackend(backend, () => {
      const a = ops.zeros([2, 3]);
      assert.throws(() => ops.add(a, ops.zeros([4])), /add: shapes \[2, 3\] and \[4\] cannot be broadcast/);
      assert.throws(() => ops.matmul(a, ops.zeros([4, 5])), /matmul: inner dimensions differ: 3 vs 4 \(A \[2, 3\], B \[4, 5\]\)/);
      assert.throws(() => ops.matmul(ops.zeros([2, 2, 3]), ops.zeros([3, 3, 4])), /matmul: batch dimensions differ/);
      assert.throws(() => ops.matmul(ops.zeros([3]), ops.zeros([3, 4])), /matmul: both operands need rank >= 2/);
      assert.throws(() => ops.exp(ops.arange(3)), /exp: expected a float tensor, got int32 of shape \[3\]/);
      assert.throws(() => ops.add(a, ops.zeros([2, 3], { dtype: 'float64' })), /add: dtype mismatch, float32 \[2, 3\] vs float64 \[2, 3\]/);
      assert.throws(() => ops.gatherRows(a, i32([0, 2])), /gatherRows: row index \(src \[2, 3\]\) 2 at position 1 is out of range \[0, 2\)/);
      assert.throws(() => ops.gatherRows(a, i32([-1])), /out of range/);
      assert.throws(() => ops.gatherRows(a, ops.zeros([1])), /gatherRows: indices must be int32, got float32/);
      assert.throws(() => ops.scatterAddRows(a, i32([0, 5]), 3), /scatterAddRows: row index \(output has 3 rows\) 5 at position 1/);
      assert.throws(() => ops.scatterAddRows(a, i32([0]), 3), /needs one row per index/);
      assert.throws(() => ops.topk(a, 4), /topk: k = 4 must be an integer in \[0, 3\] for input \[2, 3\]/);
      assert.throws(() => ops.topk(ops.tensor([[1, NaN]]), 1), /topk: input \[1, 2\] contains NaN \(row 0, column 1\)/);
      assert.throws(() => ops.sum(a, 2), /sum: axis 2 is out of range for a tensor of rank 2/);
      assert.throws(() => ops.softmax(a, -3), /softmax: axis -3 is out of range/);
      assert.throws(() => ops.reshape(a, [4, 2]), /reshape: cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\]/);
      assert.throws(() => ops.slice(a, [1, 0], [2, 3]), /slice: .* out of bounds for \[2, 3\] \(axis 0\)/);
      assert.throws(() => ops.concat([a, ops.zeros([2, 2])], 0), /concat: shapes .* do not match outside axis 0/);
      assert.throws(() => ops.transpose(a, [0, 0]), /transpose: permutation \[0, 0\] does not fit shape \[2, 3\]/);
      assert.throws(() => ops.layerNorm(a, ops.ones([4])), /layerNorm: gamma must be \[3\] for input \[2, 3\], got \[4\]/);
      assert.throws(() => ops.crossEntropy(a, i32([0, 3])), /crossEntropy: target 3 at row 1 is out of range \[0, 3\)/);
      assert.throws(() => ops.crossEntropy(a, i32([0])), /crossEntropy: 1 targets for logits \[2, 3\]/);
      assert.throws(() => ops.mseLoss(a, ops.zeros([3, 2])), /mseLoss: pred \[2, 3\] and target \[3, 2\]/);
      assert.throws(() => ops.embedding(ops.zeros([4, 2]), ops.tensor([1, 4], undefined, { dtype: 'int32' })), /embedding: token id \(vocabulary of 4\) 4 at position 1/);
      assert.throws(() => ops.dropout(a, 1.5), /dropout: p must be in \[0, 1\]/);
      const x = ops.zeros([5, 4]);
      const w = ops.zeros([2, 4, 3]);
      assert.throws(() => ops.groupedMatmul(x, w, i32([2, 2])), /groupedMatmul: group sizes sum to 4, x has 5 rows \(x \[5, 4\], w \[2, 4, 3\], 2 groups\)$/);
      assert.throws(() => ops.groupedMatmul(x, w, i32([5])), /groupedMatmul: 1 group sizes for 2 weight groups/);
      assert.throws(() => ops.groupedMatmul(x, w, i32([6, -1])), /groupedMatmul: group 1 has negative size -1/);
      assert.throws(() => ops.groupedMatmul(ops.zeros([5, 3]), w, i32([2, 3])), /groupedMatmul: x has 3 columns, weights expect 4 \(x \[5, 3\], w \[2, 4, 3\], 2 groups\)$/);
      assert.throws(() => ops.groupedMatmul(x, ops.zeros([2, 3, 4]), i32([2, 2]), { transW: true }), /groupedMatmul: group sizes sum to 4, x has 5 rows \(x \[5, 4\], w \[2, 3, 4\] transposed, 2 groups\)$/);
    });
  });
}

test('a kernel missing on a backend is an error naming the kernel and the backend', () => {
  const prev = getBackend().name;
  registerBackend({ name: 'empty-test', float64: false, info: 'test', kernels: {} });
  setBackend('empty-test');
  try {
    assert.throws(() => ops.exp(ops.zeros([2])), (e: unknown) => e instanceof KernelNotFoundError && /kernel 'unary' is not implemented on backend 'empty-test'/.test((e as Error).message));
  } finally {
    setBackend(prev);
  }
});

test('an unknown backend is a clear error', () => {
  assert.throws(() => setBackend('cuda'), /backend 'cuda' is not available/);
});

test('float64 on the native backend is refused with a clear error', { skip: !backendsUnderTest().includes('native') && 'native backend not built here' }, () => {
  withBackend('native', () => {
    assert.throws(() => ops.exp(ops.zeros([2], { dtype: 'float64' })), /native backend: kernel unary got float64 data/);
  });
});

test('CI builds the native backend (MOE_REQUIRE_NATIVE=1)', { skip: process.env['MOE_REQUIRE_NATIVE'] !== '1' && 'MOE_REQUIRE_NATIVE is not set' }, () => {
  assert.ok(backendsUnderTest().includes('native'), 'native backend failed to load');
});
