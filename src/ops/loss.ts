// Losses: cross-entropy with label smoothing and ignored targets, mean-squared error.

import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { shapeStr } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import { assertFloat, emptyLike, floatData, indexData } from './util.js';
import { mean } from './reduce.js';
import { square, sub } from './elementwise.js';

export interface CrossEntropyOptions {
  /** Mass moved from the target class to a uniform distribution over all classes (PyTorch's label_smoothing). */
  labelSmoothing?: number;
  /** Targets equal to this are skipped and excluded from the mean (PyTorch's default -100). */
  ignoreIndex?: number;
}

/** Mean cross-entropy of logits [N, C] against int32 class targets [N]. */
export function crossEntropy(logits: Tensor, targets: Tensor | Int32Array, opts: CrossEntropyOptions = {}): Tensor {
  assertFloat('crossEntropy', logits);
  const t = indexData('crossEntropy', targets, 'targets');
  const s = opts.labelSmoothing ?? 0;
  const ignore = opts.ignoreIndex ?? -100;
  if (logits.rank !== 2) throw new Error(`crossEntropy: logits must be [N, C], got ${shapeStr(logits.shape)}`);
  const [rows, c] = logits.shape as [number, number];
  if (t.length !== rows) throw new Error(`crossEntropy: ${t.length} targets for logits ${shapeStr(logits.shape)}`);
  if (!(s >= 0 && s <= 1)) throw new Error(`crossEntropy: labelSmoothing must be in [0, 1], got ${s}`);
  const tk = new Int32Array(rows);
  let valid = 0;
  for (let i = 0; i < rows; i++) {
    const v = t[i]!;
    if (v === ignore) { tk[i] = -1; continue; }
    if (v < 0 || v >= c) throw new Error(`crossEntropy: target ${v} at row ${i} is out of range [0, ${c}) (logits ${shapeStr(logits.shape)})`);
    tk[i] = v;
    valid++;
  }
  const losses = emptyLike([rows], logits.dtype);
  const probs = emptyLike(logits.shape, logits.dtype);
  kernel('crossEntropy')(floatData(logits), tk, floatData(losses), floatData(probs), rows, c, s);
  let total = 0;
  const ld = floatData(losses);
  for (let i = 0; i < rows; i++) total += ld[i]!;
  const out = emptyLike([], logits.dtype);
  // PyTorch returns NaN for a mean over zero targets; an empty batch contributes 0 here instead
  out.data[0] = valid > 0 ? total / valid : 0;
  return record(out, 'crossEntropy', [logits], (g) => {
    const dloss = emptyLike([rows], logits.dtype);
    if (valid > 0) floatData(dloss).fill(g.data[0]! / valid);
    const dx = emptyLike(logits.shape, logits.dtype);
    kernel('crossEntropyBackward')(floatData(probs), tk, floatData(dloss), floatData(dx), rows, c, s);
    return [dx];
  }, [probs, tk]);
}

/** mean((pred - target)^2) over all elements. */
export function mseLoss(pred: Tensor, target: Tensor): Tensor {
  if (pred.shape.length !== target.shape.length || pred.shape.some((d, i) => d !== target.shape[i])) {
    throw new Error(`mseLoss: pred ${shapeStr(pred.shape)} and target ${shapeStr(target.shape)} must have the same shape`);
  }
  return mean(square(sub(pred, target)));
}
