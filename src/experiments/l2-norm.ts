// Experiment 2 of Chung et al. (2024): can a Soft MoE regress t(X) = ||X||_2, the Euclidean norm of
// the flattened token matrix? One wide expert against n = 2, 4, 8, 16 narrower experts with the same
// expert parameters, on seeded Gaussian data; train and test error against training steps.
//
// Readout: a learned linear map (with bias) from the flattened layer output [m*d] to a scalar. The
// paper's Theorem 1 says a single expert with one slot cannot represent t however powerful the
// expert: its only input is one convex combination of the tokens (the slot), and every output row
// is the same f(slot), so whatever is lost in that combination is lost for any readout. A learned
// linear readout is the most generous cheap choice (it contains "sum the outputs" as one setting),
// so a single expert that still fails does so for the reason the theorem gives, not for a weak head.
//
// With one slot per expert, n experts are also n slots. The control "n=1 p=P" (one expert of the full
// width that sees P slots) tells the two apart: it has n=1's parameters and n=P's slot count.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Module } from '../nn/module.js';
import { Linear } from '../nn/linear.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { add, mseLoss, mul, relu, reshape } from '../ops/index.js';
import { SoftMoELayer } from '../moe/soft.js';
import { deriveSeed } from '../data/batches.js';
import { Adam } from '../train/optim.js';
import { Progress } from '../train/progress.js';
import { writeFileAtomic } from '../io/atomic.js';
import { lineChart, writePlot } from '../report/plot.js';
import { markdownTable } from '../report/table.js';
import { checkIntList, checkPositiveInt, checkPositiveNumber, ExperimentOptionError, formatSeconds, rejectUnknownOptions } from './common.js';

const NAME = 'l2-norm';

export interface L2NormOptions {
  /** Fewer steps (1000), for a first look. */
  quick?: boolean;
  out?: string;
  seed?: number;
  /** Token count m and token width d of each X (default 4 x 8). */
  tokens?: number;
  dim?: number;
  /** Expert counts; 1 is the single wide expert (default 1, 2, 4, 8, 16). */
  ns?: number[];
  /** Total expert hidden width: n experts of width totalHidden / n (default 128). */
  totalHidden?: number;
  trainSize?: number;
  testSize?: number;
  steps?: number;
  batchSize?: number;
  lr?: number;
  /** Evaluate train and test error every this many steps (default steps / 40, rounded). */
  evalEvery?: number;
  /**
   * Controls that separate "more experts" from "more slots": one expert of the full width that sees p
   * slots, for each p here (default [16], the slot count of the largest n; [] for none).
   */
  oneExpertSlots?: number[];
  /** Also train a dense MLP on the flattened X as a reference (default true). */
  denseReference?: boolean;
  progress?: boolean;
  log?: (line: string) => void;
  command?: string;
}

export interface L2NormConfig {
  seed: number;
  tokens: number;
  dim: number;
  ns: number[];
  totalHidden: number;
  trainSize: number;
  testSize: number;
  steps: number;
  batchSize: number;
  lr: number;
  evalEvery: number;
  oneExpertSlots: number[];
  denseReference: boolean;
  quick: boolean;
}

/** One evaluation of one model. Errors are mean squared errors; `relative` divides by the variance of t on the test set. */
export interface L2NormRecord {
  /** 'softmoe' or the dense 'mlp' reference (n and slots are null for it). */
  model: 'softmoe' | 'mlp';
  n: number | null;
  /** Slots per expert (1 for the paper's models; p for the one-expert controls). */
  slots: number | null;
  hidden: number;
  step: number;
  trainError: number;
  testError: number;
  trainRelative: number;
  testRelative: number;
}

export interface L2NormResult {
  dataset: 'synthetic-gaussian';
  config: L2NormConfig;
  /** Mean and variance of t on the test set: the error of predicting the mean is this variance. */
  target: { mean: number; variance: number };
  models: { model: 'softmoe' | 'mlp'; n: number | null; slots: number | null; hidden: number; expertParameters: number; parameters: number; seconds: number }[];
  records: L2NormRecord[];
  seconds: number;
  out: string;
}

const KNOWN = ['quick', 'out', 'seed', 'tokens', 'dim', 'ns', 'totalHidden', 'trainSize', 'testSize', 'steps', 'batchSize', 'lr', 'evalEvery', 'oneExpertSlots', 'denseReference', 'progress', 'log', 'command'] as const;

export function resolveL2NormOptions(opts: L2NormOptions): { config: L2NormConfig; out: string } {
  rejectUnknownOptions(NAME, opts, KNOWN);
  const quick = opts.quick ?? false;
  const steps = checkPositiveInt(NAME, 'steps', opts.steps ?? (quick ? 1000 : 6000));
  const totalHidden = checkPositiveInt(NAME, 'totalHidden', opts.totalHidden ?? 128);
  const ns = checkIntList(NAME, 'ns', opts.ns ?? [1, 2, 4, 8, 16]);
  for (const n of ns) {
    if (totalHidden % n !== 0) throw new ExperimentOptionError(NAME, 'ns', `n = ${n} does not divide totalHidden = ${totalHidden} (experts must share the width exactly)`);
  }
  const oneExpertSlots = opts.oneExpertSlots ?? [Math.max(...ns)];
  if (!Array.isArray(oneExpertSlots)) throw new ExperimentOptionError(NAME, 'oneExpertSlots', `must be a list of slot counts, got ${JSON.stringify(oneExpertSlots)}`);
  const config: L2NormConfig = {
    seed: checkPositiveInt(NAME, 'seed', opts.seed ?? 0, 0),
    tokens: checkPositiveInt(NAME, 'tokens', opts.tokens ?? 4, 2),
    dim: checkPositiveInt(NAME, 'dim', opts.dim ?? 8),
    ns,
    totalHidden,
    trainSize: checkPositiveInt(NAME, 'trainSize', opts.trainSize ?? 8192),
    testSize: checkPositiveInt(NAME, 'testSize', opts.testSize ?? 2048),
    steps,
    batchSize: checkPositiveInt(NAME, 'batchSize', opts.batchSize ?? 128),
    lr: checkPositiveNumber(NAME, 'lr', opts.lr ?? 3e-3),
    evalEvery: checkPositiveInt(NAME, 'evalEvery', opts.evalEvery ?? Math.max(1, Math.round(steps / 40))),
    oneExpertSlots: oneExpertSlots.length > 0 ? checkIntList(NAME, 'oneExpertSlots', oneExpertSlots, 2) : [],
    denseReference: opts.denseReference ?? true,
    quick,
  };
  if (typeof config.denseReference !== 'boolean') throw new ExperimentOptionError(NAME, 'denseReference', `must be true or false, got ${JSON.stringify(config.denseReference)}`);
  const out = opts.out ?? join('runs', 'experiments', `${NAME}${quick ? '-quick' : ''}`);
  return { config, out };
}

/** N Gaussian token matrices [N, m, d] and their norms t(X) [N, 1]. */
export function gaussianNormData(N: number, m: number, d: number, rng: Rng): { x: Float32Array; t: Float32Array } {
  const x = new Float32Array(N * m * d);
  rng.fillNormal(x);
  const t = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    let s = 0;
    for (let j = i * m * d; j < (i + 1) * m * d; j++) s += x[j]! * x[j]!;
    t[i] = Math.sqrt(s);
  }
  return { x, t };
}

interface Regressor extends Module {
  predict(x: Tensor): Tensor;
}

/**
 * t has mean ~sqrt(m*d) and a small spread, so a head starting near 0 would spend its first steps
 * learning the mean; predicting mu + sigma * head(X) with the training set's mu and sigma (fixed, not
 * learned) makes step 0 start near the predict-the-mean error and leaves the representation question
 * untouched.
 */
class Standardized extends Module implements Regressor {
  constructor(readonly inner: Regressor, readonly mu: number, readonly sigma: number) {
    super();
    this.module('inner', inner);
  }
  predict(x: Tensor): Tensor {
    return add(mul(this.inner.predict(x), this.sigma), this.mu);
  }
}

/** Soft MoE layer (p slots per expert, ReLU experts without biases) and a linear readout of its flattened output. */
class SoftMoERegressor extends Module implements Regressor {
  readonly moe: SoftMoELayer;
  readonly readout: Linear;
  constructor(readonly m: number, d: number, n: number, slots: number, hidden: number, seed: number) {
    super();
    const rng = new Rng(seed);
    this.moe = this.module('moe', new SoftMoELayer({ dModel: d, numExperts: n, slotsPerExpert: slots, dFF: hidden, activation: 'relu', bias: false, normalize: true, seed: rng.nextU32() }));
    this.readout = this.module('readout', new Linear(m * d, 1, { rng }));
  }
  predict(x: Tensor): Tensor {
    const B = x.shape[0]!;
    return this.readout.forward(reshape(this.moe.forward(x).y, [B, x.shape[1]! * x.shape[2]!]));
  }
}

/** The reference: a dense ReLU MLP on the flattened X, hidden width totalHidden. */
class DenseRegressor extends Module implements Regressor {
  readonly l1: Linear;
  readonly l2: Linear;
  constructor(inFeatures: number, hidden: number, seed: number) {
    super();
    const rng = new Rng(seed);
    this.l1 = this.module('l1', new Linear(inFeatures, hidden, { rng }));
    this.l2 = this.module('l2', new Linear(hidden, 1, { rng }));
  }
  predict(x: Tensor): Tensor {
    const B = x.shape[0]!;
    return this.l2.forward(relu(this.l1.forward(reshape(x, [B, x.size / B]))));
  }
}

function slice(data: { x: Float32Array; t: Float32Array }, idx: ArrayLike<number>, m: number, d: number): { x: Tensor; t: Tensor } {
  const B = idx.length;
  const xs = new Float32Array(B * m * d);
  const ts = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const i = idx[b]!;
    xs.set(data.x.subarray(i * m * d, (i + 1) * m * d), b * m * d);
    ts[b] = data.t[i]!;
  }
  return { x: new Tensor(xs, [B, m, d]), t: new Tensor(ts, [B, 1]) };
}

function mseOver(model: Regressor, data: { x: Float32Array; t: Float32Array }, N: number, m: number, d: number): number {
  const chunk = 1024;
  let se = 0;
  noGrad(() => {
    for (let s = 0; s < N; s += chunk) {
      const idx = Array.from({ length: Math.min(chunk, N - s) }, (_, i) => s + i);
      const { x, t } = slice(data, idx, m, d);
      const p = model.predict(x).data;
      for (let i = 0; i < idx.length; i++) se += (p[i]! - t.data[i]!) ** 2;
    }
  });
  return se / N;
}

export async function runL2Norm(opts: L2NormOptions = {}): Promise<L2NormResult> {
  const { config: c, out } = resolveL2NormOptions(opts);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const t0 = performance.now();
  mkdirSync(out, { recursive: true });
  const { tokens: m, dim: d } = c;
  const train = gaussianNormData(c.trainSize, m, d, new Rng(deriveSeed(c.seed, 1)));
  const test = gaussianNormData(c.testSize, m, d, new Rng(deriveSeed(c.seed, 2)));
  const tMuTrain = train.t.reduce((a, b) => a + b, 0) / c.trainSize;
  const tSdTrain = Math.sqrt(train.t.reduce((a, b) => a + (b - tMuTrain) ** 2, 0) / c.trainSize);
  const tMean = test.t.reduce((a, b) => a + b, 0) / c.testSize;
  const tVar = test.t.reduce((a, b) => a + (b - tMean) ** 2, 0) / c.testSize;
  log(`${NAME}: X in R^{${m}x${d}} with N(0, 1) entries, t(X) = ||X||_2 (test mean ${tMean.toFixed(3)}, variance ${tVar.toFixed(4)}); ${c.trainSize} train / ${c.testSize} test; ${c.steps} steps of Adam (lr ${c.lr}, batch ${c.batchSize})`);

  type Plan = { model: 'softmoe' | 'mlp'; n: number | null; slots: number | null; hidden: number; build: () => Regressor; expertParameters: number };
  const softmoe = (n: number, slots: number): Plan => ({
    model: 'softmoe', n, slots, hidden: c.totalHidden / n, build: () => new SoftMoERegressor(m, d, n, slots, c.totalHidden / n, c.seed), expertParameters: 2 * d * c.totalHidden,
  });
  const plan: Plan[] = [...c.ns.map((n) => softmoe(n, 1)), ...c.oneExpertSlots.map((p) => softmoe(1, p))];
  if (c.denseReference) plan.push({ model: 'mlp', n: null, slots: null, hidden: c.totalHidden, build: () => new DenseRegressor(m * d, c.totalHidden, c.seed), expertParameters: 0 });

  const records: L2NormRecord[] = [];
  const models: L2NormResult['models'] = [];
  for (const p of plan) {
    const label = `${modelLabel(p)} (h=${p.hidden})`;
    const ts = performance.now();
    const model = new Standardized(p.build(), tMuTrain, tSdTrain);
    const opt = new Adam(model.namedParameters(), { lr: c.lr });
    const rng = new Rng(deriveSeed(c.seed, 3));
    const progress = (opts.progress ?? true) ? new Progress(c.steps, { label }) : null;
    const evaluate = (step: number) => {
      const trainError = mseOver(model, train, c.trainSize, m, d);
      const testError = mseOver(model, test, c.testSize, m, d);
      records.push({ model: p.model, n: p.n, slots: p.slots, hidden: p.hidden, step, trainError, testError, trainRelative: trainError / tVar, testRelative: testError / tVar });
    };
    evaluate(0);
    let order = rng.permutation(c.trainSize);
    let at = 0;
    for (let step = 1; step <= c.steps; step++) {
      if (at + c.batchSize > c.trainSize) { order = rng.permutation(c.trainSize); at = 0; }
      const { x, t } = slice(train, order.subarray(at, at + c.batchSize), m, d);
      at += c.batchSize;
      const loss = mseLoss(model.predict(x), t);
      const lv = loss.item();
      if (!Number.isFinite(lv)) throw new Error(`${NAME}: ${label} diverged at step ${step} (loss ${lv})`);
      loss.backward();
      opt.step();
      opt.zeroGrad();
      if (step % c.evalEvery === 0 || step === c.steps) evaluate(step);
      progress?.update(step, { loss: lv });
    }
    progress?.done();
    const last = records[records.length - 1]!;
    const seconds = (performance.now() - ts) / 1000;
    models.push({ model: p.model, n: p.n, slots: p.slots, hidden: p.hidden, expertParameters: p.expertParameters, parameters: model.numParameters(), seconds });
    log(`${label}: after ${c.steps} steps train MSE ${last.trainError.toFixed(4)} (${(100 * last.trainRelative).toFixed(1)}% of Var t), test MSE ${last.testError.toFixed(4)} (${(100 * last.testRelative).toFixed(1)}%), ${formatSeconds(seconds)}`);
  }
  const result: L2NormResult = {
    dataset: 'synthetic-gaussian', config: c, target: { mean: tMean, variance: tVar }, models, records, seconds: (performance.now() - t0) / 1000, out,
  };
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), l2NormMarkdown(result, opts.command));
  const rows = records.flatMap((r) => [
    { step: r.step, error: r.trainRelative, model: modelLabel(r), split: 'train' },
    { step: r.step, error: r.testRelative, model: modelLabel(r), split: 'test' },
  ]);
  await writePlot(join(out, 'error-vs-steps'), lineChart({
    title: 'Regressing ||X||_2: MSE / Var(t) against steps',
    x: { field: 'step', title: 'training step' },
    y: { field: 'error', title: 'MSE / Var(t)  (1 = predicting the mean)', scale: 'log' },
    series: 'model', dash: 'split', data: rows.filter((r) => r.error > 0), width: 560, height: 340,
  }));
  return result;
}

/** "n=4", "n=1 p=16" (one expert, 16 slots) or "dense MLP". */
function modelLabel(r: { model: 'softmoe' | 'mlp'; n: number | null; slots: number | null }): string {
  if (r.model === 'mlp') return 'dense MLP';
  return r.slots !== null && r.slots > 1 ? `n=${r.n} p=${r.slots}` : `n=${r.n}`;
}

const sameModel = (a: { model: string; n: number | null; slots: number | null }, b: { model: string; n: number | null; slots: number | null }) =>
  a.model === b.model && a.n === b.n && a.slots === b.slots;

export function l2NormMarkdown(r: L2NormResult, command?: string): string {
  const c = r.config;
  const lines: string[] = [`# Representing ||X||_2 with a Soft MoE`, ''];
  if (command) lines.push('Command:', '', '```', command, '```', '');
  lines.push(`Data: X in R^{${c.tokens}x${c.dim}} (${c.tokens} tokens of width ${c.dim}) with independent N(0, 1) entries, t(X) = ||X||_2 of the flattened X; ${c.trainSize} training and ${c.testSize} test examples (seed ${c.seed}). `
    + `On the test set t has mean ${r.target.mean.toFixed(3)} and variance ${r.target.variance.toFixed(4)}; "relative" errors divide the MSE by that variance, so 1 is the error of always predicting the mean.`, '');
  lines.push(`Model: one Soft MoE layer (one slot per expert, normalised routing, experts Linear(${c.dim}->h)-ReLU-Linear(h->${c.dim}) without biases, h = ${c.totalHidden}/n so every n has the same ${2 * c.dim * c.totalHidden} expert parameters) and a learned linear readout from the flattened ${c.tokens}x${c.dim} output to a scalar; `
    + `${c.steps} steps of Adam (lr ${c.lr}, batch ${c.batchSize}), MSE loss.${c.denseReference ? ` The dense MLP (flattened X -> ${c.totalHidden} ReLU -> 1) is a reference for how well this data lets the function be learned at all, not a Soft MoE.` : ''} `
    + `Predictions are mu + sigma * head(X) with the training set's mean and standard deviation of t (fixed), so every model starts near the predict-the-mean error.`, '');
  lines.push(`Theorem 1 of the paper: with a single expert (one slot), the expert only ever sees one convex combination of the tokens and every output row is the same f(slot), so no expert and no readout can recover ||X||_2 exactly. `
    + `With one slot per expert, n experts also means n slots, so this comparison at fixed expert parameters (the paper's) does not by itself separate "more experts" from "more slots"`
    + (c.oneExpertSlots.length > 0
      ? `; the rows "n=1 p=P" are the control: one expert of the full width h = ${c.totalHidden} (the parameters of n=1) that sees P slots, so it has as many slots as n=P experts but a single shared function.`
      : '.'), '');
  const finals = r.models.map((m) => {
    const recs = r.records.filter((x) => sameModel(x, m));
    const last = recs[recs.length - 1]!;
    const bestTest = Math.min(...recs.map((x) => x.testRelative));
    return [m.model === 'mlp' ? 'dense MLP' : `Soft MoE ${modelLabel(m)}`, m.hidden, m.parameters, last.trainError.toFixed(4), last.testError.toFixed(4),
      last.trainRelative.toFixed(4), last.testRelative.toFixed(4), bestTest.toFixed(4), formatSeconds(m.seconds)];
  });
  lines.push(`Time: ${formatSeconds(r.seconds)} for the whole study on this machine.`, '');
  lines.push(`## After ${c.steps} steps`, '');
  lines.push(markdownTable(['model', 'h', 'parameters', 'train MSE', 'test MSE', 'train rel.', 'test rel.', 'best test rel.', 'time'], finals,
    { align: ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'] }));
  lines.push('', '## Test error (relative) against steps', '');
  const steps = [...new Set(r.records.map((x) => x.step))].sort((a, b) => a - b);
  const pick = steps.filter((_, i) => i % Math.max(1, Math.ceil(steps.length / 10)) === 0 || i === steps.length - 1);
  lines.push(markdownTable(['step', ...r.models.map(modelLabel)],
    pick.map((s) => [String(s), ...r.models.map((m) => r.records.find((x) => sameModel(x, m) && x.step === s)?.testRelative.toFixed(4) ?? '')]),
    { align: ['r', ...r.models.map(() => 'r' as const)] }));
  lines.push('', '![error against steps](error-vs-steps.png)', '');
  return `${lines.join('\n')}\n`;
}
