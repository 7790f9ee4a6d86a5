// Outputs allocated without clearing (tensor/dtype.ts allocUninitialized): with every such buffer
// poisoned with NaN, each op that uses one must give the same bits as before, on every backend, so
// no kernel leaves an element of its output unwritten.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, ops, withBackend, moe } from '../src/index.js';
import { allocUninitialized, setUninitializedPoison } from '../src/tensor/dtype.js';
import { expertMLP } from '../src/ops/expert-mlp.js';
import { backendsUnderTest, randTensor } from './helpers.js';

/** Every output and gradient of `run` on fresh inputs from the same seed. */
function outputs(run: (rng: Rng) => Tensor[]): Float32Array[] {
  return run(new Rng(7)).map((t) => Float32Array.from(t.data as Float32Array));
}

/** Runs `run` plainly and with poisoned buffers: the results must be finite and bit-identical. */
function samePoisoned(name: string, run: (rng: Rng) => Tensor[]): void {
  const plain = outputs(run);
  setUninitializedPoison(true);
  let poisoned: Float32Array[];
  try {
    poisoned = outputs(run);
  } finally {
    setUninitializedPoison(false);
  }
  assert.equal(poisoned.length, plain.length, name);
  plain.forEach((p, i) => {
    const q = poisoned[i]!;
    assert.ok(q.every(Number.isFinite), `${name}: result ${i} has a NaN from an unwritten element`);
    assert.deepEqual(q, p, `${name}: result ${i} differs with poisoned buffers`);
  });
}

/** Loss = sum(y * g) so every element of y gets its own gradient. */
function backward(y: Tensor, rng: Rng): void {
  ops.sum(ops.mul(y, randTensor(rng, [...y.shape]))).backward();
}

test('poisoning reaches the buffers it is meant for (the check below can fail)', () => {
  setUninitializedPoison(true);
  try {
    assert.ok(Number.isNaN((allocUninitialized('float32', 4) as Float32Array)[0]!));
    assert.ok(Number.isNaN((allocUninitialized('float32', 1 << 20) as Float32Array)[123]!));
  } finally {
    setUninitializedPoison(false);
  }
  // large buffers come uncleared from Node's allocator, small ones cleared
  assert.equal(allocUninitialized('float32', 16).length, 16);
  assert.equal((allocUninitialized('float32', 16) as Float32Array)[3], 0);
});

for (const backend of backendsUnderTest()) {
  test(`${backend}: every op with an uncleared output writes all of it`, () => withBackend(backend, () => {
    samePoisoned('matmul, small and BLAS-sized, batched', (rng) => {
      const a = randTensor(rng, [2, 40, 50]).requireGrad();
      const b = randTensor(rng, [50, 60]).requireGrad();
      const c = randTensor(rng, [3, 4]).requireGrad();
      const d = randTensor(rng, [4, 5]).requireGrad();
      const y = ops.matmul(a, b);
      const z = ops.matmul(c, d);
      backward(y, rng);
      backward(z, rng);
      return [y, z, a.grad!, b.grad!, c.grad!, d.grad!];
    });
    samePoisoned('groupedMatmul with an empty group', (rng) => {
      const x = randTensor(rng, [9, 6]).requireGrad();
      const w = randTensor(rng, [3, 6, 7]).requireGrad();
      const y = ops.groupedMatmul(x, w, Int32Array.from([4, 0, 5]));
      backward(y, rng);
      return [y, x.grad!, w.grad!];
    });
    samePoisoned('unary, broadcast binary, gatherRows', (rng) => {
      const x = randTensor(rng, [5, 8]).requireGrad();
      const s = randTensor(rng, [1, 8]).requireGrad();
      const y = ops.gatherRows(ops.mul(ops.gelu(x), s), Int32Array.from([4, 0, 0, 2]));
      backward(y, rng);
      return [y, x.grad!, s.grad!];
    });
    for (const act of ['gelu', 'swiglu'] as const) {
      samePoisoned(`expertMLP ${act}, gates, biases, an expert with no rows`, (rng) => {
        const E = 3, d = 6, h = 10;
        const x = randTensor(rng, [5, d]).requireGrad();
        const w = {
          w1: randTensor(rng, [E, d, h]).requireGrad(), w2: randTensor(rng, [E, h, d]).requireGrad(),
          w3: act === 'swiglu' ? randTensor(rng, [E, d, h]).requireGrad() : null,
          b1: randTensor(rng, [E, h]).requireGrad(), b2: randTensor(rng, [E, d]).requireGrad(),
        };
        const gates = randTensor(rng, [7], 'float32', 0, 1).requireGrad();
        const y = expertMLP(x, Int32Array.from([3, 0, 4]), act, w, {
          rowIndex: Int32Array.from([0, 2, 4, 1, 1, 3, 0]), gates, rowExpert: Int32Array.from([0, 0, 0, 2, 2, 2, 2]),
        });
        backward(y, rng);
        return [y, x.grad!, gates.grad!, ...[w.w1, w.w2, w.w3, w.b1, w.b2].filter((t) => t !== null).map((t) => t.grad!)];
      });
    }
    samePoisoned('MoE layer forward and backward', (rng) => {
      const layer = new moe.MoELayer({ dModel: 8, dFF: 16, numExperts: 4, router: { type: 'topk', k: 2 }, activation: 'gelu', seed: 3 });
      const x = randTensor(rng, [6, 8]).requireGrad();
      const out = layer.forward(x);
      ops.add(ops.sum(ops.mul(out.y, randTensor(rng, [6, 8]))), out.auxLoss).backward();
      return [out.y, x.grad!, ...layer.parameters().map((p) => p.grad!)];
    });
  }));
}
