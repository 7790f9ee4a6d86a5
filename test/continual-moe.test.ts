// Continual MoE: growing a layer keeps existing routing, gradients after growth, optimizer state
// extension, frozen experts, the grow schedule's validation, loading checkpoints of another E, and
// a training run that grows and resumes with the same losses as an uninterrupted one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, Tensor, noGrad, ops, withBackend, moe } from '../src/index.js';
import { growMoELayer, growBiasOf, setGrowBias, validateGrowSchedule } from '../src/moe/grow.js';
import { loadWeightsWithGrowth } from '../src/models/checkpoint-growth.js';
import { extendOptimizerState, GrowthController } from '../src/train/growth.js';
import { Adam } from '../src/train/optim.js';
import { lmConfig } from '../src/models/lm.js';
import { validateRun } from '../src/config/run.js';
import { runTraining } from '../src/train/run.js';
import { loadModel } from '../src/models/load.js';
import { assertClose, backendsUnderTest, checkAccumulatedGradients, randTensor } from './helpers.js';

type RouterCfg = moe.RouterConfig;

function layerOf(router: RouterCfg, E = 4, seed = 3): moe.MoELayer {
  const layer = new moe.MoELayer({ dModel: 6, dFF: 5, numExperts: E, router, seed });
  // trained routers have logits of a few units, not the +-0.4 of initialisation
  const w = (layer.router as unknown as { weight: Tensor }).weight;
  for (let i = 0; i < w.size; i++) w.data[i] = w.data[i]! * 8;
  return layer;
}

const GROWABLE: RouterCfg[] = [
  { type: 'topk', k: 2 }, { type: 'topk', k: 2, order: 'topk-softmax' }, { type: 'switch' }, { type: 'topk', k: 4 },
  { type: 'noisy-topk', k: 2 }, { type: 'dynamic', p: 0.6 }, { type: 'differentiable-topk', k: 2 },
];

for (const backend of backendsUnderTest()) {
  for (const router of GROWABLE) {
    test(`growing keeps every token's experts and gates, and the output (${JSON.stringify(router)}, ${backend})`, () => {
      withBackend(backend, () => {
        const layer = layerOf(router).eval();
        const x = randTensor(new Rng(5), [40, 6]);
        const before = noGrad(() => layer.forward(x));
        const r = growMoELayer(layer, { add: 3, seed: 9 });
        assert.deepEqual([r.oldExperts, r.newExperts], [4, 7]);
        const after = noGrad(() => layer.forward(x));
        assert.deepEqual([...after.routing.token], [...before.routing.token], 'tokens of the assignments');
        assert.deepEqual([...after.routing.expert], [...before.routing.expert], 'experts of the assignments');
        assertClose(after.routing.gates, before.routing.gates, 1e-5, 1e-7, 'gates');
        assertClose(after.y, before.y, 1e-4, 1e-6, 'output');
        assert.equal(after.metrics.tokensPerExpert.length, 7);
      });
    });
  }
}

test('growth resizes every expert tensor, registers growBias, and new experts differ from old ones', () => {
  const layer = new moe.MoELayer({ dModel: 4, dFF: 3, numExperts: 2, router: { type: 'noisy-topk', k: 1 }, activation: 'swiglu', bias: true, seed: 1 });
  const w1 = layer.experts.w1;
  const before = layer.numParameters();
  const r = growMoELayer(layer, { add: 2, seed: 4 });
  assert.equal(layer.experts.w1, w1, 'the parameter keeps its identity');
  assert.deepEqual([...w1.shape], [4, 4, 3]);
  assert.deepEqual(r.resized.sort(), ['experts.b1', 'experts.b2', 'experts.w1', 'experts.w2', 'experts.w3', 'router.growBias', 'router.noise.weight', 'router.weight']);
  // per expert: router row 4, noise row 4, w1/w3 4x3, w2 3x4, b1 3, b2 4
  assert.equal(layer.numParameters(), before + 2 * (4 + 4 + 3 * 12 + 3 + 4));
  const names = layer.stateDict().map(([n]) => n);
  assert.ok(names.includes('router.growBias'));
  assert.deepEqual([...growBiasOf(layer.router)!.data], [0, 0, -30, -30]);
  assert.notDeepEqual([...w1.data.slice(24, 36)], [...w1.data.slice(0, 12)]);
  assert.equal(layer.config.numExperts, 4);
  assert.equal(layer.router.numExperts, 4);
  growMoELayer(layer, { add: 1, offset: -5 });
  assert.deepEqual([...growBiasOf(layer.router)!.data], [0, 0, -30, -30, -5]);
  assert.deepEqual([...w1.shape], [5, 4, 3]);
});

test('growth refuses routers whose routing of every token depends on E, and bad options, naming them', () => {
  for (const type of ['hash', 'expert-choice', 'sigmoid-group', 'hierarchical'] as const) {
    const layer = new moe.MoELayer({ dModel: 4, dFF: 3, numExperts: 4, router: { type } as RouterCfg });
    assert.throws(() => growMoELayer(layer, { add: 2 }), new RegExp(`router '${type}' cannot grow`));
  }
  const l = new moe.MoELayer({ dModel: 4, dFF: 3, numExperts: 4 });
  assert.throws(() => growMoELayer(l, { add: 0 }), /add = 0 must be an integer >= 1/);
  assert.throws(() => growMoELayer(l, { add: 1, offset: 3 }), /offset = 3 must be a finite number <= 0/);
  const d = new moe.MoELayer({ dModel: 4, dFF: 3, numExperts: 2, router: { type: 'differentiable-topk', k: 2 } });
  assert.throws(() => growMoELayer(d, { add: 1 }), /k = E = 2 opens every expert/);
  assert.throws(() => setGrowBias(l, 0, 1, 0), /has not grown/);
});

test('gradients after growth (new experts routed) match float64 finite differences', () => {
  withBackend('js', () => {
    for (const router of [{ type: 'topk', k: 2 }, { type: 'switch' }] as RouterCfg[]) {
      const layer = new moe.MoELayer({ dModel: 5, dFF: 4, numExperts: 3, router, bias: true, seed: 2 });
      growMoELayer(layer, { add: 2, seed: 3, initScale: 3 });
      layer.to('float64');
      // a mild offset, so that the new experts win some tokens and their rows get gradients
      setGrowBias(layer, 3, 5, -0.2);
      const x = randTensor(new Rng(1), [9, 5], 'float64').requireGrad();
      const w = randTensor(new Rng(2), [9, 5], 'float64');
      const loss = (): Tensor => {
        const out = layer.forward(x);
        return ops.add(ops.sum(ops.mul(out.y, w)), out.auxLoss);
      };
      const out = noGrad(() => layer.forward(x));
      assert.ok([...out.routing.expert].some((e) => e >= 3), 'some token is routed to a new expert');
      loss().backward();
      checkAccumulatedGradients([...layer.namedParameters(), ['x', x]], loss, { samples: 10, label: router.type });
    }
  });
});

test('the optimizer state is extended with zero rows, old rows kept, and training continues', () => {
  const layer = new moe.MoELayer({ dModel: 4, dFF: 3, numExperts: 2, router: { type: 'topk', k: 1 }, seed: 1 });
  const opt = new Adam(layer.namedParameters(), { lr: 0.01 });
  const x = randTensor(new Rng(1), [8, 4]);
  for (let i = 0; i < 2; i++) {
    ops.sum(layer.forward(x).y).backward();
    opt.step();
    opt.zeroGrad();
  }
  const old = opt.state();
  growMoELayer(layer, { add: 3 });
  const ext = extendOptimizerState(opt, old);
  assert.ok(ext.includes('exp_avg.experts.w1') && ext.includes('exp_avg_sq.router.weight'), ext.join(', '));
  const now = opt.state();
  const m = now['exp_avg.experts.w1']!;
  assert.deepEqual([...m.shape], [5, 4, 3]);
  const n0 = old['exp_avg.experts.w1']!.size;
  assert.deepEqual([...m.data.slice(0, n0)], [...old['exp_avg.experts.w1']!.data]);
  assert.ok(m.data.slice(n0).every((v) => v === 0));
  assert.equal(now['step.experts.w1']!.data[0], 2);
  ops.sum(layer.forward(x).y).backward();
  opt.step();
  assert.ok(layer.experts.w1.data.every(Number.isFinite));
});

test('freezeOld keeps the old experts and their router rows exactly, while new ones train', () => {
  const model = new moe.MoELayer({ dModel: 4, dFF: 3, numExperts: 2, router: { type: 'topk', k: 2 }, seed: 1 });
  const opt = new Adam(model.namedParameters(), { lr: 0.05 });
  const ctl = new GrowthController(model, validateGrowSchedule([{ step: 2, add: 2, freezeOld: true, offset: -1, rampSteps: 2 }], 'grow'), 0);
  const x = randTensor(new Rng(1), [16, 4]);
  const w = randTensor(new Rng(2), [16, 4]);
  let snapshot: number[] = [];
  let newAtGrowth: number[] = [];
  for (let s = 0; s < 8; s++) {
    ctl.beforeStep(s, opt);
    if (s === 2) {
      snapshot = [...model.experts.w1.data.slice(0, 2 * 12), ...(model.router as unknown as { weight: Tensor }).weight.data.slice(0, 8)];
      newAtGrowth = [...model.experts.w1.data.slice(24)];
    }
    const out = model.forward(x);
    ops.add(ops.sum(ops.mul(out.y, w)), out.auxLoss).backward();
    ctl.afterBackward();
    opt.step();
    opt.zeroGrad();
  }
  assert.equal(ctl.frozenExperts, 2);
  assert.deepEqual([...model.experts.w1.data.slice(0, 24), ...(model.router as unknown as { weight: Tensor }).weight.data.slice(0, 8)], snapshot);
  assert.notDeepEqual([...model.experts.w1.data.slice(24)], newAtGrowth, 'new experts trained');
  assert.deepEqual([...growBiasOf(model.router)!.data], [0, 0, 0, 0], 'the offset ramped to 0');
});

test('the grow schedule is validated with errors naming the field', () => {
  const c = lmConfig({ grow: [{ step: 10, add: 2 }] as never });
  assert.deepEqual(c.grow, [{ step: 10, add: 2, freezeOld: false, offset: -30, rampSteps: 50 }]);
  const bad: Array<[unknown, RegExp]> = [
    [{ step: 1 }, /model \(byte-lm\).grow: expected a JSON list/],
    [[{ step: -1, add: 2 }], /grow\[0\].step: expected an integer >= 0, got -1/],
    [[{ step: 1, add: 0 }], /grow\[0\].add: expected an integer >= 1/],
    [[{ step: 1 }], /grow\[0\].add: required/],
    [[{ step: 1, add: 1, freeze: true }], /grow\[0\].freeze: unknown key/],
    [[{ step: 5, add: 1 }, { step: 5, add: 1 }], /grow\[1\].step: 5 must be greater than the previous entry's step 5/],
    [[{ step: 5, add: 1, freezeOld: 'yes' }], /grow\[0\].freezeOld: expected true or false/],
    [[{ step: 5, add: 1, offset: 1 }], /grow\[0\].offset: expected a finite number <= 0/],
  ];
  for (const [v, re] of bad) assert.throws(() => lmConfig({ grow: v as never }), re);
  assert.throws(() => validateRun({ model: { type: 'byte-lm', grow: [{ step: 1, add: 1, x: 1 }] }, data: { dataset: 'udhr' } }), /config.model \(byte-lm\).grow\[0\].x: unknown key/);
});

test('checkpoints with more experts load only with grow, with errors naming the tensor and both shapes', () => {
  const make = (): moe.MoELayer => new moe.MoELayer({ dModel: 4, dFF: 3, numExperts: 2, router: { type: 'topk', k: 1 }, seed: 1 });
  const big = make();
  growMoELayer(big, { add: 2, seed: 5 });
  setGrowBias(big, 2, 4, -3);
  const tensors = new Map(big.stateDict().map(([n, t]) => [n, t] as const));
  assert.throws(() => loadWeightsWithGrowth(make(), tensors), /'router.weight' has shape \[4, 4\] but the model's is \[2, 4\] \(4 experts in the file, 2 in the model\); pass \{ grow: true \}/);
  const small = make();
  const r = loadWeightsWithGrowth(small, tensors, { grow: true });
  assert.deepEqual(r.grown, ['']);
  const x = randTensor(new Rng(3), [6, 4]);
  assertClose(noGrad(() => small.forward(x)).y, noGrad(() => big.forward(x)).y, 0, 0, 'grown and loaded equals the saved layer');
  const smallTensors = new Map(make().stateDict().map(([n, t]) => [n, t] as const));
  assert.throws(() => loadWeightsWithGrowth(big, smallTensors, { grow: true }), /fewer experts \(2 < 4\), and experts are never dropped/);
});

test('moe train with a grow schedule: grows, logs it, and a resumed run repeats the uninterrupted losses', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-grow-'));
  try {
    const text = Array.from({ length: 60 }, (_, i) => `line ${i}: the quick brown fox ${i % 7} jumps over the lazy dog.`).join('\n');
    writeFileSync(join(dir, 'tiny.txt'), text);
    const config = validateRun({
      name: 'grow',
      model: { type: 'byte-lm', dModel: 16, layers: 1, heads: 2, maxSeqLen: 16, numExperts: 2, k: 1, dFF: 16, grow: [{ step: 3, add: 2, freezeOld: true, rampSteps: 2 }] },
      data: { dataset: 'text', path: join(dir, 'tiny.txt'), valFraction: 0.1, testFraction: 0.1, seqLen: 16, stepsPerEpoch: 2, evalWindows: 2 },
      optim: { optimizer: 'adam', lr: 0.01 },
      train: { epochs: 4, batchSize: 4, seed: 1 },
    });
    const lines: string[] = [];
    const straight: number[] = [];
    await runTraining(config, { out: join(dir, 'a'), progress: null, log: (l) => lines.push(l), onStep: (v) => straight.push(v['loss']!) });
    assert.ok(lines.some((l) => /grow at step 3: 1 MoE layer\(s\) from 2 to 4 experts, experts 0..1 frozen/.test(l)), lines.join('\n'));
    const split: number[] = [];
    // stop after epoch 2 (step 4, after the growth at 3): the resume must replay the growth before loading
    await runTraining(config, { out: join(dir, 'b'), progress: null, maxSteps: 4, onStep: (v) => split.push(v['loss']!) });
    await runTraining(config, { out: join(dir, 'b'), resume: join(dir, 'b'), progress: null, onStep: (v) => split.push(v['loss']!) });
    assert.equal(straight.length, 8);
    assert.deepEqual(split, straight);
    // the finished run loads for use (moe generate / predict): grown to 4 experts, growBias included
    const loaded = loadModel(join(dir, 'a'));
    const routers = loaded.model.namedParameters().filter(([n]) => n.endsWith('router.weight'));
    assert.ok(routers.length > 0);
    for (const [n, t] of routers) assert.equal(t.shape[0], 4, n);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
