// Soft MoE's two formulations (slot side, the paper's order; token side, reassociated so that no
// [B, n*p, d] tensor exists) agree in outputs and every gradient, on every backend and at the
// edges (one token, one expert, one example); float64 finite differences of each; the choice rule.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend, moe } from '../src/index.js';
import { assertClose, backendsUnderTest, checkAccumulatedGradients, randTensor } from './helpers.js';

type Formulation = 'slots' | 'tokens';

interface Case {
  name: string;
  /** Input shape: [B, m, d] or [m, d]. */
  shape: number[];
  n: number;
  p: number;
  h: number;
  activation: NonNullable<moe.SoftMoEConfig['activation']>;
  bias: boolean;
  normalize: boolean;
}

const CASES: Case[] = [
  { name: 'paper-like, relu, no bias', shape: [3, 4, 7], n: 5, p: 1, h: 4, activation: 'relu', bias: false, normalize: true },
  { name: 'gelu, biases, p=2', shape: [2, 5, 6], n: 4, p: 2, h: 3, activation: 'gelu', bias: true, normalize: true },
  { name: 'swiglu, biases, p=3', shape: [2, 3, 5], n: 3, p: 3, h: 4, activation: 'swiglu', bias: true, normalize: true },
  { name: 'silu, unnormalised logits', shape: [2, 4, 6], n: 6, p: 1, h: 2, activation: 'silu', bias: false, normalize: false },
  { name: 'geluTanh, [m, d] input', shape: [5, 6], n: 3, p: 2, h: 5, activation: 'geluTanh', bias: true, normalize: true },
  { name: 'one token (m=1)', shape: [3, 1, 6], n: 4, p: 2, h: 3, activation: 'relu', bias: true, normalize: true },
  { name: 'one expert (n=1)', shape: [2, 4, 6], n: 1, p: 3, h: 5, activation: 'gelu', bias: true, normalize: true },
  { name: 'one example, one slot in all (B=1, n=1, p=1)', shape: [1, 3, 4], n: 1, p: 1, h: 2, activation: 'gelu', bias: false, normalize: true },
];

function layerFor(c: Case, dtype: 'float32' | 'float64' = 'float32'): moe.SoftMoELayer {
  const d = c.shape[c.shape.length - 1]!;
  const layer = new moe.SoftMoELayer({ dModel: d, numExperts: c.n, slotsPerExpert: c.p, dFF: c.h, activation: c.activation, bias: c.bias, normalize: c.normalize, seed: 7 });
  return dtype === 'float64' ? layer.to('float64') : layer;
}

/** y and the gradients of sum(y * w) with respect to x and every parameter, under one formulation. */
function run(layer: moe.SoftMoELayer, x: Tensor, w: Tensor, f: Formulation): { y: Tensor; grads: Map<string, Tensor> } {
  layer.formulation = f;
  layer.zeroGrad();
  const xr = x.detach().requireGrad();
  const y = layer.forward(xr).y;
  ops.sum(ops.mul(y, w)).backward();
  const grads = new Map<string, Tensor>([['x', xr.grad!]]);
  for (const [name, p] of layer.namedParameters()) {
    assert.ok(p.grad, `${f}: parameter ${name} got no gradient`);
    grads.set(name, p.grad);
  }
  return { y, grads };
}

for (const backend of backendsUnderTest()) {
  for (const c of CASES) {
    test(`Soft MoE token side equals slot side in output and every gradient: ${c.name} (${backend})`, () => {
      withBackend(backend, () => {
        const layer = layerFor(c);
        const x = randTensor(new Rng(1), c.shape);
        const w = randTensor(new Rng(2), c.shape);
        const slots = run(layer, x, w, 'slots');
        const tokens = run(layer, x, w, 'tokens');
        assert.deepEqual(tokens.y.shape, x.shape);
        assertClose(tokens.y, slots.y, 1e-4, 1e-5, 'y');
        for (const [name, g] of slots.grads) assertClose(tokens.grads.get(name)!, g, 1e-4, 1e-5, `d${name}`);
      });
    });
  }
}

test('Soft MoE token side equals slot side on larger random inputs, many experts with few hidden units (the paper grid)', () => {
  // 4 tokens of 196, n = 128, h = floor(784 / 128): the shape where the token side is chosen
  const layer = new moe.SoftMoELayer({ dModel: 196, numExperts: 128, slotsPerExpert: 1, dFF: 6, activation: 'relu', bias: false, seed: 3 });
  assert.equal(layer.chooseFormulation(4), 'tokens');
  const x = randTensor(new Rng(5), [16, 4, 196], 'float32', 0, 1);
  const w = randTensor(new Rng(6), [16, 4, 196]);
  const slots = run(layer, x, w, 'slots');
  const tokens = run(layer, x, w, 'tokens');
  assertClose(tokens.y, slots.y, 1e-4, 1e-5, 'y');
  for (const [name, g] of slots.grads) assertClose(tokens.grads.get(name)!, g, 1e-3, 1e-5, `d${name}`);
});

for (const f of ['slots', 'tokens'] as const) {
  for (const c of [CASES[1]!, CASES[2]!, CASES[5]!]) {
    test(`Soft MoE ${f} side gradients match float64 finite differences: ${c.name}`, () => {
      withBackend('js', () => {
        const layer = layerFor(c, 'float64');
        layer.formulation = f;
        const x = randTensor(new Rng(3), c.shape, 'float64').requireGrad();
        const w = randTensor(new Rng(4), c.shape, 'float64');
        const loss = (): Tensor => ops.sum(ops.mul(layer.forward(x).y, w));
        loss().backward();
        checkAccumulatedGradients([...layer.namedParameters(), ['x', x]], loss, { samples: 6, label: f });
      });
    });
  }
}

test('Soft MoE chooses the token side for many small experts and the slot side for few wide ones', () => {
  const paper = (n: number) => new moe.SoftMoELayer({ dModel: 196, numExperts: n, dFF: Math.floor(784 / n), activation: 'relu' });
  assert.equal(paper(512).chooseFormulation(4), 'tokens');
  assert.equal(paper(64).chooseFormulation(4), 'tokens');
  // a ViT-like layer: 196 tokens of 512, 8 experts of 2048 hidden units: the token side would run
  // every expert on every token (m/p = 196 times the expert work)
  const wide = new moe.SoftMoELayer({ dModel: 512, numExperts: 8, slotsPerExpert: 1, dFF: 2048 });
  assert.equal(wide.chooseFormulation(196), 'slots');
  // a forced formulation is kept
  wide.formulation = 'tokens';
  assert.equal(wide.chooseFormulation(196), 'tokens');
});

test('Soft MoE metrics are computed on first read and match a direct count', () => {
  const layer = new moe.SoftMoELayer({ dModel: 5, numExperts: 3, slotsPerExpert: 2, dFF: 4, seed: 2 });
  const out = noGrad(() => layer.forward(randTensor(new Rng(8), [2, 4, 5])));
  const C = out.combine.data;
  const want = [0, 0, 0];
  for (let i = 0; i < C.length; i++) want[Math.floor((i % 6) / 2)]! += C[i]!;
  const got = out.metrics.combineSumPerExpert;
  for (let j = 0; j < 3; j++) assert.ok(Math.abs(got[j]! - want[j]!) < 1e-9, `expert ${j}: ${got[j]} vs ${want[j]}`);
  assert.equal(out.metrics, out.metrics, 'computed once');
  assert.equal(out.metrics.combineMin, Math.min(...C));
  assert.equal(out.metrics.dispatchMax, Math.max(...out.dispatch.data));
});

for (const backend of backendsUnderTest()) {
  test(`Soft MoE with no examples or no tokens gives an empty output and finite zero gradients, both sides (${backend})`, () => {
    withBackend(backend, () => {
      for (const f of ['slots', 'tokens'] as const) {
        for (const shape of [[0, 4, 6], [2, 0, 6]]) {
          const layer = new moe.SoftMoELayer({ dModel: 6, numExperts: 3, slotsPerExpert: 2, dFF: 4, bias: true });
          layer.formulation = f;
          const x = Tensor.empty(shape).requireGrad();
          const y = layer.forward(x).y;
          assert.deepEqual(y.shape, shape, `${f} [${shape.join(', ')}]`);
          ops.sum(y).backward();
          for (const [name, p] of layer.namedParameters()) {
            if (p.grad) assert.ok(p.grad.data.every((v) => v === 0), `${f} [${shape.join(', ')}]: d${name} is not zero`);
          }
        }
      }
    });
  });
}
