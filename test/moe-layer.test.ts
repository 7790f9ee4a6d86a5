// The MoE layer: equivalences (E=1 vs dense MLP, dropless vs ample capacity), drops, aux losses,
// metrics, gradients against float64 finite differences, config errors; Soft MoE and Algorithm 1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend, moe } from '../src/index.js';
import { assertClose, backendsUnderTest, checkAccumulatedGradients, randTensor } from './helpers.js';

function copy(t: Tensor): Tensor {
  return ops.tensor(Float32Array.from(t.data), [...t.shape]);
}

for (const backend of backendsUnderTest()) {
  for (const activation of ['gelu', 'swiglu'] as const) {
    test(`E=1, k=1 with weights copied from a dense MLP matches it in output and every gradient (${activation}, ${backend})`, () => {
      withBackend(backend, () => {
        const [T, d, h] = [13, 6, 10];
        const layer = new moe.MoELayer({ dModel: d, dFF: h, numExperts: 1, router: { type: 'topk', k: 1 }, activation, loadBalanceCoef: 0, zLossCoef: 0, seed: 3 });
        const x1 = randTensor(new Rng(1), [T, d]).requireGrad();
        const x2 = copy(x1).requireGrad();
        const W1 = copy(ops.reshape(layer.experts.w1, [d, h])).requireGrad();
        const W2 = copy(ops.reshape(layer.experts.w2, [h, d])).requireGrad();
        const W3 = activation === 'swiglu' ? copy(ops.reshape(layer.experts.w3!, [d, h])).requireGrad() : null;
        const out = layer.forward(x1);
        const a = ops.matmul(x2, W1);
        const hidden = W3 ? ops.mul(ops.silu(a), ops.matmul(x2, W3)) : ops.gelu(a);
        const dense = ops.matmul(hidden, W2);
        assertClose(out.y, dense, 1e-6, 1e-6, 'output');
        const g = randTensor(new Rng(2), [T, d]);
        out.y.backward(g);
        dense.backward(g);
        assertClose(x1.grad!, x2.grad!, 1e-5, 1e-6, 'dx');
        assertClose(layer.experts.w1.grad!.data, W1.grad!.data, 1e-5, 1e-6, 'dW1');
        assertClose(layer.experts.w2.grad!.data, W2.grad!.data, 1e-5, 1e-6, 'dW2');
        if (W3) assertClose(layer.experts.w3!.grad!.data, W3.grad!.data, 1e-5, 1e-6, 'dW3');
        // one expert: the gate is softmax over one logit = 1, a constant; its gradient is 0
        assert.ok(layer.router.parameters()[0]!.grad!.data.every((v) => Math.abs(v) < 1e-6));
      });
    });
  }

  test(`dropless matches capacity routing when capacity cannot overflow (${backend})`, () => {
    withBackend(backend, () => {
      const base = { dModel: 8, dFF: 12, numExperts: 4, router: { type: 'topk' as const, k: 2 }, seed: 5 };
      const dropless = new moe.MoELayer({ ...base, capacityFactor: null });
      const capped = new moe.MoELayer({ ...base, capacityFactor: 4 }); // capacity = T*k: never overflows
      const x = randTensor(new Rng(3), [20, 8]);
      const xa = copy(x).requireGrad();
      const xb = copy(x).requireGrad();
      const a = dropless.forward(xa);
      const b = capped.forward(xb);
      assert.equal(b.plan.dropped, 0);
      assert.deepEqual([...a.y.data], [...b.y.data]);
      const g = randTensor(new Rng(4), [20, 8]);
      ops.add(ops.sum(ops.mul(a.y, g)), a.auxLoss).backward();
      ops.add(ops.sum(ops.mul(b.y, g)), b.auxLoss).backward();
      assert.deepEqual([...xa.grad!.data], [...xb.grad!.data]);
      for (const [[n, p], [, q]] of dropless.namedParameters().map((e, i) => [e, capped.namedParameters()[i]!] as const)) {
        assert.deepEqual([...p.grad!.data], [...q.grad!.data], n);
      }
    });
  });
}

test('a dropped assignment contributes 0; a token with all assignments dropped gets a zero row', () => {
  const layer = new moe.MoELayer({ dModel: 4, dFF: 6, numExperts: 2, router: { type: 'switch' }, capacityFactor: 0.25, seed: 1 });
  const x = randTensor(new Rng(7), [16, 4]);
  const out = noGrad(() => layer.forward(x));
  const cap = moe.expertCapacity(0.25, 16, 2);
  assert.equal(cap, 2);
  assert.ok(out.plan.dropped > 0);
  assert.equal(out.metrics.dropFraction, out.plan.dropped / 16);
  for (let t = 0; t < 16; t++) {
    const row = [...out.y.data.subarray(t * 4, t * 4 + 4)];
    if (!out.plan.kept[t]) assert.deepEqual(row, [0, 0, 0, 0], `dropped token ${t}`);
    else assert.ok(row.some((v) => v !== 0), `kept token ${t}`);
  }
  for (const n of out.plan.groupSizes) assert.ok(n <= cap);
});

test('training and evaluation use their own capacity factors', () => {
  const layer = new moe.MoELayer({ dModel: 4, dFF: 6, numExperts: 2, router: { type: 'switch' }, capacityFactor: 0.5, evalCapacityFactor: 2, seed: 1 });
  const x = randTensor(new Rng(7), [16, 4]);
  assert.equal(noGrad(() => layer.forward(x)).plan.capacity, 4);
  layer.eval();
  assert.equal(noGrad(() => layer.forward(x)).plan.capacity, 16);
});

test('the load-balance loss is 1 for uniform routing and E*sum f_i P_i in general', () => {
  const E = 4;
  const T = 8;
  const probs = ops.full([T, E], 1 / E);
  const expert = Int32Array.from({ length: T }, (_, t) => t % E);
  assert.ok(Math.abs(moe.loadBalanceLoss(probs, expert, 1).item() - 1) < 1e-6);
  const p2 = ops.softmax(randTensor(new Rng(1), [T, E]));
  const e2 = Int32Array.from([0, 0, 0, 1, 2, 0, 1, 0]);
  let want = 0;
  for (let e = 0; e < E; e++) {
    const f = [...e2].filter((v) => v === e).length / T;
    let P = 0;
    for (let t = 0; t < T; t++) P += p2.data[t * E + e]! / T;
    want += f * P;
  }
  assert.ok(Math.abs(moe.loadBalanceLoss(p2, e2, 1).item() - E * want) < 1e-6);
  // per sequence of the whole batch, the sequence-level variant equals the batch one
  const tok = Int32Array.from({ length: T }, (_, t) => t);
  assert.ok(Math.abs(moe.sequenceLoadBalanceLoss(p2, tok, e2, 1, T).item() - E * want) < 1e-6);
});

test('z-loss is mean(logsumexp(logits)^2)', () => {
  const z = randTensor(new Rng(2), [5, 3], 'float32', -3, 3);
  let want = 0;
  for (let t = 0; t < 5; t++) {
    let s = 0;
    for (let e = 0; e < 3; e++) s += Math.exp(z.data[t * 3 + e]!);
    want += Math.log(s) ** 2 / 5;
  }
  assert.ok(Math.abs(moe.zLoss(z).item() - want) < 1e-5);
});

test('metrics: loads, dead experts, entropies', () => {
  const layer = new moe.MoELayer({ dModel: 6, dFF: 4, numExperts: 8, router: { type: 'topk', k: 2 }, seed: 2 });
  const x = randTensor(new Rng(3), [3, 6]);
  const out = noGrad(() => layer.forward(x));
  const m = out.metrics;
  assert.equal(m.tokensPerExpert.reduce((a, b) => a + b, 0), 6);
  assert.deepEqual(m.deadExperts, m.tokensPerExpert.flatMap((n, e) => (n === 0 ? [e] : [])));
  assert.ok(m.deadExperts.length >= 2, '6 assignments over 8 experts leave some dead');
  assert.ok(Math.abs(m.maxEntropy - Math.log(8)) < 1e-12);
  const p = out.routing.probs!.data;
  let h = 0;
  for (let t = 0; t < 3; t++) for (let e = 0; e < 8; e++) h -= (p[t * 8 + e]! * Math.log(p[t * 8 + e]!)) / 3;
  assert.ok(Math.abs(m.entropy - h) < 1e-6);
  assert.ok(m.entropyOfMean >= m.entropy - 1e-9, 'the entropy of the mean is at least the mean entropy');
  assert.equal(m.meanProb.length, 8);
});

test('metrics read after later forwards (and backwards) still describe their own forward', () => {
  for (const router of [{ type: 'topk', k: 2 }, { type: 'expert-choice', capacityFactor: 1 }] satisfies moe.RouterConfig[]) {
    const layer = new moe.MoELayer({ dModel: 6, dFF: 4, numExperts: 4, router, seed: 2 });
    const x1 = randTensor(new Rng(3), [5, 6]);
    const x2 = randTensor(new Rng(4), [5, 6]);
    const eager = noGrad(() => layer.forward(x1)).metrics;
    const want = { meanProb: [...eager.meanProb], entropy: eager.entropy, entropyOfMean: eager.entropyOfMean };
    // the distribution statistics are computed when first read: nothing run in between may change them
    const unread = layer.forward(x1.detach().requireGrad()).metrics;
    for (let i = 0; i < 2; i++) {
      const out = layer.forward(x2.detach().requireGrad());
      ops.add(ops.sum(out.y), out.auxLoss).backward();
    }
    noGrad(() => layer.forward(x2));
    assert.deepEqual({ meanProb: unread.meanProb, entropy: unread.entropy, entropyOfMean: unread.entropyOfMean }, want, router.type);
    assert.notDeepEqual(layer.lastMetrics!.meanProb, want.meanProb, `${router.type}: the later forward's differ (else this checks nothing)`);
    assert.deepEqual(JSON.parse(JSON.stringify(unread)).meanProb, want.meanProb, `${router.type}: JSON has the values`);
  }
});

test('the whole layer matches float64 finite differences (top-2, capacity, swiglu, biases, shared expert)', () => {
  withBackend('js', () => {
    const layer = new moe.MoELayer({
      dModel: 5, dFF: 4, numExperts: 3, router: { type: 'topk', k: 2 }, activation: 'swiglu', bias: true, sharedExperts: 1,
      capacityFactor: 0.8, dropPolicy: 'probability', seed: 9,
    }).to('float64');
    const x = randTensor(new Rng(1), [7, 5], 'float64').requireGrad();
    const w = randTensor(new Rng(2), [7, 5], 'float64');
    const loss = (): Tensor => { const o = layer.forward(x); return ops.add(ops.sum(ops.mul(o.y, w)), o.auxLoss); };
    loss().backward();
    checkAccumulatedGradients([...layer.namedParameters(), ['x', x]], loss);
  });
});

test('every router type runs through the layer with T=1 and an empty batch', () => {
  for (const router of moe.routerTypes()) {
    const layer = new moe.MoELayer({ dModel: 4, dFF: 3, numExperts: 4, router: { type: router } as moe.RouterConfig, seed: 1 });
    for (const T of [1, 0, 6]) {
      const x = randTensor(new Rng(T), [T, 4]).requireGrad();
      const out = layer.forward(x, { tokenIds: Int32Array.from({ length: T }, (_, i) => i) });
      assert.deepEqual([...out.y.shape], [T, 4], router);
      assert.ok(out.y.data.every(Number.isFinite), `${router}: non-finite output`);
      if (T > 0 && out.y.requiresGrad) {
        ops.add(ops.sum(out.y), out.auxLoss).backward();
        assert.ok(x.grad, `${router}: no input gradient`);
      }
    }
  }
});

test('bad layer configuration names the field', () => {
  const ok = { dModel: 4, dFF: 8, numExperts: 4 };
  assert.throws(() => new moe.MoELayer({ ...ok, router: { type: 'topk', k: 5 } }), /TopKRouter: k = 5 must be an integer in \[1, 4\]/);
  assert.throws(() => new moe.MoELayer({ ...ok, capacityFactor: 0 }), /MoELayer: capacityFactor = 0 must be a positive number or null/);
  assert.throws(() => new moe.MoELayer({ ...ok, capacityFactor: -1 }), /capacityFactor = -1/);
  assert.throws(() => new moe.MoELayer({ ...ok, router: { type: 'magic' } as unknown as moe.RouterConfig }), /router.type = 'magic' is unknown/);
  assert.throws(() => new moe.MoELayer({ ...ok, topK: 2 } as unknown as moe.MoELayerConfig), /MoELayer: unknown key 'topK'/);
  assert.throws(() => new moe.MoELayer({ ...ok, dFF: '8' } as unknown as moe.MoELayerConfig), /MoELayer: dFF must be a number, got "8"/);
  assert.throws(() => new moe.MoELayer({ ...ok, activation: 'tanh' as 'gelu' }), /activation = 'tanh' is unknown/);
  assert.throws(() => new moe.MoELayer(ok).forward(ops.zeros([3, 5])), /MoELayer: input last dimension must be dModel = 4, got \[3, 5\]/);
});

// Soft MoE and Algorithm 1

test('Soft MoE: D is a softmax over tokens, C over slots; metrics report their ranges', () => {
  const layer = new moe.SoftMoELayer({ dModel: 6, numExperts: 4, slotsPerExpert: 2, dFF: 5, seed: 1 });
  const out = noGrad(() => layer.forward(randTensor(new Rng(1), [3, 5, 6])));
  const [B, m, S] = [3, 5, 8];
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      let sum = 0;
      for (let t = 0; t < m; t++) sum += out.dispatch.data[(b * m + t) * S + s]!;
      assert.ok(Math.abs(sum - 1) < 1e-5, `D column sums to ${sum}`);
    }
    for (let t = 0; t < m; t++) {
      let sum = 0;
      for (let s = 0; s < S; s++) sum += out.combine.data[(b * m + t) * S + s]!;
      assert.ok(Math.abs(sum - 1) < 1e-5, `C row sums to ${sum}`);
    }
  }
  assert.ok(Math.abs(out.metrics.combineSumPerExpert.reduce((a, b) => a + b, 0) - B * m) < 1e-4);
  assert.ok(out.metrics.dispatchMin >= 0 && out.metrics.dispatchMax <= 1);
});

test('Soft MoE gradients match float64 finite differences', () => {
  withBackend('js', () => {
    const layer = new moe.SoftMoELayer({ dModel: 4, numExperts: 3, slotsPerExpert: 2, dFF: 3, activation: 'relu', bias: true, seed: 2 }).to('float64');
    const x = randTensor(new Rng(1), [2, 3, 4], 'float64').requireGrad();
    const w = randTensor(new Rng(2), [2, 3, 4], 'float64');
    const loss = (): Tensor => ops.sum(ops.mul(layer.forward(x).y, w));
    loss().backward();
    checkAccumulatedGradients([...layer.namedParameters(), ['x', x]], loss, { samples: 6 });
  });
});

for (const backend of backendsUnderTest()) {
  test(`Algorithm 1 with k = n equals the full layer, plain and renormalised (${backend})`, () => {
    withBackend(backend, () => {
      const layer = new moe.SoftMoELayer({ dModel: 6, numExperts: 5, slotsPerExpert: 2, dFF: 4, seed: 3 });
      const x = randTensor(new Rng(2), [4, 3, 6]);
      const full = noGrad(() => layer.forward(x)).y;
      for (const renormalize of [false, true]) {
        assertClose(noGrad(() => moe.forwardSelected(layer, x, 5, { renormalize })).y, full, 1e-4, 1e-5, `renormalize=${renormalize}`);
      }
      assertClose(noGrad(() => moe.forwardSelected(layer, x, 5, { random: new Rng(1) })).y, full, 1e-4, 1e-5, 'random k=n');
    });
  });
}

test('Algorithm 1 keeps the experts with the largest Csum and equals the masked full computation', () => {
  const layer = new moe.SoftMoELayer({ dModel: 6, numExperts: 6, slotsPerExpert: 1, dFF: 4, seed: 4 });
  const x = randTensor(new Rng(5), [3, 4, 6]);
  const k = 2;
  const sel = noGrad(() => moe.forwardSelected(layer, x, k));
  const { combine, dispatch } = noGrad(() => layer.weights(x));
  const cs = moe.combineSums(combine, 6, 1);
  for (let b = 0; b < 3; b++) {
    const want = [...Array(6).keys()].sort((i, j) => cs[b * 6 + j]! - cs[b * 6 + i]!).slice(0, k);
    assert.deepEqual([...sel.selected.subarray(b * k, b * k + k)], want);
  }
  // naive: all expert outputs, then C with the unselected slots' columns zeroed
  const outs = noGrad(() => layer.runExperts(ops.matmul(dispatch, x, { transA: true })));
  const mask = ops.zeros([3, 1, 6]);
  for (let b = 0; b < 3; b++) for (let i = 0; i < k; i++) mask.data[b * 6 + sel.selected[b * k + i]!] = 1;
  const want = noGrad(() => ops.matmul(ops.mul(combine, mask), outs));
  assertClose(sel.y, want, 1e-4, 1e-5, 'selected output');
  // keptShare: the kept experts' Csum over all n, per input
  for (let b = 0; b < 3; b++) {
    let kept = 0;
    let total = 0;
    for (let j = 0; j < 6; j++) total += cs[b * 6 + j]!;
    for (let i = 0; i < k; i++) kept += cs[b * 6 + sel.selected[b * k + i]!]!;
    assert.ok(Math.abs(sel.keptShare[b]! - kept / total) < 1e-12);
  }
  // renormalised: each token's row of the masked C divided by its sum
  const masked = noGrad(() => ops.mul(combine, mask));
  const rowSums = ops.sum(masked, -1, true);
  const wantRen = noGrad(() => ops.matmul(ops.div(masked, rowSums), outs));
  assertClose(noGrad(() => moe.forwardSelected(layer, x, k, { renormalize: true })).y, wantRen, 1e-4, 1e-5, 'renormalised output');
});

test('Soft MoE config errors name the field', () => {
  assert.throws(() => new moe.SoftMoELayer({ dModel: 4, numExperts: 0, dFF: 2 }), /SoftMoELayer: numExperts = 0/);
  assert.throws(() => new moe.SoftMoELayer({ dModel: 4, numExperts: 2, dFF: 2, slots: 1 } as unknown as moe.SoftMoEConfig), /unknown key 'slots'/);
  const l = new moe.SoftMoELayer({ dModel: 4, numExperts: 2, dFF: 2 });
  assert.throws(() => l.forward(ops.zeros([2, 3, 5])), /SoftMoELayer: input must be \[B, m, 4\] or \[m, 4\], got \[2, 3, 5\]/);
  assert.throws(() => moe.forwardSelected(l, ops.zeros([1, 3, 4]), 3), /forwardSelected: k = 3 must be an integer in \[1, 2\]/);
});
