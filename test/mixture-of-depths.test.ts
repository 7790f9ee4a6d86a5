// Mixture-of-Depths: the capacity and top-c selection, a routed block against the plain block run on
// the chosen tokens, skipped tokens unchanged, gradients against float64 finite differences (with a
// dense and an MoE feed-forward), edge cases and config errors; the predictor of the top-c choice
// (stop-gradient, trained by BCE), causal selection, and KV-cached decoding equal to the full forward.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend } from '../src/index.js';
import { transformerBlock, type BlockSpec } from '../src/models/block.js';
import { depthCapacityTokens, selectTopC } from '../src/nn/mixture-of-depths.js';
import { ByteLM, lmConfig, generate } from '../src/models/lm.js';
import { forwardCached, newByteLMCache } from '../src/models/lm-kv.js';
import { assertClose, backendsUnderTest, checkAccumulatedGradients, randTensor } from './helpers.js';

const base = (extra: Partial<BlockSpec> = {}): BlockSpec => ({
  dModel: 8, heads: 2, maxSeqLen: 16, causal: true, ffn: { type: 'mlp', hidden: 12 }, norm: 'rms', rng: new Rng(1), ...extra,
});

test('capacity in tokens and top-c selection (ties to the earlier position, chosen rows in time order)', () => {
  assert.equal(depthCapacityTokens(0.5, 10), 5);
  assert.equal(depthCapacityTokens(0.25, 10), 3);
  assert.equal(depthCapacityTokens(0.01, 10), 1);
  assert.equal(depthCapacityTokens(1, 7), 7);
  assert.equal(depthCapacityTokens(0.5, 0), 0);
  assert.deepEqual([...selectTopC([0.1, 0.9, 0.5, 0.9, -1, 3, 2, 2], 2, 4, 2)], [1, 3, 5, 6]);
  assert.deepEqual([...selectTopC([0, 0, 0], 1, 3, 2)], [0, 1]);
});

for (const backend of backendsUnderTest()) {
  test(`a routed block equals the plain block on the chosen tokens, scaled by sigmoid(r); skipped tokens pass unchanged (${backend})`, () => {
    withBackend(backend, () => {
      const [B, T, d] = [3, 10, 8];
      const mod = transformerBlock(base({ depthCapacity: 0.4 }));
      const plain = transformerBlock(base());
      const w = mod.depth!.weight;
      const rw = randTensor(new Rng(4), [1, d]);
      w.data.set(rw.data);
      const x = randTensor(new Rng(2), [B, T, d]);
      const y = noGrad(() => mod.forward(x)).y;
      const sel = mod.depth!.lastSelection!;
      assert.equal(sel.C, 4);
      const chosen = new Set(sel.rows);
      const xs = new Tensor(Float32Array.from([...sel.rows].flatMap((r) => [...x.data.slice(r * d, (r + 1) * d)])), [B, sel.C, d]);
      const ys = noGrad(() => plain.forward(xs)).y;
      for (let r = 0; r < B * T; r++) {
        const row = y.data.slice(r * d, (r + 1) * d);
        const xr = x.data.slice(r * d, (r + 1) * d);
        if (!chosen.has(r)) { assert.deepEqual([...row], [...xr], `row ${r} skipped: unchanged`); continue; }
        const i = [...sel.rows].indexOf(r);
        let score = 0;
        for (let j = 0; j < d; j++) score += xr[j]! * rw.data[j]!;
        const g = 1 / (1 + Math.exp(-score));
        const want = Array.from(xr, (v, j) => v + g * (ys.data[i * d + j]! - xs.data[i * d + j]!));
        assertClose(row, want, 1e-4, 1e-5, `row ${r}`);
      }
      // the chosen tokens of each sequence are its top 4 scores
      for (let b = 0; b < B; b++) {
        const scores = Array.from({ length: T }, (_, t) => { let s = 0; for (let j = 0; j < d; j++) s += x.data[(b * T + t) * d + j]! * rw.data[j]!; return s; });
        const top = scores.map((s, t) => [s, t] as const).sort((a, c) => c[0] - a[0]).slice(0, 4).map(([, t]) => b * T + t).sort((a, c) => a - c);
        assert.deepEqual([...sel.rows.slice(b * 4, b * 4 + 4)], top);
      }
    });
  });
}

test('gradients of a routed block (dense and MoE feed-forward) match float64 finite differences', () => {
  withBackend('js', () => {
    for (const ffn of [{ type: 'mlp', hidden: 6 }, { type: 'moe', dFF: 5, numExperts: 3, router: { type: 'topk', k: 2 } }] as const) {
      const block = transformerBlock(base({ dModel: 6, ffn, depthCapacity: 0.5 })).to('float64');
      // distinct scores, so that a finite-difference step does not change the selection
      block.depth!.weight.data.set(randTensor(new Rng(5), [1, 6], 'float64', -2, 2).data);
      const x = randTensor(new Rng(1), [2, 5, 6], 'float64').requireGrad();
      const w = randTensor(new Rng(2), [2, 5, 6], 'float64');
      const loss = (): Tensor => {
        const o = block.forward(x);
        const l = ops.sum(ops.mul(o.y, w));
        return o.auxLoss ? ops.add(l, o.auxLoss) : l;
      };
      loss().backward();
      assert.ok(block.depth!.weight.grad!.data.some((v) => v !== 0), 'the depth router trains');
      checkAccumulatedGradients([...block.namedParameters(), ['x', x]], loss, { samples: 6, label: ffn.type });
    }
  });
});

test('T = 1, tiny capacities and hash routing inside a routed block', () => {
  const block = transformerBlock(base({ depthCapacity: 0.1, ffn: { type: 'moe', dFF: 4, numExperts: 4, router: { type: 'hash' } } }));
  for (const T of [1, 3]) {
    const x = randTensor(new Rng(T), [2, T, 8]);
    const out = block.forward(x, { tokenIds: Int32Array.from({ length: 2 * T }, (_, i) => i) });
    assert.deepEqual([...out.y.shape], [2, T, 8]);
    assert.equal(block.depth!.lastSelection!.C, 1);
    assert.ok(out.y.data.every(Number.isFinite));
  }
});

test('config errors name the field; a MoD byte LM trains a step and generates without the cache', () => {
  assert.throws(() => transformerBlock(base({ depthCapacity: 0.5, rope: true })), /depthCapacity = 0.5 needs rope: false/);
  assert.throws(() => transformerBlock(base({ depthCapacity: 0 })), /capacity = 0 must be in \(0, 1\]/);
  assert.throws(() => lmConfig({ depthCapacity: 0.5 }), /model \(byte-lm\).depthCapacity = 0.5 needs positions: 'learned'/);
  assert.throws(() => lmConfig({ depthCapacity: 1.5, positions: 'learned' }), /depthCapacity: 1.5 is above the maximum 1/);
  const lm = new ByteLM({ dModel: 16, layers: 2, heads: 2, maxSeqLen: 16, numExperts: 2, k: 1, dFF: 8, positions: 'learned', depthCapacity: 0.5 }, 1);
  assert.equal(lm.blocks[0]!.depth, null, 'block 0 is full depth (depthEvery 2)');
  assert.ok(lm.blocks[1]!.depth);
  const ids = new Tensor(Int32Array.from({ length: 32 }, (_, i) => 97 + (i % 7)), [2, 16]);
  const out = lm.forward(ids);
  ops.sum(out.logits).backward();
  assert.ok(lm.blocks[1]!.depth!.weight.grad);
  const g = generate(lm, new TextEncoder().encode('abc'), { maxNewTokens: 4 });
  assert.equal(g.length, 7);
});

test('depth predictor: its BCE joins the aux loss, no gradient reaches the residual stream, it learns the top-c choice', () => {
  withBackend('js', () => {
    const x = randTensor(new Rng(3), [2, 8, 8]).requireGrad();
    const plain = transformerBlock(base({ depthCapacity: 0.5 }));
    const withPred = transformerBlock(base({ depthCapacity: 0.5, depthPredictor: true }));
    plain.depth!.weight.data.set(randTensor(new Rng(4), [1, 8]).data);
    // same weights for every shared parameter (the predictor's are extra)
    const shared = new Map(plain.namedParameters());
    for (const [n, p] of withPred.namedParameters()) if (shared.has(n)) p.data.set(shared.get(n)!.data);
    assert.equal(plain.forward(x).auxLoss, null);
    const o = withPred.forward(x);
    assert.ok(o.auxLoss !== null && o.auxLoss.item() > 0, 'predictor loss');
    ops.sum(plain.forward(x).y).backward();
    const gPlain = Float32Array.from(x.grad!.data);
    x.zeroGrad();
    ops.add(ops.sum(withPred.forward(x).y), withPred.forward(x).auxLoss!).backward();
    assertClose(x.grad!, gPlain, 1e-5, 1e-6, 'x.grad unchanged by the predictor');
    // a few Adam-free SGD steps on the predictor alone: its loss falls and it agrees with top-c on most tokens
    const pred = withPred.depth!.predictor!;
    const first = withPred.forward(x).auxLoss!.item();
    for (let i = 0; i < 60; i++) {
      pred.zeroGrad();
      withPred.forward(x).auxLoss!.backward();
      for (const p of pred.parameters()) for (let j = 0; j < p.size; j++) p.data[j] -= 0.5 * p.grad!.data[j]!;
    }
    assert.ok(withPred.forward(x).auxLoss!.item() < 0.5 * first, 'the predictor learns');
    const topc = new Set(withPred.depth!.lastSelection!.rows);
    withPred.depth!.selection = 'causal';
    noGrad(() => withPred.forward(x));
    const causal = withPred.depth!.lastSelection!;
    let agree = 0;
    for (let r = 0; r < 16; r++) agree += Number(topc.has(r) === [...causal.rows].includes(r));
    assert.ok(agree >= 14, `causal choice agrees with top-c on ${agree} of 16 tokens`);
  });
});

for (const backend of backendsUnderTest()) {
  test(`causal selection: ragged sequences equal one sequence at a time, and a token's output does not depend on later tokens (${backend})`, () => {
    withBackend(backend, () => {
      const block = transformerBlock(base({ depthCapacity: 0.5, depthPredictor: true }));
      block.depth!.weight.data.set(randTensor(new Rng(6), [1, 8]).data);
      block.depth!.selection = 'causal';
      block.eval();
      const x = randTensor(new Rng(7), [3, 9, 8]);
      const y = noGrad(() => block.forward(x).y);
      const counts = block.depth!.lastSelection!.counts;
      assert.ok(new Set(counts).size > 1 && counts.every((c) => c < 9), `ragged partial choice: ${[...counts].join(', ')}`);
      for (let b = 0; b < 3; b++) {
        const one = noGrad(() => block.forward(ops.narrow(x, 0, b, 1)).y);
        assertClose(one, ops.narrow(y, 0, b, 1), 1e-5, 1e-6, `sequence ${b}`);
        const prefix = noGrad(() => block.forward(ops.narrow(ops.narrow(x, 0, b, 1), 1, 0, 5)).y);
        assertClose(prefix, ops.narrow(ops.narrow(y, 0, b, 1), 1, 0, 5), 1e-5, 1e-6, `sequence ${b}: prefix`);
      }
      assert.throws(() => { const p = transformerBlock(base({ depthCapacity: 0.5 })); p.depth!.selection = 'causal'; p.forward(x); }, /causal selection needs the predictor/);
    });
  });

  test(`MoD byte LM with predictors: KV-cached decoding equals the full forward in causal selection; generate uses the cache (${backend})`, () => {
    withBackend(backend, () => {
      const lm = new ByteLM({ dModel: 16, layers: 2, heads: 2, maxSeqLen: 16, numExperts: 2, k: 1, dFF: 8, positions: 'learned', depthCapacity: 0.5, depthEvery: 1, depthPredictor: true }, 2);
      for (const [i, b] of lm.blocks.entries()) {
        b.depth!.weight.data.set(randTensor(new Rng(10 + i), [1, 16]).data);
        // an untrained predictor reads the tiny embeddings through its biases only: widen it so its choice varies by token
        const p = b.depth!.predictor!;
        p.fc1.weight.data.set(randTensor(new Rng(20 + i), [16, 16], 'float32', -20, 20).data);
        p.fc1.bias!.data.fill(0);
        p.fc2.bias!.data.fill(0);
      }
      lm.eval();
      const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 53 + 7) % 256);
      for (const b of lm.blocks) b.depth!.selection = 'causal';
      const full = noGrad(() => lm.forward(new Tensor(ids, [1, 12])).logits);
      const chosen = lm.blocks.map((b) => b.depth!.lastSelection!.rows.length);
      assert.ok(chosen.some((c) => c > 0 && c < 12), `some block runs part of the tokens: ${chosen.join(', ')}`);
      const cache = newByteLMCache(lm);
      const rows = [forwardCached(lm, ids.subarray(0, 5), cache)];
      for (let t = 5; t < 12; t++) rows.push(forwardCached(lm, ids.subarray(t, t + 1), cache));
      assert.deepEqual(lm.blocks.map((_, l) => cache.layerLength(l)), chosen, 'each layer cached its chosen tokens only');
      assertClose(ops.reshape(ops.concat(rows, 0), [1, 12, 256]), full, 1e-4, 1e-5, `cached vs full (${backend})`);
      for (const b of lm.blocks) b.depth!.selection = 'top-c';
      const prompt = Uint8Array.from([72, 105]);
      assert.deepEqual([...generate(lm, prompt, { maxNewTokens: 6 })], [...generate(lm, prompt, { maxNewTokens: 6, useCache: false })]);
      assert.ok(lm.blocks.every((b) => b.depth!.selection === 'top-c'), 'generate restores the selection mode');
      assert.throws(() => lmConfig({ depthPredictor: true }), /depthPredictor: needs depthCapacity < 1/);
    });
  });
}
