// Test helper: real run directories (config.json + metrics.jsonl written by the trainer) of tiny classifiers on MNIST digits, for the dashboard tests.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { train, type TrainTask } from '../src/train/trainer.js';
import { Adam } from '../src/train/optim.js';
import { constant } from '../src/train/schedule.js';
import { buildModel } from '../src/models/registry.js';
import { loadMnistDigits } from '../src/data/mnist.js';
import { add, crossEntropy, tensor } from '../src/ops/index.js';
import type { Module } from '../src/nn/module.js';
import type { Tensor } from '../src/tensor/tensor.js';

type Classifier = Module & { classify(x: Tensor): { logits: Tensor; auxLoss: Tensor | null; metrics: Record<string, number> } };

let digits: ReturnType<typeof loadMnistDigits> | null = null;

/** Trains `model` (a classifier config) for `steps` batches of MNIST digits into dir, as moe train would lay it out; returns the model. */
export function trainRun(dir: string, model: { type: string } & Record<string, unknown>, opts: { steps: number; batch?: number; lr?: number; seed?: number }): Module {
  digits ??= loadMnistDigits();
  const set = digits.train;
  const B = opts.batch ?? 32;
  const pixels = set.rows * set.cols;
  const batch = (i: number) => {
    const x = new Float32Array(B * pixels);
    const y = new Int32Array(B);
    for (let b = 0; b < B; b++) {
      const n = (i * B + b) % set.n;
      x.set(set.images.subarray(n * pixels, (n + 1) * pixels), b * pixels);
      y[b] = set.labels[n]!;
    }
    return { x: tensor(x, [B, pixels]), y: tensor(y, [B]) };
  };
  const built = buildModel(model, opts.seed ?? 1);
  const m = built.model as Classifier;
  const perEpoch = Math.max(1, Math.ceil(opts.steps / 2));
  const task: TrainTask = {
    model: m,
    batchesPerEpoch: perEpoch,
    batches: (e) => Array.from({ length: perEpoch }, (_, i) => batch(e * perEpoch + i)),
    step: (b) => {
      const o = m.classify(b.x);
      const ce = crossEntropy(o.logits, b.y);
      const pred = o.logits.data;
      let right = 0;
      for (let r = 0; r < B; r++) {
        let best = 0;
        for (let c = 1; c < 10; c++) if (pred[r * 10 + c]! > pred[r * 10 + best]!) best = c;
        if (best === b.y.data[r]) right++;
      }
      return {
        loss: o.auxLoss ? add(ce, o.auxLoss) : ce,
        values: { taskLoss: ce.item(), ...(o.auxLoss ? { auxLoss: o.auxLoss.item() } : {}), accuracy: right / B, ...o.metrics },
      };
    },
    evaluate: () => null,
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify({ name: 'dashboard-test', model: { ...built.options, type: model.type } }, null, 1)}\n`);
  const lr = opts.lr ?? 0.003;
  train(task, {
    epochs: 2, optimizer: new Adam(m.namedParameters(), { lr }), schedule: constant(lr), clipNorm: 1, seed: opts.seed ?? 1,
    metricsFile: join(dir, 'metrics.jsonl'), checkpointDir: null, config: {}, evalEvery: 0, progress: null,
  });
  return m;
}
