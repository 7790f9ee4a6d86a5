// SwitchHead attention-MoE: the forward against a plain-loop reference written here (both backends),
// output and every gradient against a PyTorch fixture (reference/switchhead_attention_fixture.py),
// gradients against float64 finite differences, edge cases (T = 1, E = 1, k = E), the block and
// byte-LM wiring with KV-cached decoding equal to the full forward, and config errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Rng, Tensor, noGrad, ops, withBackend } from '../src/index.js';
import { SwitchHead, planHeadExperts } from '../src/moe/attention/switchhead.js';
import { transformerBlock } from '../src/models/block.js';
import { ByteLM, generate, lmConfig } from '../src/models/lm.js';
import { forwardCached, newByteLMCache } from '../src/models/lm-kv.js';
import { buildModel } from '../src/models/registry.js';
import { assertClose, backendsUnderTest, checkAccumulatedGradients, randTensor } from './helpers.js';

interface Dims { H: number; hd: number; E: number; k: number }

/** SwitchHead by its formula, one token, head and expert at a time (causal, no rotary). */
function reference(m: SwitchHead, x: Tensor): number[] {
  const [B, T, d] = x.shape as [number, number, number];
  const { heads: H, headDim: hd, experts: E, topK: k } = m;
  const X = Array.from(x.data);
  const W = (t: Tensor): number[] => Array.from(t.data);
  const [wq, wk, ws, wd, wv, wo] = [m.q.weight, m.k.weight, m.valueGate.weight, m.outputGate.weight, m.wv, m.wo].map(W) as number[][];
  const row = (b: number, t: number): number[] => X.slice((b * T + t) * d, (b * T + t + 1) * d);
  const dot = (w: number[], r: number, xs: number[]): number => xs.reduce((s, v, c) => s + w[r * d + c]! * v, 0);
  const sig = (z: number): number => 1 / (1 + Math.exp(-z));
  const top = (s: number[]): number[] => s.map((v, e) => [v, e] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map(([, e]) => e);
  const y = new Array<number>(B * T * d).fill(0);
  for (let b = 0; b < B; b++) {
    const q: number[][][] = []; // [t][h][i]
    const kk: number[][][] = [];
    const v: number[][][] = [];
    for (let t = 0; t < T; t++) {
      const xt = row(b, t);
      q.push([]); kk.push([]); v.push([]);
      for (let h = 0; h < H; h++) {
        q[t]!.push(Array.from({ length: hd }, (_, i) => dot(wq!, h * hd + i, xt)));
        kk[t]!.push(Array.from({ length: hd }, (_, i) => dot(wk!, h * hd + i, xt)));
        const s = Array.from({ length: E }, (_, e) => sig(dot(ws!, h * E + e, xt)));
        const vh = new Array<number>(hd).fill(0);
        for (const e of top(s)) {
          for (let i = 0; i < hd; i++) for (let c = 0; c < d; c++) vh[i] += s[e]! * xt[c]! * wv![((h * E + e) * d + c) * hd + i]!;
        }
        v[t]!.push(vh);
      }
    }
    for (let t = 0; t < T; t++) {
      const xt = row(b, t);
      for (let h = 0; h < H; h++) {
        const sc = Array.from({ length: t + 1 }, (_, j) => q[t]![h]!.reduce((s, qi, i) => s + qi * kk[j]![h]![i]!, 0) / Math.sqrt(hd));
        const mx = Math.max(...sc);
        const p = sc.map((z) => Math.exp(z - mx));
        const Z = p.reduce((a, c) => a + c, 0);
        const a = new Array<number>(hd).fill(0);
        for (let j = 0; j <= t; j++) for (let i = 0; i < hd; i++) a[i] += (p[j]! / Z) * v[j]![h]![i]!;
        const o = Array.from({ length: E }, (_, e) => sig(dot(wd!, h * E + e, xt)));
        for (const e of top(o)) {
          for (let c = 0; c < d; c++) for (let i = 0; i < hd; i++) y[(b * T + t) * d + c] += o[e]! * a[i]! * wo![((h * E + e) * hd + i) * d + c]!;
        }
      }
    }
  }
  return y;
}

const make = (d: number, dims: Dims, seed: number, extra: { rope?: boolean; maxSeqLen?: number } = {}): SwitchHead =>
  new SwitchHead(d, { heads: dims.H, headDim: dims.hd, experts: dims.E, k: dims.k, causal: true, maxSeqLen: extra.maxSeqLen ?? 8, rope: extra.rope ?? false, rng: new Rng(seed) });

// gate weights scaled up so that gates spread over (0, 1) and the top-k choice is far from ties
function spreadGates(m: SwitchHead): void {
  for (const g of [m.valueGate.weight, m.outputGate.weight]) for (let i = 0; i < g.size; i++) g.data[i] = g.data[i]! * 4;
}

const CASES: Array<[string, Dims, number]> = [
  ['H 2, E 4, k 2', { H: 2, hd: 3, E: 4, k: 2 }, 5],
  ['E 1 (k 1)', { H: 2, hd: 4, E: 1, k: 1 }, 5],
  ['k = E = 3', { H: 3, hd: 2, E: 3, k: 3 }, 5],
  ['T = 1', { H: 2, hd: 3, E: 4, k: 1 }, 1],
];

for (const backend of backendsUnderTest()) {
  test(`SwitchHead forward equals the plain-loop reference (${backend})`, () => {
    withBackend(backend, () => {
      for (const [what, dims, T] of CASES) {
        const m = make(6, dims, 3);
        spreadGates(m);
        const x = randTensor(new Rng(4), [2, T, 6]);
        const y = noGrad(() => m.forward(x));
        assert.deepEqual([...y.shape], [2, T, 6], what);
        assertClose(y, reference(m, x), 1e-4, 1e-5, `${what} (${backend})`);
        // every (token, head) chose k experts of each gate
        for (const u of [m.lastUsage!.value, m.lastUsage!.output]) assert.ok(Math.abs(u.reduce((a, b) => a + b, 0) - dims.H) < 1e-9, `${what}: usage sums to H`);
      }
    });
  });
}

test('SwitchHead forward equals the reference to float64 precision (js)', () => {
  withBackend('js', () => {
    const m = make(6, { H: 2, hd: 3, E: 4, k: 2 }, 7).to('float64');
    spreadGates(m);
    const x = randTensor(new Rng(8), [2, 5, 6], 'float64');
    assertClose(noGrad(() => m.forward(x)), reference(m, x), 1e-12, 1e-12, 'float64');
  });
});

test('top-k plan: k largest per token and head, rows sorted by group, ties to the lower expert', () => {
  // N = 2 tokens, H = 2, E = 3
  const gates = [0.1, 0.9, 0.5, /* h1 */ 0.7, 0.7, 0.2, /* n1 h0 */ 0.3, 0.2, 0.1, /* h1 */ 0.0, 0.5, 0.6];
  const p = planHeadExperts(gates, 2, 2, 3, 2);
  // chosen: n0 h0 {1, 2}, n0 h1 {0, 1} (tie 0.7 = 0.7: the lower expert first), n1 h0 {0, 1}, n1 h1 {2, 1}; group g = 3 h + e
  assert.deepEqual([...p.sizes], [1, 2, 1, 1, 2, 1]);
  // group order: g0: n1; g1: n0, n1; g2: n0; g3: n0; g4: n0, n1; g5: n1
  assert.deepEqual([...p.token], [1, 0, 1, 0, 0, 0, 1, 1]);
  assert.deepEqual([...p.head], [0, 0, 0, 0, 1, 1, 1, 1]);
  assert.deepEqual([...p.gate], [6, 1, 7, 2, 3, 4, 10, 11]);
  // a tie between the k-th and (k+1)-th: the lower expert wins
  assert.deepEqual([...planHeadExperts([0.5, 0.5, 0.5], 1, 1, 3, 1).sizes], [1, 0, 0]);
});

interface Fixture { meta: Record<string, number>; [name: string]: { shape: number[]; data: number[] } | Record<string, number> }

for (const [backend, dtype, tol] of [...backendsUnderTest().map((b) => [b, 'float32', 1e-4] as const), ['js', 'float64', 1e-10] as const]) {
  test(`SwitchHead matches PyTorch in output and every gradient (${dtype}, ${backend})`, () => {
    withBackend(backend, () => {
      const f = JSON.parse(readFileSync(new URL('../../test/fixtures/switchhead_attention.json', import.meta.url), 'utf8')) as Fixture;
      const t = (key: string): Tensor => {
        const e = f[key] as { shape: number[]; data: number[] };
        return ops.tensor(dtype === 'float32' ? Float32Array.from(e.data) : Float64Array.from(e.data), e.shape);
      };
      const { T, d, heads, headDim, experts, k, ropeBase } = f.meta as Record<string, number>;
      const m = new SwitchHead(d!, { heads: heads!, headDim: headDim!, experts: experts!, k: k!, causal: true, rope: true, ropeBase: ropeBase!, maxSeqLen: T! }).to(dtype);
      for (const [name, p] of m.namedParameters()) {
        assert.deepEqual([...p.shape], [...t(name).shape], name);
        p.data.set(t(name).data);
      }
      const x = t('x').requireGrad();
      const y = m.forward(x);
      const L = ops.sum(ops.mul(y, t('G')));
      L.backward();
      const checks: Array<[string, Tensor, Tensor]> = [['y', y, t('y')], ['grad.x', x.grad!, t('grad.x')],
        ...m.namedParameters().map(([n, p]): [string, Tensor, Tensor] => [`grad.${n}`, p.grad!, t(`grad.${n}`)])];
      assert.ok(Math.abs(L.item() - t('loss').data[0]!) <= tol * Math.abs(t('loss').data[0]!) + tol, 'loss');
      for (const [what, a, e] of checks) {
        let num = 0;
        let den = 0;
        for (let i = 0; i < e.size; i++) { num = Math.max(num, Math.abs(a.data[i]! - e.data[i]!)); den = Math.max(den, Math.abs(e.data[i]!)); }
        assert.ok(num <= tol * den, `${what}: relative error ${(num / den).toExponential(2)} > ${tol}`);
      }
    });
  });
}

test('SwitchHead gradients of the input and every parameter match float64 finite differences (incl. T = 1, E = 1, k = E)', () => {
  withBackend('js', () => {
    for (const [what, dims, T] of CASES) {
      const m = make(5, dims, 11, { rope: dims.hd % 2 === 0 }).to('float64');
      spreadGates(m);
      const x = randTensor(new Rng(12), [2, T, 5], 'float64').requireGrad();
      const w = randTensor(new Rng(13), [2, T, 5], 'float64');
      const loss = (): Tensor => ops.sum(ops.mul(m.forward(x), w));
      m.zeroGrad();
      loss().backward();
      checkAccumulatedGradients([...m.namedParameters(), ['x', x]], loss, { samples: 8, label: what });
    }
  });
});

for (const backend of backendsUnderTest()) {
  test(`byte LM with SwitchHead attention: KV-cached decoding equals the full forward; generate agrees with and without the cache (${backend})`, () => {
    withBackend(backend, () => {
      for (const positions of ['rope', 'learned'] as const) {
        const lm = new ByteLM({
          dModel: 16, layers: 2, heads: 4, maxSeqLen: 12, numExperts: 2, k: 1, dFF: 8, positions,
          attention: { type: 'switchhead', heads: 2, experts: 3, k: 2 },
        }, 3);
        for (const b of lm.blocks) spreadGates(b.attn as SwitchHead);
        lm.eval();
        const ids = Int32Array.from({ length: 10 }, (_, i) => (i * 37 + 11) % 256);
        const full = noGrad(() => lm.forward(new Tensor(ids, [1, 10])).logits); // [1, 10, 256]
        const cache = newByteLMCache(lm);
        assert.equal(cache.heads, 2);
        const rows = [forwardCached(lm, ids.subarray(0, 4), cache)];
        for (let t = 4; t < 10; t++) rows.push(forwardCached(lm, ids.subarray(t, t + 1), cache));
        assertClose(ops.reshape(ops.concat(rows, 0), [1, 10, 256]), full, 1e-4, 1e-5, `cached vs full (${positions}, ${backend})`);
        const prompt = Uint8Array.from([72, 105]);
        assert.deepEqual([...generate(lm, prompt, { maxNewTokens: 8 })], [...generate(lm, prompt, { maxNewTokens: 8, useCache: false })], `${positions}: generate`);
      }
    });
  });
}

test('block and byte-LM wiring: parameter names, a training step, active parameters, config errors', () => {
  const block = transformerBlock({ dModel: 8, heads: 2, maxSeqLen: 6, causal: true, ffn: { type: 'mlp', hidden: 8 }, attention: { type: 'switchhead', experts: 3, k: 1 }, rng: new Rng(1) });
  assert.ok(block.attn instanceof SwitchHead);
  assert.deepEqual(block.namedParameters().map(([n]) => n).filter((n) => n.startsWith('attn.')),
    ['attn.wv', 'attn.wo', 'attn.q.weight', 'attn.k.weight', 'attn.valueGate.weight', 'attn.outputGate.weight']);
  const lm = new ByteLM({ dModel: 16, layers: 2, heads: 2, maxSeqLen: 8, numExperts: 2, k: 1, dFF: 8, attention: { type: 'switchhead', experts: 4, k: 1 } }, 1);
  const att = lm.blocks[0]!.attn as SwitchHead;
  // a token uses k = 1 of E = 4 value and output experts per head: 3/4 of wv and wo idle (against k = E)
  const allActive = new ByteLM({ ...lm.config, attention: { type: 'switchhead', experts: 4, k: 4 } }, 1);
  assert.equal(allActive.totalParameters(), lm.totalParameters());
  assert.equal(allActive.activeParameters() - lm.activeParameters(), lm.blocks.length * 0.75 * (att.wv.size + att.wo.size));
  const ids = new Tensor(Int32Array.from({ length: 16 }, (_, i) => (i * 13) % 256), [2, 8]);
  const out = lm.forward(ids);
  ops.sum(out.logits).backward();
  assert.ok(att.wv.grad!.data.some((v) => v !== 0) && att.valueGate.weight.grad!.data.some((v) => v !== 0), 'experts and gates train');
  assert.deepEqual(lmConfig({ attention: { type: 'switchhead' } }).attention, { type: 'switchhead', experts: 4, k: 2 });
  assert.throws(() => lmConfig({ attention: { type: 'switchhead', experts: 2, k: 3 } }), /model \(byte-lm\)\.attention\.k: 3 must be at most experts = 2/);
  assert.throws(() => lmConfig({ attention: { type: 'switchhead', expert: 2 } as never }), /model \(byte-lm\)\.attention\.expert: unknown key/);
  assert.throws(() => lmConfig({ attention: { type: 'moa' } as never }), /model \(byte-lm\)\.attention\.type: expected one of mha, switchhead/);
  assert.throws(() => lmConfig({ attention: { type: 'mha', heads: 2 } as never }), /model \(byte-lm\)\.attention\.heads: unknown key for type 'mha'/);
  assert.throws(() => lmConfig({ dModel: 16, attention: { type: 'switchhead', heads: 3 } }), /attention\.heads: 3 must divide dModel = 16/);
  assert.throws(() => new SwitchHead(8, { heads: 2, experts: 2, k: 1, causal: true, maxSeqLen: 4 }).forward(randTensor(new Rng(1), [1, 5, 8])), /sequence length 5 exceeds maxSeqLen = 4/);
  assert.throws(() => new SwitchHead(8, { heads: 2, experts: 0, k: 1, causal: true, maxSeqLen: 4 }), /SwitchHead: experts = 0 must be an integer/);
  assert.throws(() => new SwitchHead(8, { heads: 2, experts: 2, k: 1, causal: true, maxSeqLen: 4, kk: 1 } as never), /SwitchHead: unknown key 'kk'/);
  assert.throws(() => transformerBlock({ dModel: 8, heads: 2, maxSeqLen: 6, causal: true, bias: true, ffn: { type: 'mlp', hidden: 8 }, attention: { type: 'switchhead' } }), /bias: true is not supported by switchhead/);
});

test('the size check\'s parameter estimate counts SwitchHead attention', () => {
  for (const attention of [{ type: 'switchhead' }, { type: 'switchhead', heads: 2, headDim: 16, experts: 3, k: 1 }]) {
    const { model, spec, options } = buildModel({ type: 'byte-lm', dModel: 64, layers: 2, attention }, 0);
    const estimate = spec.estimate(options).reduce((s, t) => s + t.count, 0);
    assert.equal(estimate, model.numParameters(), JSON.stringify(attention));
  }
});
