// Multi-task classification: several label sets over the same images (Fashion-MNIST's 10 classes
// and a 4-way coarse grouping), trained as a weighted sum of per-task cross-entropies.

import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { add, crossEntropy, mul } from '../ops/index.js';
import { IndexBatches, type ImageSet } from '../data/batches.js';
import type { Module } from '../nn/module.js';
import { FASHION_MNIST_CLASSES, FASHION_MNIST_COARSE, FASHION_MNIST_COARSE_CLASSES } from '../data/mnist.js';
import { gateStats } from '../models/mmoe.js';
import { accuracyOf, type ImageSplits } from './tasks.js';
import type { StepOutput, TaskBatch, TrainTask } from './trainer.js';

/** One task's labels for every example of a split. */
export interface TaskLabels {
  name: string;
  classes: number;
  labels: Int32Array;
  classNames?: readonly string[];
}

// The coarse grouping is a fact of the dataset (data/mnist.ts), so models/load.ts names the coarse
// head's classes without importing training code; re-exported here where the tasks are built.
export { FASHION_MNIST_COARSE, FASHION_MNIST_COARSE_CLASSES };

/** Fashion-MNIST labels [n] -> the two tasks 'fine' (the 10 classes) and 'coarse' (FASHION_MNIST_COARSE). */
export function fashionMnistTasks(labels: Int32Array): TaskLabels[] {
  const coarse = new Int32Array(labels.length);
  for (let i = 0; i < labels.length; i++) {
    const c = FASHION_MNIST_COARSE[labels[i]!];
    if (c === undefined) throw new Error(`fashionMnistTasks: label ${labels[i]} at index ${i} is not a Fashion-MNIST class (0..9)`);
    coarse[i] = c;
  }
  return [
    { name: 'fine', classes: 10, labels, classNames: FASHION_MNIST_CLASSES },
    { name: 'coarse', classes: 4, labels: coarse, classNames: FASHION_MNIST_COARSE_CLASSES },
  ];
}

/** What the task needs from a model: one logits tensor per task, in task order; gates if it has them (MMoE). */
export interface MultiTaskModel extends Module {
  forward(x: Tensor): { logits: Tensor[]; gates?: Tensor[] };
  /** The heads the model was built with; when present they must match the data's tasks by name and class count. */
  readonly tasks?: readonly { name: string; classes: number }[];
}

export interface MultiTaskOptions {
  batchSize: number;
  seed: number;
  /** Derives every task's labels from a split's labels (default fashionMnistTasks). */
  tasks?: (labels: Int32Array) => TaskLabels[];
  /** Loss weight per task, in task order (default 1 each). */
  weights?: readonly number[];
  /** Batch size for evaluation (default 1000). */
  evalBatchSize?: number;
}

interface MultiTaskSet {
  images: ImageSet;
  tasks: TaskLabels[];
}

/** A multi-task batch: x [B, pixels], y [B, T] int32 (row b holds example b's label for each task). */
export type MultiTaskBatch = TaskBatch;

export class MultiTaskClassificationTask implements TrainTask {
  readonly batchesPerEpoch: number;
  readonly taskNames: readonly string[];
  readonly weights: readonly number[];
  private readonly order: IndexBatches;
  private readonly train: MultiTaskSet;
  private readonly val: MultiTaskSet | null;
  private readonly test: MultiTaskSet;
  private readonly evalBatchSize: number;

  constructor(readonly model: MultiTaskModel, data: ImageSplits, opts: MultiTaskOptions) {
    const derive = opts.tasks ?? fashionMnistTasks;
    const make = (images: ImageSet, split: string): MultiTaskSet => {
      const tasks = derive(images.labels);
      for (const t of tasks) {
        if (t.labels.length !== images.n) throw new Error(`MultiTaskClassificationTask: task '${t.name}' has ${t.labels.length} labels for ${images.n} ${split} examples`);
      }
      return { images, tasks };
    };
    this.train = make(data.train, 'train');
    this.val = data.val ? make(data.val, 'val') : null;
    this.test = make(data.test, 'test');
    this.taskNames = Object.freeze(this.train.tasks.map((t) => t.name));
    const T = this.taskNames.length;
    if (T === 0) throw new Error('MultiTaskClassificationTask: no tasks');
    const heads = model.tasks;
    const describe = (ts: readonly { name: string; classes: number }[]) => ts.map((t) => `${t.name} (${t.classes})`).join(', ');
    if (heads && (heads.length !== T || heads.some((h, i) => h.name !== this.train.tasks[i]!.name || h.classes !== this.train.tasks[i]!.classes))) {
      throw new Error(`MultiTaskClassificationTask: the model's tasks [${describe(heads)}] do not match the data's tasks [${describe(this.train.tasks)}]`);
    }
    this.weights = Object.freeze(opts.weights ? [...opts.weights] : new Array<number>(T).fill(1));
    if (this.weights.length !== T || this.weights.some((w) => !(Number.isFinite(w) && w >= 0))) {
      throw new Error(`MultiTaskClassificationTask: weights must be ${T} non-negative numbers (tasks ${this.taskNames.join(', ')}), got [${this.weights.join(', ')}]`);
    }
    // the same seeded order as ImageClassificationTask's BatchIterator, so runs compare batch for batch
    this.order = new IndexBatches(data.train.n, { batchSize: opts.batchSize, shuffle: true, seed: opts.seed, dropLast: false });
    this.batchesPerEpoch = this.order.batchesPerEpoch;
    this.evalBatchSize = opts.evalBatchSize ?? 1000;
  }

  *batches(epoch: number): Iterable<MultiTaskBatch> {
    for (const idx of this.order.epochIndices(epoch)) yield gather(this.train, idx);
  }

  step(batch: MultiTaskBatch): StepOutput {
    const out = this.forward(batch.x);
    const values: Record<string, number> = {};
    let loss: Tensor | null = null;
    let accSum = 0;
    for (let t = 0; t < this.taskNames.length; t++) {
      const name = this.taskNames[t]!;
      const labels = column(batch.y, t);
      const ce = crossEntropy(out.logits[t]!, labels);
      const w = this.weights[t]!;
      const term = w === 1 ? ce : mul(ce, w);
      loss = loss ? add(loss, term) : term;
      const acc = accuracyOf(out.logits[t]!, labels);
      accSum += acc;
      values[`${name}.loss`] = ce.item();
      values[`${name}.accuracy`] = acc;
      const g = out.gates?.[t];
      if (g) {
        const s = gateStats(g);
        values[`${name}.gateEntropy`] = s.entropy;
        values[`${name}.gateEntropyOfMean`] = s.entropyOfMean;
      }
    }
    values['taskLoss'] = loss!.item();
    values['accuracy'] = accSum / this.taskNames.length; // the progress bar's 'acc'
    return { loss: loss!, values };
  }

  /** Per-task loss and accuracy ('fine.loss', 'fine.accuracy', ...), their means as 'loss' and 'accuracy', and gate entropies. */
  evaluate(split: 'val' | 'test'): Record<string, number> | null {
    const set = split === 'val' ? this.val : this.test;
    return set ? this.evaluateSet(set) : null;
  }

  /** Mean gate per expert for each task over a split: [T][E] (empty when the model has no gates). */
  meanGates(split: 'train' | 'val' | 'test'): number[][] {
    const set = split === 'train' ? this.train : split === 'val' ? this.val : this.test;
    if (!set) return [];
    const sums: number[][] = [];
    this.forEachEvalBatch(set, (out, _y, n) => {
      out.gates?.forEach((g, t) => {
        const m = gateStats(g).meanGate;
        sums[t] ??= new Array<number>(m.length).fill(0);
        m.forEach((v, e) => { sums[t]![e]! += v * n; });
      });
    });
    return sums.map((s) => s.map((v) => v / set.images.n));
  }

  private forward(x: Tensor): { logits: Tensor[]; gates?: Tensor[] } {
    const out = this.model.forward(x);
    if (out.logits.length !== this.taskNames.length) {
      throw new Error(`MultiTaskClassificationTask: the model returned ${out.logits.length} logits tensors for ${this.taskNames.length} tasks (${this.taskNames.join(', ')})`);
    }
    this.train.tasks.forEach((t, i) => {
      const c = out.logits[i]!.shape[1];
      if (c !== t.classes) throw new Error(`MultiTaskClassificationTask: task '${t.name}' has ${t.classes} classes but the model's head ${i} gives ${c} logits`);
    });
    return out;
  }

  private forEachEvalBatch(set: MultiTaskSet, fn: (out: { logits: Tensor[]; gates?: Tensor[] }, y: Tensor, n: number) => void): void {
    const wasTraining = this.model.training;
    this.model.eval();
    const it = new IndexBatches(set.images.n, { batchSize: this.evalBatchSize, shuffle: false });
    try {
      noGrad(() => {
        for (const idx of it.epochIndices(0)) {
          const b = gather(set, idx);
          fn(this.forward(b.x), b.y, idx.length);
        }
      });
    } finally {
      this.model.train(wasTraining);
    }
  }

  private evaluateSet(set: MultiTaskSet): Record<string, number> {
    const T = this.taskNames.length;
    const loss = new Array<number>(T).fill(0);
    const correct = new Array<number>(T).fill(0);
    const entropy = new Array<number>(T).fill(0);
    let hasGates = false;
    this.forEachEvalBatch(set, (out, y, n) => {
      for (let t = 0; t < T; t++) {
        const labels = column(y, t);
        loss[t]! += crossEntropy(out.logits[t]!, labels).item() * n;
        correct[t]! += accuracyOf(out.logits[t]!, labels) * n;
        const g = out.gates?.[t];
        if (g) { hasGates = true; entropy[t]! += gateStats(g).entropy * n; }
      }
    });
    const n = Math.max(set.images.n, 1);
    const res: Record<string, number> = {};
    let lossMean = 0;
    let accMean = 0;
    this.taskNames.forEach((name, t) => {
      res[`${name}.loss`] = loss[t]! / n;
      res[`${name}.accuracy`] = correct[t]! / n;
      if (hasGates) res[`${name}.gateEntropy`] = entropy[t]! / n;
      lossMean += loss[t]! / n / T;
      accMean += correct[t]! / n / T;
    });
    res['loss'] = lossMean;
    res['accuracy'] = accMean;
    return res;
  }
}

/** Task t's labels of a batch, as an int32 [B] tensor. */
function column(y: Tensor, t: number): Tensor {
  const [B, T] = y.shape as [number, number];
  const out = new Int32Array(B);
  for (let b = 0; b < B; b++) out[b] = y.data[b * T + t]!;
  return new Tensor(out, [B]);
}

function gather(set: MultiTaskSet, idx: Int32Array): MultiTaskBatch {
  const img = set.images;
  const d = img.channels * img.rows * img.cols;
  const T = set.tasks.length;
  const B = idx.length;
  const x = new Float32Array(B * d);
  const y = new Int32Array(B * T);
  for (let k = 0; k < B; k++) {
    const i = idx[k]!;
    x.set(img.images.subarray(i * d, (i + 1) * d), k * d);
    for (let t = 0; t < T; t++) y[k * T + t] = set.tasks[t]!.labels[i]!;
  }
  return { x: new Tensor(x, [B, d]), y: new Tensor(y, [B, T]) };
}
