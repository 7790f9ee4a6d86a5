// The language-modelling task: random byte windows for training, fixed non-overlapping windows
// for evaluation, mean next-byte cross-entropy (nats) and bits per byte.
//
// B = batch, T = seqLen, V = 256.

import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { add, crossEntropy, reshape } from '../ops/index.js';
import { deriveSeed, randomWindows } from '../data/batches.js';
import { BYTE_VOCAB_SIZE } from '../data/text.js';
import type { ByteLM } from '../models/lm.js';
import type { StepOutput, TaskBatch, TrainTask } from './trainer.js';

export interface ByteSplits {
  train: Uint8Array;
  val: Uint8Array | null;
  test: Uint8Array | null;
}

export interface LanguageModelTaskOptions {
  /** Windows per batch B. */
  batchSize: number;
  /** Bytes per window T (at most the model's maxSeqLen). */
  seqLen: number;
  /** Batches in one "epoch": the corpus is sampled, not swept, so an epoch is a step count. */
  stepsPerEpoch: number;
  /** Epoch e draws its windows from a generator seeded by deriveSeed(seed, e). */
  seed: number;
  /** Evaluate on at most this many windows, spread evenly over the split (default 64). */
  evalWindows?: number;
  /** Windows per evaluation forward (default: batchSize). */
  evalBatchSize?: number;
}

const LN2 = Math.log(2);

/** Mean cross-entropy (nats) of logits [B, T, 256] against targets [B, T] (int32), over all B*T positions. */
export function lmLoss(logits: Tensor, targets: Tensor): Tensor {
  return crossEntropy(reshape(logits, [targets.size, BYTE_VOCAB_SIZE]), targets.data as Int32Array);
}

export class LanguageModelTask implements TrainTask {
  readonly batchesPerEpoch: number;
  readonly batchSize: number;
  readonly seqLen: number;
  readonly seed: number;
  readonly evalWindows: number;
  readonly evalBatchSize: number;

  constructor(readonly model: ByteLM, readonly data: ByteSplits, opts: LanguageModelTaskOptions) {
    for (const k of ['batchSize', 'seqLen', 'stepsPerEpoch'] as const) {
      if (!(Number.isInteger(opts[k]) && opts[k] > 0)) throw new Error(`LanguageModelTask: ${k} must be a positive integer, got ${opts[k]}`);
    }
    if (opts.seqLen > model.config.maxSeqLen) throw new Error(`LanguageModelTask: seqLen = ${opts.seqLen} exceeds the model's maxSeqLen = ${model.config.maxSeqLen}`);
    if (data.train.length < opts.seqLen + 1) throw new Error(`LanguageModelTask: the training split has ${data.train.length} bytes, fewer than seqLen + 1 = ${opts.seqLen + 1}`);
    this.batchSize = opts.batchSize;
    this.seqLen = opts.seqLen;
    this.batchesPerEpoch = opts.stepsPerEpoch;
    this.seed = opts.seed;
    this.evalWindows = opts.evalWindows ?? 64;
    this.evalBatchSize = opts.evalBatchSize ?? opts.batchSize;
    if (!(Number.isInteger(this.evalWindows) && this.evalWindows > 0)) throw new Error(`LanguageModelTask: evalWindows must be a positive integer, got ${this.evalWindows}`);
    if (!(Number.isInteger(this.evalBatchSize) && this.evalBatchSize > 0)) throw new Error(`LanguageModelTask: evalBatchSize must be a positive integer, got ${this.evalBatchSize}`);
  }

  /** x, y int32 [B, T], y = x shifted by one byte; a pure function of (seed, epoch), so a resumed run replays it. */
  *batches(epoch: number): Generator<TaskBatch> {
    const rng = new Rng(deriveSeed(this.seed, epoch));
    for (let s = 0; s < this.batchesPerEpoch; s++) {
      const { x, y } = randomWindows(this.data.train, { batchSize: this.batchSize, seqLen: this.seqLen, rng });
      yield { x, y };
    }
  }

  step(batch: TaskBatch): StepOutput {
    const { logits, auxLoss, metrics } = this.model.forward(batch.x); // logits [B, T, 256]
    const taskLoss = lmLoss(logits, batch.y);
    const loss = auxLoss ? add(taskLoss, auxLoss) : taskLoss;
    const tl = taskLoss.item();
    return {
      loss,
      values: { taskLoss: tl, ...(auxLoss ? { auxLoss: auxLoss.item() } : {}), bitsPerByte: tl / LN2, ...metrics },
    };
  }

  /** Starts of the evaluation windows: non-overlapping, evenly spread when the split holds more than evalWindows. */
  evalStarts(bytes: Uint8Array): number[] {
    const T = this.seqLen;
    const n = Math.floor((bytes.length - 1) / T); // window i covers [iT, iT + T] (inputs and targets)
    const count = Math.min(n, this.evalWindows);
    return Array.from({ length: count }, (_, i) => Math.floor((i * n) / count) * T);
  }

  /** Mean next-byte loss (nats) and bits per byte over a byte array, in eval mode without gradients. */
  evaluateBytes(bytes: Uint8Array): { loss: number; bitsPerByte: number; tokens: number } {
    const T = this.seqLen;
    const starts = this.evalStarts(bytes);
    if (starts.length === 0) throw new Error(`LanguageModelTask: ${bytes.length} bytes are fewer than seqLen + 1 = ${T + 1}, too few for one evaluation window`);
    const wasTraining = this.model.training;
    this.model.eval();
    let total = 0;
    let tokens = 0;
    try {
      noGrad(() => {
        for (let b0 = 0; b0 < starts.length; b0 += this.evalBatchSize) {
          const chunk = starts.slice(b0, b0 + this.evalBatchSize);
          const B = chunk.length;
          const x = new Int32Array(B * T); // [B, T]
          const y = new Int32Array(B * T); // [B, T]
          chunk.forEach((s, b) => {
            for (let t = 0; t < T; t++) {
              x[b * T + t] = bytes[s + t]!;
              y[b * T + t] = bytes[s + t + 1]!;
            }
          });
          const { logits } = this.model.forward(new Tensor(x, [B, T]));
          total += lmLoss(logits, new Tensor(y, [B, T])).item() * B * T;
          tokens += B * T;
        }
      });
    } finally {
      this.model.train(wasTraining);
    }
    const loss = total / tokens;
    return { loss, bitsPerByte: loss / LN2, tokens };
  }

  evaluate(split: 'val' | 'test'): Record<string, number> | null {
    const bytes = split === 'val' ? this.data.val : this.data.test;
    if (!bytes || bytes.length < this.seqLen + 1) return null;
    const { loss, bitsPerByte } = this.evaluateBytes(bytes);
    return { loss, bitsPerByte };
  }
}
