// nn building blocks: norms, embedding, MLP, RoPE, attention, transformer blocks (dense and MoE).
// Shapes, float64 finite-difference gradients, causality, RoPE's relative-position property, and
// attention against a PyTorch fixture written by reference/attention_fixture.py.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Rng, Tensor, noGrad, ops, withBackend, moe, type Module } from '../src/index.js';
import {
  Embedding, LayerNorm, MLP, MLP_ACTIVATIONS, MultiHeadAttention, RMSNorm, RotaryEmbedding, TransformerBlock,
} from '../src/nn/index.js';
import { transformerBlock, type FeedForwardConfig } from '../src/models/block.js';
import { assertClose, backendsUnderTest, checkGradients, randTensor } from './helpers.js';

const shapeOf = (t: Tensor): number[] => [...t.shape];

/**
 * Finite-difference check of fn(x) with respect to x and every parameter of m (float64, js).
 * Parameters ride along as extra inputs: checkGradients perturbs their storage in place, which the
 * module reads on the next forward.
 */
function checkModule(m: Module, fn: (x: Tensor) => Tensor, x: Tensor, what: string, maxPerInput = 24): void {
  const params = m.parameters();
  checkGradients((xs) => fn(xs[0]!), [x, ...params], [true, ...params.map(() => true)], new Rng(99), what, maxPerInput);
}

// Norms, embedding, MLP

for (const backend of backendsUnderTest()) {
  test(`norm, embedding and MLP modules: shapes, names, defaults (${backend})`, () => {
    withBackend(backend, () => {
      const x = randTensor(new Rng(1), [2, 3, 6]);
      const ln = new LayerNorm(6);
      assert.deepEqual(ln.namedParameters().map(([n]) => n), ['weight', 'bias']);
      assert.deepEqual([...ln.weight!.data], [1, 1, 1, 1, 1, 1]);
      assert.deepEqual(shapeOf(ln.forward(x)), [2, 3, 6]);
      assertClose(ln.forward(x), ops.layerNorm(x, null, null, 1e-5), 1e-6, 1e-6, 'LayerNorm at init is the plain op');
      assert.equal(new LayerNorm(6, { affine: false }).numParameters(), 0);
      assert.deepEqual(new LayerNorm(6, { bias: false }).namedParameters().map(([n]) => n), ['weight']);
      const rms = new RMSNorm(6, { eps: 1e-5 });
      assert.deepEqual(rms.namedParameters().map(([n]) => n), ['weight']);
      assertClose(rms.forward(x), ops.rmsNorm(x, null, 1e-5), 1e-6, 1e-6, 'RMSNorm at init is the plain op');
      assert.throws(() => ln.forward(randTensor(new Rng(1), [2, 5])), /LayerNorm: input last dimension must be 6, got \[2, 5\]/);

      const emb = new Embedding(10, 4, { rng: new Rng(2) });
      assert.deepEqual(shapeOf(emb.weight), [10, 4]);
      const ids = ops.tensor(Int32Array.from([3, 1, 4, 1, 5, 9]), [2, 3]);
      const e = emb.forward(ids);
      assert.deepEqual(shapeOf(e), [2, 3, 4]);
      assert.deepEqual([...e.data.subarray(4, 8)], [...emb.weight.data.subarray(4, 8)]);
      assert.deepEqual(shapeOf(emb.forward(Int32Array.of(0, 9))), [2, 4]);
      // N(0, 1) by default like PyTorch; std scales it
      const big = new Embedding(1000, 16, { rng: new Rng(3) });
      const sd = Math.sqrt(ops.mean(ops.square(big.weight)).item());
      assert.ok(Math.abs(sd - 1) < 0.05, `std ${sd}`);
      const small = new Embedding(1000, 16, { std: 0.02, rng: new Rng(3) });
      assertClose(small.weight, ops.mul(big.weight, 0.02), 1e-6, 1e-9, 'std option');

      for (const activation of MLP_ACTIVATIONS) {
        const mlp = new MLP(6, 10, { activation, rng: new Rng(4) });
        assert.deepEqual(shapeOf(mlp.forward(x)), [2, 3, 6], activation);
        const names = mlp.namedParameters().map(([n]) => n);
        assert.deepEqual(names, activation === 'swiglu' ? ['w1.weight', 'w3.weight', 'w2.weight'] : ['w1.weight', 'w2.weight'], activation);
        // same parameters as one expert of an MoE layer with the same hidden width
        const layer = new moe.MoELayer({ dModel: 6, dFF: 10, numExperts: 4, activation });
        assert.equal(mlp.numParameters(), layer.experts.paramsPerExpert(), activation);
      }
      assert.equal(new MLP(6, 10, { bias: true }).numParameters(), 6 * 10 + 10 + 10 * 6 + 6);
      assert.throws(() => new MLP(6, 10, { activation: 'tanh' as 'gelu' }), /MLP: activation = 'tanh' is unknown/);
    });
  });
}

test('LayerNorm and RMSNorm modules match float64 finite differences', () => {
  withBackend('js', () => {
    const rng = new Rng(5);
    const x = randTensor(rng, [3, 4, 5], 'float64');
    const ln = new LayerNorm(5).to('float64');
    // move weight and bias off their init so every term of the gradient is exercised
    for (const p of ln.parameters()) p.data.set(randTensor(rng, [5], 'float64', 0.5, 1.5).data);
    checkModule(ln, (t) => ln.forward(t), x, 'LayerNorm');
    const rms = new RMSNorm(5).to('float64');
    rms.weight!.data.set(randTensor(rng, [5], 'float64', 0.5, 1.5).data);
    checkModule(rms, (t) => rms.forward(t), x, 'RMSNorm');
  });
});

test('MLP matches float64 finite differences for every activation (with and without bias)', () => {
  withBackend('js', () => {
    for (const activation of MLP_ACTIVATIONS) {
      for (const bias of [false, true]) {
        const mlp = new MLP(4, 6, { activation, bias, rng: new Rng(6) }).to('float64');
        const x = randTensor(new Rng(7), [2, 3, 4], 'float64');
        checkModule(mlp, (t) => mlp.forward(t), x, `MLP ${activation}${bias ? ' bias' : ''}`);
      }
    }
  });
});

test('Embedding matches float64 finite differences (repeated ids accumulate)', () => {
  withBackend('js', () => {
    const emb = new Embedding(5, 3, { rng: new Rng(8) }).to('float64');
    const ids = ops.tensor(Int32Array.from([1, 4, 1, 0, 1, 2]), [2, 3]);
    checkGradients(() => emb.forward(ids), [emb.weight], [true], new Rng(9), 'Embedding');
  });
});

// RoPE

test('RoPE: rotation preserves norms, position 0 is the identity, and offset picks the right positions', () => {
  withBackend('js', () => {
    const rope = new RotaryEmbedding(6, { maxSeqLen: 16 });
    const x = randTensor(new Rng(10), [2, 3, 7, 6], 'float64');
    const y = rope.forward(x);
    assert.deepEqual(shapeOf(y), [2, 3, 7, 6]);
    for (let r = 0; r < 2 * 3 * 7; r++) {
      let a = 0;
      let b = 0;
      for (let i = 0; i < 6; i++) { a += x.data[r * 6 + i]! ** 2; b += y.data[r * 6 + i]! ** 2; }
      assert.ok(Math.abs(a - b) < 1e-12, `row ${r}: |x|^2 ${a} vs |rope(x)|^2 ${b}`);
    }
    // the first position of every row block is untouched
    assertClose(ops.narrow(y, 2, 0, 1), ops.narrow(x, 2, 0, 1), 0, 1e-15, 'position 0');
    // rows 3.. of a full pass equal a pass over those rows with offset 3 (incremental decoding)
    assertClose(rope.forward(ops.narrow(x, 2, 3, 4), 3), ops.narrow(y, 2, 3, 4), 1e-12, 1e-12, 'offset');
    // channel pairs (i, i + hd/2) rotate by pos * base^(-2i/hd): check one entry by hand
    const [pos, i] = [5, 1];
    const th = pos * Math.pow(10000, (-2 * i) / 6);
    const x1 = x.data[pos * 6 + i]!;
    const x2 = x.data[pos * 6 + i + 3]!;
    assert.ok(Math.abs(y.data[pos * 6 + i]! - (x1 * Math.cos(th) - x2 * Math.sin(th))) < 1e-12);
    assert.ok(Math.abs(y.data[pos * 6 + i + 3]! - (x2 * Math.cos(th) + x1 * Math.sin(th))) < 1e-12);
    assert.throws(() => rope.forward(x, 10), /positions 10 \.\. 16 exceed maxSeqLen = 16/);
    assert.throws(() => new RotaryEmbedding(5, { maxSeqLen: 4 }), /headDim must be a positive even integer/);
  });
});

test('RoPE: q·k after rotation depends only on the offset between positions', () => {
  withBackend('js', () => {
    const hd = 8;
    const rope = new RotaryEmbedding(hd, { maxSeqLen: 64 });
    const rng = new Rng(11);
    const q = randTensor(rng, [1, hd], 'float64');
    const k = randTensor(rng, [1, hd], 'float64');
    const dotAt = (m: number, n: number): number => {
      const a = rope.forward(q, m).data;
      const b = rope.forward(k, n).data;
      let s = 0;
      for (let i = 0; i < hd; i++) s += a[i]! * b[i]!;
      return s;
    };
    for (const [m, n] of [[0, 0], [3, 1], [1, 3], [7, 20], [30, 2]] as const) {
      const base = dotAt(m, n);
      for (const s of [1, 5, 17, 31]) {
        assert.ok(Math.abs(dotAt(m + s, n + s) - base) < 1e-10, `m=${m} n=${n} s=${s}: ${dotAt(m + s, n + s)} vs ${base}`);
      }
    }
    // and it does depend on the offset (the property is not vacuous)
    assert.ok(Math.abs(dotAt(0, 1) - dotAt(0, 4)) > 1e-3);
  });
});

test('RoPE matches float64 finite differences', () => {
  withBackend('js', () => {
    const rope = new RotaryEmbedding(4, { maxSeqLen: 8, base: 100 });
    const x = randTensor(new Rng(12), [2, 2, 5, 4], 'float64');
    checkGradients((xs) => rope.forward(xs[0]!, 2), [x], [true], new Rng(13), 'RoPE', 80);
  });
});

// Attention

for (const backend of backendsUnderTest()) {
  test(`attention: shapes, names, causality, eval-mode dropout (${backend})`, () => {
    withBackend(backend, () => {
      const [B, T, d, H] = [2, 6, 8, 2];
      for (const rope of [false, true]) {
        const attn = new MultiHeadAttention(d, H, { causal: true, rope, maxSeqLen: 8, rng: new Rng(14) });
        assert.deepEqual(attn.namedParameters().map(([n, p]) => `${n} ${p.shape.join('x')}`), ['qkv.weight 24x8', 'qkv.bias 24', 'proj.weight 8x8', 'proj.bias 8']);
        const x = randTensor(new Rng(15), [B, T, d]);
        const y = attn.forward(x);
        assert.deepEqual(shapeOf(y), [B, T, d]);
        for (let t = 0; t < T - 1; t++) {
          // new values at positions t+1.. leave positions <= t exactly as they were
          const x2 = Tensor.empty([B, T, d]);
          x2.data.set(x.data);
          const fresh = randTensor(new Rng(100 + t), [B, T, d]);
          for (let b = 0; b < B; b++) for (let s = t + 1; s < T; s++) for (let c = 0; c < d; c++) x2.data[(b * T + s) * d + c] = fresh.data[(b * T + s) * d + c]!;
          const y2 = attn.forward(x2);
          assertClose(ops.narrow(y2, 1, 0, t + 1), ops.narrow(y, 1, 0, t + 1), 0, 1e-6, `rope=${rope}: positions <= ${t}`);
          assert.ok(ops.narrow(y2, 1, t + 1, T - t - 1).data.some((v, i) => Math.abs(v - ops.narrow(y, 1, t + 1, T - t - 1).data[i]!) > 1e-4), 'later positions change');
        }
      }
      // without the mask the first position sees the future
      const full = new MultiHeadAttention(d, H, { causal: false, maxSeqLen: 8, rng: new Rng(14) });
      const x = randTensor(new Rng(16), [B, T, d]);
      const x2 = ops.concat([ops.narrow(x, 1, 0, 1), randTensor(new Rng(17), [B, T - 1, d])], 1);
      assert.ok(ops.narrow(full.forward(x), 1, 0, 1).data.some((v, i) => Math.abs(v - ops.narrow(full.forward(x2), 1, 0, 1).data[i]!) > 1e-4));
      // dropout acts only in training mode
      const dr = new MultiHeadAttention(d, H, { causal: true, maxSeqLen: 8, dropout: 0.5, rng: new Rng(18) });
      const ya = dr.forward(x);
      const yb = dr.forward(x);
      assert.ok(ya.data.some((v, i) => v !== yb.data[i]), 'training mode drops');
      dr.reseed(5);
      const yc = dr.forward(x);
      dr.reseed(5);
      assert.deepEqual([...dr.forward(x).data], [...yc.data], 'reseed replays the same dropout mask');
      dr.eval();
      assert.deepEqual([...dr.forward(x).data], [...dr.forward(x).data]);
      assert.throws(() => full.forward(randTensor(new Rng(1), [1, 9, 8])), /sequence length 9 exceeds maxSeqLen = 8/);
      assert.throws(() => new MultiHeadAttention(8, 3, { causal: true, maxSeqLen: 4 }), /heads = 3 must be a positive divisor of d = 8/);
      assert.throws(() => new MultiHeadAttention(6, 2, { causal: true, maxSeqLen: 4, rope: true }), /rope needs an even head size, got d \/ heads = 3/);
    });
  });
}

test('attention matches float64 finite differences (causal or not, with and without rope)', () => {
  withBackend('js', () => {
    for (const [causal, rope] of [[true, false], [false, false], [true, true], [false, true]] as const) {
      const attn = new MultiHeadAttention(8, 2, { causal, rope, maxSeqLen: 5, rng: new Rng(19) }).to('float64');
      const x = randTensor(new Rng(20), [2, 4, 8], 'float64');
      checkModule(attn, (t) => attn.forward(t), x, `attention causal=${causal} rope=${rope}`);
    }
  });
});

// PyTorch parity

interface Fixture {
  meta: Record<string, number>;
  [name: string]: { shape: number[]; data: number[] } | Record<string, number>;
}

function fixtureTensor(f: Fixture, key: string, dtype: 'float32' | 'float64'): Tensor {
  const e = f[key] as { shape: number[]; data: number[] } | undefined;
  if (!e || !('shape' in e)) throw new Error(`fixture has no tensor '${key}'`);
  return ops.tensor(dtype === 'float32' ? Float32Array.from(e.data) : Float64Array.from(e.data), e.shape);
}

/** max |a - e| / max |e|. */
function relError(actual: Tensor, expected: Tensor, what: string): number {
  assert.deepEqual(shapeOf(actual), shapeOf(expected), `${what}: shape`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.size; i++) {
    num = Math.max(num, Math.abs(actual.data[i]! - expected.data[i]!));
    den = Math.max(den, Math.abs(expected.data[i]!));
  }
  return den > 0 ? num / den : num;
}

function attentionParity(backend: string, dtype: 'float32' | 'float64', tol: number): void {
  withBackend(backend, () => {
    const f = JSON.parse(readFileSync(new URL('../../test/fixtures/attention.json', import.meta.url), 'utf8')) as Fixture;
    const { T, d, heads, ropeBase } = f.meta as Record<string, number>;
    const attn = new MultiHeadAttention(d!, heads!, { causal: true, rope: true, ropeBase: ropeBase!, maxSeqLen: T! }).to(dtype);
    for (const [name, p] of attn.namedParameters()) {
      const v = fixtureTensor(f, name, dtype);
      assert.deepEqual(shapeOf(p), shapeOf(v), name);
      p.data.set(v.data);
    }
    const x = fixtureTensor(f, 'x', dtype).requireGrad();
    const y = attn.forward(x);
    const L = ops.sum(ops.mul(y, fixtureTensor(f, 'G', dtype)));
    L.backward();
    const checks: Array<[string, Tensor, Tensor]> = [
      ['y', y, fixtureTensor(f, 'y', dtype)],
      ['loss', ops.reshape(L, [1]), fixtureTensor(f, 'loss', dtype)],
      ['grad.x', x.grad!, fixtureTensor(f, 'grad.x', dtype)],
      ...attn.namedParameters().map(([n, p]): [string, Tensor, Tensor] => [`grad.${n}`, p.grad!, fixtureTensor(f, `grad.${n}`, dtype)]),
    ];
    for (const [what, a, e] of checks) {
      const rel = relError(a, e, what);
      assert.ok(rel <= tol, `${what}: relative error ${rel.toExponential(2)} > ${tol}`);
    }
  });
}

for (const backend of backendsUnderTest()) {
  test(`causal rotary attention matches PyTorch in output and every gradient (float32, ${backend})`, () => attentionParity(backend, 'float32', 1e-4));
}
test('causal rotary attention matches PyTorch to float64 precision (js)', () => attentionParity('js', 'float64', 1e-10));

// Transformer blocks

const MOE_FFN: FeedForwardConfig = { type: 'moe', dFF: 6, numExperts: 4, router: { type: 'topk', k: 2 }, seed: 3 };

for (const backend of backendsUnderTest()) {
  test(`transformer block: dense and MoE feed-forward, names, outputs, causality (${backend})`, () => {
    withBackend(backend, () => {
      const base = { dModel: 8, heads: 2, maxSeqLen: 8, causal: true, rope: true, rng: new Rng(21) };
      const dense = transformerBlock({ ...base, ffn: { type: 'mlp', hidden: 12, activation: 'swiglu' } });
      const sparse = transformerBlock({ ...base, norm: 'rms', ffn: MOE_FFN });
      const denseNames = dense.namedParameters().map(([n]) => n);
      assert.deepEqual(denseNames, [
        'norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias', 'attn.proj.weight', 'attn.proj.bias',
        'norm2.weight', 'norm2.bias', 'mlp.w1.weight', 'mlp.w3.weight', 'mlp.w2.weight',
      ]);
      const sparseNames = sparse.namedParameters().map(([n]) => n);
      assert.ok(sparseNames.includes('moe.router.weight') && sparseNames.includes('moe.experts.w1'), sparseNames.join(', '));
      assert.ok(!sparseNames.includes('norm1.bias'), 'RMSNorm has no bias');

      const x = randTensor(new Rng(22), [2, 6, 8]);
      const d = dense.forward(x);
      assert.deepEqual(shapeOf(d.y), [2, 6, 8]);
      assert.equal(d.auxLoss, null);
      assert.equal(d.metrics, null);
      const s = sparse.forward(x);
      assert.deepEqual(shapeOf(s.y), [2, 6, 8]);
      assert.deepEqual(shapeOf(s.auxLoss!), []);
      assert.ok(s.auxLoss!.item() > 0);
      assert.equal(s.metrics!.tokensPerExpert.reduce((a, b) => a + b, 0), 2 * 6 * 2, 'B*T tokens, k=2 each');

      // dropless top-k routes each token on its own, so the MoE block stays causal too
      for (const block of [dense, sparse]) {
        const t = 2;
        const x2 = ops.concat([ops.narrow(x, 1, 0, t + 1), randTensor(new Rng(23), [2, 6 - t - 1, 8])], 1);
        const y1 = noGrad(() => block.forward(x).y);
        const y2 = noGrad(() => block.forward(x2).y);
        assertClose(ops.narrow(y2, 1, 0, t + 1), ops.narrow(y1, 1, 0, t + 1), 0, 1e-6, 'block causality');
      }

      // a ready module can be plugged in; its width must match
      const mlp = new MLP(8, 16);
      assert.equal(new TransformerBlock({ ...base, ffn: mlp }).ffn, mlp);
      assert.throws(() => new TransformerBlock({ ...base, ffn: new MLP(4, 16) }), /ffn MLP has width 4, the block dModel = 8/);
      assert.throws(() => transformerBlock({ ...base, ffn: { type: 'mlp', hidden: 4 }, heads2: 1 } as unknown as Parameters<typeof transformerBlock>[0]), /TransformerBlock: unknown key 'heads2'/);
      assert.throws(() => transformerBlock({ ...base, ffn: { type: 'mlp', hidden: 4, k: 2 } as unknown as FeedForwardConfig }), /TransformerBlock.ffn: unknown key 'k'/);
      assert.throws(() => transformerBlock({ ...base, ffn: { ...MOE_FFN, dModel: 8 } as unknown as FeedForwardConfig }), /ffn.dModel must not be set/);
    });
  });
}

test('transformer blocks match float64 finite differences (dense MLP, and MoE top-2 of 4 with its aux loss)', () => {
  withBackend('js', () => {
    const base = { dModel: 8, heads: 2, maxSeqLen: 4, causal: true, rope: true, rng: new Rng(24) };
    const cases: Array<[string, TransformerBlock]> = [
      ['dense gelu, layer norm', transformerBlock({ ...base, ffn: { type: 'mlp', hidden: 8, bias: true } })],
      ['dense swiglu, rms norm', transformerBlock({ ...base, norm: 'rms', ffn: { type: 'mlp', hidden: 8, activation: 'swiglu' } })],
      ['moe top-2, layer norm', transformerBlock({ ...base, ffn: { type: 'moe', dFF: 5, numExperts: 4, router: { type: 'topk', k: 2 }, seed: 4 } })],
      ['moe top-2 swiglu, rms norm, non-causal', transformerBlock({ ...base, causal: false, norm: 'rms', ffn: { type: 'moe', dFF: 5, numExperts: 4, router: { type: 'topk', k: 2 }, activation: 'swiglu', seed: 5 } })],
    ];
    for (const [what, block] of cases) {
      block.to('float64');
      const x = randTensor(new Rng(25), [2, 3, 8], 'float64');
      // the aux loss rides along as one more output entry so its gradient is checked too
      checkModule(block, (t) => {
        const o = block.forward(t);
        return o.auxLoss ? ops.concat([ops.reshape(o.y, [-1]), ops.reshape(o.auxLoss, [1])]) : o.y;
      }, x, what, 16);
    }
  });
});
