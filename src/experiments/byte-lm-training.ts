// The training loop and evaluation set-up shared by the byte-level LM experiments (depth, depth-causal,
// attention-moe, straight-through, continual), so that each compares models trained the same way.

import type { ByteLM } from '../models/lm.js';
import { Adam, clipGradNorm } from '../train/optim.js';
import { lmLoss, LanguageModelTask } from '../train/lm-task.js';
import { randomWindows, deriveSeed } from '../data/batches.js';
import { Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { add } from '../ops/index.js';

/** Options of a byte-LM experiment repeated over seeds (attention-moe, straight-through); defaults per experiment. */
export interface SeededByteLMExperimentOptions {
  /** The short form: fewer steps (and seeds, where the experiment says), written to docs/results/<name>-quick. */
  quick?: boolean;
  out?: string;
  /** Training steps per run. */
  steps?: number;
  /** Seeds 0..seeds-1. */
  seeds?: number;
  command?: string;
  log?: (line: string) => void;
}

export interface ByteLMTrainingOptions {
  steps: number;
  /** Step s reseeds the model's noise with deriveSeed(seed, s); the windows come from Rng(deriveSeed(seed, windowSalt)). */
  seed: number;
  /** Salt of the window generator's seed: each experiment keeps its own so that its published numbers stay reproducible. */
  windowSalt: number;
  /** Training bytes, or the bytes to sample at step s (a curriculum, e.g. continual's two phases). */
  data: Uint8Array | ((step: number) => Uint8Array);
  batchSize: number;
  seqLen: number;
  lr: number;
  clipNorm: number;
  /** Before the step reseeds the model (continual: growth at its scheduled step). */
  beforeStep?: (step: number, opt: Adam) => void;
  /** Between backward and clipping (continual: zeroing the frozen experts' gradients). */
  afterBackward?: () => void;
  /** After the optimiser step, with that step's language-model loss (nats, without the aux losses). */
  afterStep?: (step: number, loss: number) => void;
}

/**
 * Trains `lm` with Adam on random windows, minimising the LM loss plus the model's aux losses, the
 * gradient clipped to clipNorm. Returns the language-model loss (nats, without aux) of every step.
 */
export function trainByteLM(lm: ByteLM, o: ByteLMTrainingOptions): number[] {
  const opt = new Adam(lm.namedParameters(), { lr: o.lr });
  const rng = new Rng(deriveSeed(o.seed, o.windowSalt));
  const losses: number[] = [];
  lm.train();
  for (let s = 0; s < o.steps; s++) {
    o.beforeStep?.(s, opt);
    lm.reseedAll(deriveSeed(o.seed, s));
    const bytes = typeof o.data === 'function' ? o.data(s) : o.data;
    const { x, y } = randomWindows(bytes, { batchSize: o.batchSize, seqLen: o.seqLen, rng });
    const out = lm.forward(x);
    const l = lmLoss(out.logits, y);
    (out.auxLoss ? add(l, out.auxLoss) : l).backward();
    o.afterBackward?.();
    clipGradNorm(lm.parameters(), o.clipNorm);
    opt.step();
    opt.zeroGrad();
    losses.push(l.item());
    o.afterStep?.(s, losses[s]!);
  }
  return losses;
}

/** The evaluator of validation bits/byte: at most evalWindows windows of seqLen bytes, spread evenly over a split. */
export function byteLMEvaluator(
  lm: ByteLM,
  splits: { train: Uint8Array; val: Uint8Array },
  o: { batchSize: number; seqLen: number; evalWindows: number },
  seed = 0,
): LanguageModelTask {
  return new LanguageModelTask(lm, { train: splits.train, val: splits.val, test: null }, { batchSize: o.batchSize, seqLen: o.seqLen, stepsPerEpoch: 1, seed, evalWindows: o.evalWindows });
}

/**
 * Runs `lm` in eval mode, without gradients, on each of the evaluator's windows of `bytes` as a [1, seqLen]
 * batch, then calls `visit` with the window (to read what the model recorded, e.g. depth routers' selections).
 */
export function forEachEvalWindow(lm: ByteLM, task: LanguageModelTask, bytes: Uint8Array, seqLen: number, visit: (window: Uint8Array) => void): void {
  lm.eval();
  for (const start of task.evalStarts(bytes)) {
    const window = bytes.subarray(start, start + seqLen);
    noGrad(() => lm.forward(new Tensor(Int32Array.from(window), [1, seqLen])));
    visit(window);
  }
  lm.train();
}
