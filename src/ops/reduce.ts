// Reductions over an axis (sum, mean, max) and softmax / log-softmax, with gradients.

import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { normalizeAxis, splitAtAxis } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import type { ReduceOp } from '../kernels/kernels.js';
import { assertFloat, emptyLike, floatData } from './util.js';

function reduceOp(op: ReduceOp, x: Tensor, axis: number | undefined, keepDim: boolean): Tensor {
  assertFloat(op, x);
  // axis undefined: reduce everything to a scalar
  const ax = axis === undefined ? -1 : normalizeAxis(op, axis, x.rank);
  const [outer, dim, inner] = ax < 0 ? [1, x.size, 1] : splitAtAxis(x.shape, ax);
  if (op === 'max' && dim === 0) throw new Error(`max: cannot take the max over an empty axis (shape [${x.shape.join(', ')}], axis ${axis})`);
  const keptShape = ax < 0 ? x.shape.map(() => 1) : x.shape.map((d, i) => (i === ax ? 1 : d));
  const outShape = keepDim ? keptShape : ax < 0 ? [] : x.shape.filter((_, i) => i !== ax);
  const out = emptyLike(outShape, x.dtype);
  const arg = op === 'max' ? new Int32Array(outer * inner) : null;
  kernel('reduce')(op, floatData(x), floatData(out), arg, outer, dim, inner);
  return record(out, op, [x], (g) => {
    const dx = emptyLike(x.shape, x.dtype);
    if (op === 'max') kernel('scatterArg')(floatData(g), arg!, floatData(dx), outer, dim, inner);
    else kernel('broadcastTo')(floatData(g), keptShape, floatData(dx), x.shape, op === 'mean' ? 1 / dim : 1);
    return [dx];
  }, arg ? [arg] : []);
}

/** Sum over one axis, or over everything when axis is undefined. */
export const sum = (x: Tensor, axis?: number, keepDim = false): Tensor => reduceOp('sum', x, axis, keepDim);
export const mean = (x: Tensor, axis?: number, keepDim = false): Tensor => reduceOp('mean', x, axis, keepDim);
/** Max over one axis (gradient to the first maximal element), or over everything. */
export const max = (x: Tensor, axis?: number, keepDim = false): Tensor => reduceOp('max', x, axis, keepDim);

function softmaxOp(x: Tensor, axis: number, log: boolean): Tensor {
  const name = log ? 'logSoftmax' : 'softmax';
  assertFloat(name, x);
  const [outer, dim, inner] = splitAtAxis(x.shape, normalizeAxis(name, axis, x.rank));
  const y = emptyLike(x.shape, x.dtype);
  kernel('softmax')(floatData(x), floatData(y), outer, dim, inner, log);
  return record(y, name, [x], (g) => {
    const dx = emptyLike(x.shape, x.dtype);
    kernel('softmaxBackward')(floatData(y), floatData(g), floatData(dx), outer, dim, inner, log);
    return [dx];
  }, [y]);
}

export const softmax = (x: Tensor, axis = -1): Tensor => softmaxOp(x, axis, false);
export const logSoftmax = (x: Tensor, axis = -1): Tensor => softmaxOp(x, axis, true);
