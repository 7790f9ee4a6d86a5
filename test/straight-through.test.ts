// The straight-through router: the conformance suite, hard forward gates, the gradient it is defined
// to pass (that of the chosen experts' soft probabilities, selection held fixed) against float64
// finite differences of that surrogate, Gumbel selection, and the layer's expert gradients.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend, moe } from '../src/index.js';
import { StraightThroughRouter } from '../src/moe/routers/straight-through.js';
import { runRouterSuite } from './router-suite.js';
import { backendsUnderTest, checkAccumulatedGradients, randTensor } from './helpers.js';

for (const k of [1, 2]) {
  runRouterSuite({
    name: `straight-through k=${k}`, newRouter: (d, E, seed) => new StraightThroughRouter(d, E, { k: Math.min(k, E), seed }),
    gateSum: 'one', fixedK: (E) => Math.min(k, E), stochasticInTraining: false,
    skip: [{ reason: 'the straight-through gradient is by definition not the derivative of the hard forward gates; the test below checks the gradient it is defined to pass', tests: ['gradients of gates and aux losses match float64 finite differences'] }],
  });
}
runRouterSuite({
  name: 'straight-through Gumbel k=2', newRouter: (d, E, seed) => new StraightThroughRouter(d, E, { k: Math.min(2, E), gumbel: true, temperature: 0.5, seed }),
  gateSum: 'one', fixedK: (E) => Math.min(2, E), stochasticInTraining: true,
  skip: [
    { reason: 'as above: the estimator is not the derivative of the forward pass', tests: ['gradients of gates and aux losses match float64 finite differences'] },
    { reason: 'the gates are the constant 1/k; the noise shows in the selection, tested below', tests: ['training adds noise or jitter; eval does not'] },
  ],
});

for (const backend of backendsUnderTest()) {
  test(`straight-through: forward gates are exactly 1/k on the top-k of the logits, as topk chooses (${backend})`, () => {
    withBackend(backend, () => {
      for (const k of [1, 2, 4]) {
        const st = new StraightThroughRouter(6, 4, { k, seed: 3 });
        const tk = new moe.TopKRouter(6, 4, { k, seed: 3 });
        const x = randTensor(new Rng(k), [11, 6]);
        const a = noGrad(() => st.route(x));
        const b = noGrad(() => tk.route(x));
        assert.deepEqual([...a.expert], [...b.expert], `k=${k}: same experts as topk with the same weights`);
        assert.ok([...a.gates.data].every((g) => g === Math.fround(1 / k)), `k=${k}: hard gates`);
      }
    });
  });
}

test('straight-through: the gradient is that of the chosen soft probabilities softmax((z + G)/tau), selection fixed (float64 finite differences)', () => {
  withBackend('js', () => {
    for (const [k, tau] of [[1, 1], [2, 0.5]] as const) {
      const r = new StraightThroughRouter(5, 4, { k, temperature: tau, seed: 2 }).to('float64');
      const x = randTensor(new Rng(3), [7, 5], 'float64').requireGrad();
      const c = randTensor(new Rng(4), [7 * k], 'float64');
      const out = r.route(x);
      ops.sum(ops.mul(out.gates, c)).backward();
      const token = out.token;
      const expert = out.expert;
      // the surrogate with the selection of the forward pass: sum_a c_a softmax(x W^T / tau)[t_a, e_a]
      const surrogate = (): Tensor => {
        const p = ops.softmax(ops.div(ops.matmul(x, r.weight, { transB: true }), tau)).data;
        let s = 0;
        for (let a = 0; a < token.length; a++) s += c.data[a]! * p[token[a]! * 4 + expert[a]!]!;
        return new Tensor(Float64Array.of(s), []);
      };
      checkAccumulatedGradients([['router.weight', r.weight], ['x', x]], surrogate, { samples: 12, label: `k=${k} tau=${tau}` });
    }
  });
});

test('straight-through Gumbel: training selection is noisy and seeded, eval is the plain top-k', () => {
  const r = new StraightThroughRouter(6, 8, { k: 1, gumbel: true, seed: 1 });
  const x = randTensor(new Rng(1), [64, 6]);
  const plain = noGrad(() => r.eval().route(x)).expert;
  r.train();
  r.reseed(5);
  const a = noGrad(() => r.route(x)).expert;
  r.reseed(5);
  const b = noGrad(() => r.route(x)).expert;
  assert.deepEqual([...a], [...b], 'the same seed gives the same noisy selection');
  assert.ok([...a].some((e, i) => e !== plain[i]), 'Gumbel noise changes some selections');
  assert.throws(() => new StraightThroughRouter(4, 4, { temperature: 0 }), /temperature/);
  assert.throws(() => new StraightThroughRouter(4, 4, { k: 5 }), /k/);
});

test('straight-through in the layer: expert and input-free gradients match finite differences (gates are constant in expert weights)', () => {
  withBackend('js', () => {
    const layer = new moe.MoELayer({ dModel: 5, dFF: 4, numExperts: 3, router: { type: 'straight-through', k: 2 }, bias: true, loadBalanceCoef: 0, zLossCoef: 0, seed: 2 }).to('float64');
    const x = randTensor(new Rng(1), [9, 5], 'float64');
    const w = randTensor(new Rng(2), [9, 5], 'float64');
    const loss = (): Tensor => ops.sum(ops.mul(layer.forward(x).y, w));
    loss().backward();
    const experts = layer.namedParameters().filter(([n]) => n.startsWith('experts.'));
    checkAccumulatedGradients(experts, loss, { samples: 10 });
    const rw = layer.namedParameters().find(([n]) => n === 'router.weight')![1];
    assert.ok(rw.grad && rw.grad.data.some((v) => v !== 0), 'the router gets a gradient through the soft surrogate');
  });
});
