// argmax on every backend against a naive loop written here: axes, keepDim, ties, NaN, no gradient, bad input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ops, Rng, Tensor, withBackend } from '../src/index.js';
import { backendsUnderTest } from './helpers.js';

/** torch.argmax by definition: along `axis`, the first index holding the largest value, a NaN beating everything. */
function naiveArgmax(x: Tensor, axis: number): number[] {
  const shape = x.shape;
  const ax = axis < 0 ? axis + shape.length : axis;
  const outer = shape.slice(0, ax).reduce((a, b) => a * b, 1);
  const dim = shape[ax]!;
  const inner = shape.slice(ax + 1).reduce((a, b) => a * b, 1);
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = 0;
      for (let j = 1; j < dim; j++) {
        const v = x.data[(o * dim + j) * inner + i]!;
        const b = x.data[(o * dim + best) * inner + i]!;
        if (Number.isNaN(b)) break;
        if (Number.isNaN(v) || v > b) best = j;
      }
      out.push(best);
    }
  }
  return out;
}

/** Values from a small set, so that ties are frequent. */
function tiedTensor(rng: Rng, shape: number[], dtype: 'float32' | 'float64' = 'float32'): Tensor {
  const t = Tensor.empty(shape, dtype);
  for (let i = 0; i < t.size; i++) t.data[i] = Math.floor(rng.next() * 4) - 1.5;
  return t;
}

for (const backend of backendsUnderTest()) {
  test(`argmax on ${backend}: every axis of ranks 1-4, with and without keepDim, equals the naive loop (ties to the first index)`, () => {
    withBackend(backend, () => {
      const rng = new Rng(7);
      for (const shape of [[1], [5], [3, 1], [1, 4], [4, 7], [2, 3, 5], [2, 1, 3, 4], [3, 300]]) {
        const x = tiedTensor(rng, shape);
        for (let axis = -shape.length; axis < shape.length; axis++) {
          const ax = axis < 0 ? axis + shape.length : axis;
          const r = ops.argmax(x, axis);
          assert.equal(r.dtype, 'int32');
          assert.deepEqual([...r.shape], shape.filter((_, i) => i !== ax), `shape of ${JSON.stringify(shape)} axis ${axis}`);
          assert.deepEqual(r.toFlatList(), naiveArgmax(x, axis), `${JSON.stringify(shape)} axis ${axis}`);
          const k = ops.argmax(x, axis, true);
          assert.deepEqual([...k.shape], shape.map((d, i) => (i === ax ? 1 : d)));
          assert.deepEqual(k.toFlatList(), r.toFlatList());
        }
        // no axis: the index into the flattened tensor
        const flat = ops.argmax(x);
        assert.deepEqual([...flat.shape], []);
        assert.equal(flat.item(), naiveArgmax(ops.reshape(x, [x.size]), 0)[0]);
        assert.deepEqual([...ops.argmax(x, undefined, true).shape], shape.map(() => 1));
      }
    });
  });

  test(`argmax on ${backend}: ties and NaN follow torch (first maximum; the first NaN wins)`, () => {
    withBackend(backend, () => {
      assert.deepEqual(ops.argmax(ops.tensor([[1, 3, 3], [2, 2, 2], [-1, 5, 5]]), 1).toList(), [1, 0, 1]);
      assert.deepEqual(ops.argmax(ops.tensor([[1, 3, 3], [2, 2, 2], [-1, 5, 5]]), 0).toList(), [1, 2, 2]);
      assert.deepEqual(ops.argmax(ops.tensor([[1, NaN, 9, NaN], [-Infinity, -Infinity, -Infinity, -Infinity]]), 1).toList(), [1, 0]);
      assert.equal(ops.argmax(ops.tensor([4, 4, 4, 4])).item(), 0);
      assert.equal(ops.argmax(ops.tensor([[0, 1], [7, 7]])).item(), 2);
    });
  });

  test(`argmax on ${backend}: no gradient is recorded; empty axes and int32 input are refused by name`, () => {
    withBackend(backend, () => {
      const x = ops.tensor([[0.5, -1], [2, 3]], undefined, { requiresGrad: true });
      const r = ops.argmax(x, 1);
      assert.equal(r.node, null);
      assert.equal(r.requiresGrad, false);
      assert.deepEqual(r.toList(), [0, 1]);
      assert.deepEqual(ops.argmax(ops.zeros([0, 3]), 1).toList(), [], 'no rows: no indices');
      assert.throws(() => ops.argmax(ops.zeros([3, 0]), 1), /argmax: cannot take the argmax over an empty axis 1 \(shape \[3, 0\]\)/);
      assert.throws(() => ops.argmax(ops.zeros([0])), /argmax: cannot take the argmax over an empty tensor/);
      assert.throws(() => ops.argmax(ops.zeros([2, 2]), 2), /argmax: axis 2 is out of range/);
      assert.throws(() => ops.argmax(ops.tensor([1, 2], undefined, { dtype: 'int32' })), /argmax: expected a float tensor, got int32/);
    });
  });
}

test('argmax in float64 (js backend) agrees with float32', () => {
  withBackend('js', () => {
    const x = tiedTensor(new Rng(3), [6, 9], 'float64');
    assert.deepEqual(ops.argmax(x, 1).toFlatList(), naiveArgmax(x, 1));
  });
});
