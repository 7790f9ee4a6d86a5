// Per-MoE-layer records in metrics.jsonl (src/train/layer-log.ts): what moe train logs for each layer, checked against the models' own sums.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { train, type TrainTask } from '../src/train/trainer.js';
import { SGD } from '../src/train/optim.js';
import { constant } from '../src/train/schedule.js';
import { buildModel } from '../src/models/registry.js';
import { add, crossEntropy, rand, randint } from '../src/ops/index.js';
import { MoELayer } from '../src/moe/layer.js';
import { SoftMoELayer } from '../src/moe/soft.js';
import { LayerLog, shareEntropy } from '../src/train/layer-log.js';
import type { Module } from '../src/nn/module.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { Rng } from '../src/tensor/rng.js';

type Classifier = Module & { classify(x: Tensor): { logits: Tensor; auxLoss: Tensor | null; metrics: Record<string, number> } };

/** A classification task over fixed random images; evaluate runs a forward in eval mode (which must not be logged as routing of a step). */
function task(model: Classifier, B: number, pixels: number): TrainTask {
  const x = rand([B, pixels], { rng: new Rng(3) });
  const y = randint([B], 10, { rng: new Rng(4) });
  return {
    model,
    batchesPerEpoch: 2,
    batches: () => [{ x, y }, { x, y }],
    step: (b) => {
      const o = model.classify(b.x);
      const ce = crossEntropy(o.logits, b.y);
      return { loss: o.auxLoss ? add(ce, o.auxLoss) : ce, values: { ...o.metrics, ...(o.auxLoss ? { auxLoss: o.auxLoss.item() } : {}) } };
    },
    evaluate: () => {
      model.eval();
      model.classify(x);
      return { loss: 0 };
    },
  };
}

function run(model: Classifier, B: number, pixels: number): Array<Record<string, any>> {
  const dir = mkdtempSync(join(tmpdir(), 'moe-layerlog-'));
  try {
    const metricsFile = join(dir, 'metrics.jsonl');
    train(task(model, B, pixels), {
      epochs: 2, optimizer: new SGD(model.namedParameters(), { lr: 0.05 }), schedule: constant(0.05), clipNorm: null, seed: 1,
      metricsFile, checkpointDir: null, config: {}, evalEvery: 1, progress: null,
    });
    return readFileSync(metricsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('moe train logs each MoE layer: load per expert, entropies, drops, dead experts and unweighted aux losses', () => {
  const { model } = buildModel({
    type: 'vit-moe', imageSize: 8, patch: 4, dModel: 8, layers: 2, heads: 2, numExperts: 4, k: 2, dFF: 8,
    capacityFactor: 0.5, loadBalanceCoef: 0.01, zLossCoef: 0.001,
  }, 7);
  const B = 6;
  const N = 4; // (8/4)^2 patches
  const records = run(model as Classifier, B, 64);
  const steps = records.filter((r) => r.type === 'step');
  assert.equal(steps.length, 4);
  assert.equal(records.filter((r) => r.type === 'eval').length, 3, 'two validation evaluations and the test one');
  for (const s of steps) {
    assert.deepEqual(Object.keys(s.moe).sort(), ['blocks.0.moe', 'blocks.1.moe']);
    const layers = Object.values(s.moe) as Array<Record<string, any>>;
    for (const l of layers) {
      // every token's k choices counted once: the eval forwards in between did not add to the step's counts
      assert.equal(l.tokensPerExpert.length, 4);
      assert.equal(l.tokensPerExpert.reduce((a: number, b: number) => a + b, 0), B * N * 2);
      // capacity 0.5: some assignments dropped, the kept counts say how many
      assert.ok(l.dropFraction > 0);
      const kept = l.keptPerExpert.reduce((a: number, b: number) => a + b, 0);
      assert.ok(Math.abs(kept - (1 - l.dropFraction) * B * N * 2) < 1e-3, `kept ${kept} vs drop ${l.dropFraction}`);
      assert.ok(l.entropy > 0 && l.entropy <= l.entropyOfMean + 1e-6 && l.entropyOfMean <= Math.log(4) + 1e-6);
      assert.equal(l.deadExperts, l.tokensPerExpert.filter((t: number) => t === 0).length);
      assert.ok(l.loadBalance > 0 && l.zLoss > 0);
    }
    // the model's own layer-averaged scalars agree with the per-layer entries (6 significant digits)
    const mean = (k: string) => layers.reduce((a, l) => a + l[k], 0) / layers.length;
    for (const k of ['entropy', 'entropyOfMean', 'dropFraction', 'loadCV', 'deadExperts']) assert.ok(Math.abs(s[k] - mean(k)) < 1e-4, `${k}: ${s[k]} vs ${mean(k)}`);
    // and the step's auxLoss is the coefficients times the per-layer losses
    const aux = layers.reduce((a, l) => a + 0.01 * l.loadBalance + 0.001 * l.zLoss, 0);
    assert.ok(Math.abs(s.auxLoss - aux) < 1e-5 * Math.max(1, aux), `auxLoss ${s.auxLoss} vs ${aux}`);
  }
  // the hooks are gone after training: forward is the class's again
  for (const [, m] of model.namedModules()) if (m instanceof MoELayer) assert.equal(Object.hasOwn(m, 'forward'), false);
});

test('Soft MoE layers log Csum per expert and the entropy of its share', () => {
  const { model } = buildModel({ type: 'softmoe-classifier', numExperts: 4, patch: 4, imageSize: 8 }, 5);
  const B = 3;
  const steps = run(model as Classifier, B, 64).filter((r) => r.type === 'step');
  assert.equal(steps.length, 4);
  for (const s of steps) {
    const l = s.moe.moe;
    assert.equal(l.combineSumPerExpert.length, 4);
    // C is a softmax over slots for each token: the sums over experts add up to the tokens in the batch
    const total = l.combineSumPerExpert.reduce((a: number, b: number) => a + b, 0);
    assert.ok(Math.abs(total - B * 4) < 1e-3, `sum of Csum ${total}`);
    assert.ok(Math.abs(l.combineEntropy - s.combineEntropy) < 1e-4, `${l.combineEntropy} vs the model's ${s.combineEntropy}`);
  }
  for (const [, m] of model.namedModules()) if (m instanceof SoftMoELayer) assert.equal(Object.hasOwn(m, 'forward'), false);
});

test('LayerLog: nothing to take before a training forward; a dense model has no layers; shareEntropy edge cases', () => {
  const { model } = buildModel({ type: 'vit-moe', imageSize: 8, patch: 4, dModel: 8, layers: 1, heads: 2, numExperts: 1, k: 1, dFF: 4 }, 1);
  const log = new LayerLog(model);
  assert.equal(log.size, 1);
  assert.equal(log.take(), null);
  model.eval();
  (model as Classifier).classify(rand([2, 64], { rng: new Rng(1) }));
  assert.equal(log.take(), null, 'eval forwards are not logged');
  model.train();
  (model as Classifier).classify(rand([2, 64], { rng: new Rng(1) }));
  const e = log.take()!['blocks.0.moe']!;
  assert.deepEqual(e['tokensPerExpert'], [8]); // E = 1: every token to the one expert
  assert.equal(e['entropyOfMean'], 0);
  assert.equal(log.take(), null, 'take starts afresh');
  log.stop();
  const dense = buildModel({ type: 'vit-moe', imageSize: 8, patch: 4, dModel: 8, layers: 1, heads: 2, ffn: 'dense', dFF: 4 }, 1).model;
  assert.equal(new LayerLog(dense).size, 0);
  assert.ok(Number.isNaN(shareEntropy([0, 0])));
  assert.ok(Math.abs(shareEntropy([1, 1, 1, 1]) - Math.log(4)) < 1e-12);
  assert.equal(shareEntropy([5]), 0);
});
