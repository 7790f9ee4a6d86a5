// Training tasks: how batches become losses and metrics for each kind of model.

import type { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { add, crossEntropy } from '../ops/index.js';
import { BatchIterator, type ImageSet } from '../data/batches.js';
import type { ImageClassifier } from '../models/registry.js';
import type { StepOutput, TaskBatch, TrainTask } from './trainer.js';

export interface ImageSplits {
  train: ImageSet;
  val: ImageSet | null;
  test: ImageSet;
}

/** Fraction of rows whose arg-max logit equals the label. */
export function accuracyOf(logits: Tensor, labels: Tensor): number {
  const [B, C] = logits.shape as [number, number];
  if (B === 0) return 0;
  let correct = 0;
  const l = logits.data;
  for (let b = 0; b < B; b++) {
    let best = 0;
    for (let c = 1; c < C; c++) if (l[b * C + c]! > l[b * C + best]!) best = c;
    if (best === labels.data[b]) correct++;
  }
  return correct / B;
}

export class ImageClassificationTask implements TrainTask {
  private readonly it: BatchIterator;
  readonly batchesPerEpoch: number;

  constructor(readonly model: ImageClassifier, readonly data: ImageSplits, batchSize: number, seed: number,
    private readonly evalBatchSize = 1000) {
    this.it = new BatchIterator(data.train, { batchSize, shuffle: true, seed, dropLast: false });
    this.batchesPerEpoch = Math.ceil(data.train.n / batchSize);
  }

  batches(epoch: number): Iterable<TaskBatch> {
    return this.it.epoch(epoch);
  }

  step(batch: TaskBatch): StepOutput {
    const { logits, auxLoss, metrics } = this.model.classify(batch.x);
    const taskLoss = crossEntropy(logits, batch.y);
    const loss = auxLoss ? add(taskLoss, auxLoss) : taskLoss;
    return {
      loss,
      values: { taskLoss: taskLoss.item(), ...(auxLoss ? { auxLoss: auxLoss.item() } : {}), accuracy: accuracyOf(logits, batch.y), ...metrics },
    };
  }

  /** Mean loss and accuracy over a whole split, in eval mode, without recording gradients. */
  evaluateSet(set: ImageSet): { loss: number; accuracy: number } {
    this.model.eval();
    const it = new BatchIterator(set, { batchSize: this.evalBatchSize, shuffle: false });
    let loss = 0;
    let correct = 0;
    noGrad(() => {
      for (const b of it.epoch(0)) {
        const { logits } = this.model.classify(b.x);
        const n = b.y.size;
        loss += crossEntropy(logits, b.y).item() * n;
        correct += accuracyOf(logits, b.y) * n;
      }
    });
    return { loss: loss / Math.max(set.n, 1), accuracy: correct / Math.max(set.n, 1) };
  }

  evaluate(split: 'val' | 'test'): Record<string, number> | null {
    const set = split === 'val' ? this.data.val : this.data.test;
    return set ? { ...this.evaluateSet(set) } : null;
  }
}
