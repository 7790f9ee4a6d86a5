// Soft MoE layer and classifier options behind the authors' recipe: slots from the l2-normalised
// tokens (both formulations, finite differences, Algorithm 1's own slot path, edge cases), Phi's
// U[-1, 1] init, the decoder without bias, and option errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend, moe } from '../src/index.js';
import { SoftMoEClassifier, recipeModelFields, type SoftMoEClassifierConfig } from '../src/models/softmoe-classifier.js';
import { forwardSelected } from '../src/moe/select.js';
import { assertClose, backendsUnderTest, checkAccumulatedGradients, randTensor } from './helpers.js';

interface Case { name: string; shape: number[]; n: number; p: number; h: number; activation: NonNullable<moe.SoftMoEConfig['activation']>; bias: boolean }

const CASES: Case[] = [
  { name: 'paper-like, relu, no bias', shape: [3, 4, 7], n: 5, p: 1, h: 4, activation: 'relu', bias: false },
  { name: 'gelu, biases, p=2', shape: [2, 5, 6], n: 4, p: 2, h: 3, activation: 'gelu', bias: true },
  { name: 'swiglu, p=3, [m, d] input', shape: [3, 5], n: 3, p: 3, h: 4, activation: 'swiglu', bias: true },
  { name: 'one token (m=1)', shape: [3, 1, 6], n: 4, p: 2, h: 3, activation: 'relu', bias: true },
  { name: 'one expert (n=1)', shape: [2, 4, 6], n: 1, p: 2, h: 5, activation: 'gelu', bias: false },
];

function layerFor(c: Case, slotInputs: 'raw' | 'normalized', dtype: 'float32' | 'float64' = 'float32'): moe.SoftMoELayer {
  const d = c.shape[c.shape.length - 1]!;
  const layer = new moe.SoftMoELayer({ dModel: d, numExperts: c.n, slotsPerExpert: c.p, dFF: c.h, activation: c.activation, bias: c.bias, slotInputs, seed: 11 });
  return dtype === 'float64' ? layer.to('float64') : layer;
}

/** Rows of x divided by sqrt(|row|^2 + 1e-6), the layer's own normalisation, in plain loops. */
function normalizeRows(x: Tensor): Tensor {
  const d = x.shape[x.shape.length - 1]!;
  const out = Tensor.empty([...x.shape], x.dtype);
  for (let r = 0; r < x.size / d; r++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += x.data[r * d + i]! ** 2;
    for (let i = 0; i < d; i++) out.data[r * d + i] = x.data[r * d + i]! / Math.sqrt(s + 1e-6);
  }
  return out;
}

function grads(layer: moe.SoftMoELayer, x: Tensor, w: Tensor, f: 'slots' | 'tokens'): { y: Tensor; g: Map<string, Tensor> } {
  layer.formulation = f;
  layer.zeroGrad();
  const xr = x.detach().requireGrad();
  const y = layer.forward(xr).y;
  ops.sum(ops.mul(y, w)).backward();
  const g = new Map<string, Tensor>([['x', xr.grad!]]);
  for (const [name, p] of layer.namedParameters()) g.set(name, p.grad!);
  return { y, g };
}

for (const backend of backendsUnderTest()) {
  for (const c of CASES) {
    test(`Soft MoE slots from normalised tokens: equal to the raw-slot layer fed the normalised tokens, both sides agree in every gradient: ${c.name} (${backend})`, () => {
      withBackend(backend, () => {
        const x = randTensor(new Rng(1), c.shape, 'float32', -2, 2);
        const w = randTensor(new Rng(2), c.shape);
        const normalized = layerFor(c, 'normalized');
        const raw = layerFor(c, 'raw');
        // same seed, same parameters; the router normalises again, which leaves unit rows unit up to eps
        const yn = noGrad(() => normalized.forward(x).y);
        const yr = noGrad(() => raw.forward(normalizeRows(x)).y);
        assertClose(yn, yr, 1e-4, 1e-5, 'y vs raw slots of normalised tokens');
        // and it is a different function from raw slots on raw tokens (the inputs have norms far from 1)
        const yRawX = noGrad(() => raw.forward(x).y);
        assert.ok(yn.data.some((v, i) => Math.abs(v - yRawX.data[i]!) > 1e-3), 'normalised slots change the output');
        const s = grads(normalized, x, w, 'slots');
        const t = grads(normalized, x, w, 'tokens');
        assertClose(t.y, s.y, 1e-4, 1e-5, 'y tokens vs slots');
        for (const [name, g] of s.g) assertClose(t.g.get(name)!, g, 1e-4, 1e-5, `d${name} tokens vs slots`);
      });
    });
  }
}

for (const f of ['slots', 'tokens'] as const) {
  for (const c of [CASES[0]!, CASES[1]!, CASES[3]!]) {
    test(`Soft MoE slots from normalised tokens: ${f} side gradients match float64 finite differences: ${c.name}`, () => {
      withBackend('js', () => {
        const layer = layerFor(c, 'normalized', 'float64');
        layer.formulation = f;
        const x = randTensor(new Rng(3), c.shape, 'float64', -2, 2).requireGrad();
        const w = randTensor(new Rng(4), c.shape, 'float64');
        const loss = (): Tensor => ops.sum(ops.mul(layer.forward(x).y, w));
        loss().backward();
        checkAccumulatedGradients([...layer.namedParameters(), ['x', x]], loss, { samples: 6, label: f });
      });
    });
  }
}

test('Algorithm 1 forms its slots from the normalised tokens too: k = n equals the full layer, k < n the kept experts of the full layer', () => {
  const c = CASES[1]!;
  const layer = layerFor(c, 'normalized');
  const x = randTensor(new Rng(5), c.shape, 'float32', -2, 2);
  const full = noGrad(() => layer.forward(x).y);
  assertClose(noGrad(() => forwardSelected(layer, x, c.n).y), full, 1e-4, 1e-5, 'k = n');
  // k < n: the kept experts' terms, computed here from the full layer's D, C and normalised slots
  const k = 2;
  const sel = noGrad(() => forwardSelected(layer, x, k));
  const { x3, dispatch, combine } = noGrad(() => layer.weights(x));
  assertClose(x3, normalizeRows(x), 1e-5, 1e-6, 'weights() hands out the normalised tokens');
  const outs = noGrad(() => layer.runExperts(ops.matmul(dispatch, x3, { transA: true }))); // [B, n*p, d]
  const [B, m, d] = c.shape as [number, number, number];
  const np = c.n * c.p;
  const want = new Float32Array(B * m * d);
  for (let b = 0; b < B; b++) {
    const kept = new Set(sel.selected.subarray(b * k, (b + 1) * k));
    for (let t = 0; t < m; t++) {
      for (let s = 0; s < np; s++) {
        if (!kept.has(Math.floor(s / c.p))) continue;
        const cw = combine.data[(b * m + t) * np + s]!;
        for (let i = 0; i < d; i++) want[(b * m + t) * d + i]! += cw * outs.data[(b * np + s) * d + i]!;
      }
    }
  }
  assertClose(sel.y, want, 1e-4, 1e-5, 'Algorithm 1, k = 2');
});

test('Soft MoE slots from normalised tokens: empty batches and zero tokens give finite outputs and gradients', () => {
  for (const f of ['slots', 'tokens'] as const) {
    for (const shape of [[0, 4, 6], [2, 0, 6]]) {
      const layer = new moe.SoftMoELayer({ dModel: 6, numExperts: 3, slotsPerExpert: 2, dFF: 4, slotInputs: 'normalized' });
      layer.formulation = f;
      const x = Tensor.empty(shape).requireGrad();
      const y = layer.forward(x).y;
      assert.deepEqual(y.shape, shape);
      ops.sum(y).backward();
    }
    // an all-zero token (a blank patch) normalises to zero, not NaN
    const layer = new moe.SoftMoELayer({ dModel: 6, numExperts: 3, dFF: 4, slotInputs: 'normalized' });
    layer.formulation = f;
    const x = Tensor.empty([1, 3, 6]).requireGrad();
    x.data.set([1, 2, 3, 4, 5, 6], 6);
    const y = layer.forward(x).y;
    ops.sum(y).backward();
    assert.ok(y.data.every(Number.isFinite) && x.grad!.data.every(Number.isFinite), `${f}: finite with a zero token`);
  }
});

test('Phi init: N(0, 1/d) by default, U[-1, 1] with phiInit uniform', () => {
  const d = 196;
  const stats = (t: Tensor) => {
    let s = 0, q = 0, lo = Infinity, hi = -Infinity;
    for (const v of t.data) { s += v; q += v * v; lo = Math.min(lo, v); hi = Math.max(hi, v); }
    return { mean: s / t.size, meanSq: q / t.size, lo, hi };
  };
  const normal = stats(new moe.SoftMoELayer({ dModel: d, numExperts: 64, dFF: 4 }).phi);
  assert.ok(Math.abs(normal.meanSq - 1 / d) < 0.1 / d, `N(0, 1/d): mean square ${normal.meanSq} vs ${1 / d}`);
  const uni = stats(new moe.SoftMoELayer({ dModel: d, numExperts: 64, dFF: 4, phiInit: 'uniform' }).phi);
  assert.ok(uni.lo >= -1 && uni.hi <= 1 && uni.lo < -0.99 && uni.hi > 0.99, `U[-1, 1]: range [${uni.lo}, ${uni.hi}]`);
  assert.ok(Math.abs(uni.meanSq - 1 / 3) < 0.02 && Math.abs(uni.mean) < 0.02, `U[-1, 1]: mean ${uni.mean}, mean square ${uni.meanSq}`);
});

test('Soft MoE option errors name the option', () => {
  const base = { dModel: 4, numExperts: 2, dFF: 3 };
  assert.throws(() => new moe.SoftMoELayer({ ...base, slotInputs: 'normalized', normalize: false }), /slotInputs 'normalized'.*needs normalize: true/);
  assert.throws(() => new moe.SoftMoELayer({ ...base, slotInputs: 'hat' as 'raw' }), /slotInputs must be 'raw' or 'normalized', got "hat"/);
  assert.throws(() => new moe.SoftMoELayer({ ...base, phiInit: 'xavier' as 'normal' }), /phiInit must be 'normal' or 'uniform', got "xavier"/);
  assert.throws(() => new moe.SoftMoELayer({ ...base, normalize: 'yes' as unknown as boolean }), /normalize must be a boolean/);
  const cfg: SoftMoEClassifierConfig = { numExperts: 4, hidden: null, patch: 14, slotsPerExpert: 1, normalize: true, imageSize: 28, classes: 10 };
  assert.throws(() => new SoftMoEClassifier({ ...cfg, decoderBias: 1 as unknown as boolean }), /decoderBias must be true or false, got 1/);
  assert.throws(() => recipeModelFields('paper' as 'authors'), /recipe must be 'moe-ts' or 'authors', got "paper"/);
});

test('classifier recipes: the authors\' has normalised slots, U[-1, 1] Phi and no decoder bias; old configs load as moe-ts', () => {
  const base: SoftMoEClassifierConfig = { numExperts: 8, hidden: null, patch: 14, slotsPerExpert: 1, normalize: true, imageSize: 28, classes: 10 };
  const oldStyle = new SoftMoEClassifier(base, 1);
  const moeTs = new SoftMoEClassifier({ ...base, ...recipeModelFields('moe-ts') }, 1);
  const authors = new SoftMoEClassifier({ ...base, ...recipeModelFields('authors') }, 1);
  assert.equal(oldStyle.moe.slotInputs, 'raw');
  assert.ok(oldStyle.decoder.bias !== null);
  // the defaults are moe-ts's recipe, weight for weight
  for (const [name, p] of oldStyle.namedParameters()) assert.deepEqual([...p.data], [...moeTs.namedParameters().find(([n]) => n === name)![1].data], name);
  assert.equal(authors.moe.slotInputs, 'normalized');
  assert.equal(authors.decoder.bias, null);
  assert.equal(oldStyle.numParameters() - authors.numParameters(), 10, 'the decoder bias is the only parameter difference');
  assert.ok(authors.moe.phi.data.some((v) => Math.abs(v) > 0.5), 'U[-1, 1] Phi');
  const x = Tensor.empty([5, 784]);
  new Rng(1).fillUniform(x.data as Float32Array);
  const full = noGrad(() => authors.forward(x).logits);
  assertClose(noGrad(() => authors.forwardSelected(x, 8)), full, 1e-5, 1e-5, 'authors: Algorithm 1 with k = n vs forward');
});
