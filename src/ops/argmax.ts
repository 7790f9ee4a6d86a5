// argmax: the index of the largest value along one axis (or of the whole tensor), as int32, like torch.argmax.
// Built on the `reduce` kernel's max, which every backend implements with the index it picked:
// ties go to the first index and a NaN counts as the largest value (the first NaN wins), as in torch.
// Indices carry no gradient, so nothing is recorded.

import { Tensor } from '../tensor/tensor.js';
import { normalizeAxis, shapeStr, splitAtAxis } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import { assertFloat, emptyLike, floatData } from './util.js';

/**
 * Indices of the maxima along `axis` (its size removed from the shape, or kept as 1 with keepDim);
 * without an axis, the index into the flattened tensor (a scalar, or all-ones shape with keepDim).
 */
export function argmax(x: Tensor, axis?: number, keepDim = false): Tensor {
  assertFloat('argmax', x);
  const ax = axis === undefined ? -1 : normalizeAxis('argmax', axis, x.rank);
  const [outer, dim, inner] = ax < 0 ? [1, x.size, 1] : splitAtAxis(x.shape, ax);
  if (dim === 0) throw new Error(`argmax: cannot take the argmax over an empty ${ax < 0 ? 'tensor' : `axis ${axis}`} (shape ${shapeStr(x.shape)})`);
  const outShape = ax < 0 ? (keepDim ? x.shape.map(() => 1) : []) : x.shape.map((d, i) => (i === ax ? 1 : d)).filter((_, i) => keepDim || i !== ax);
  const values = emptyLike([outer * inner], x.dtype);
  const indices = new Int32Array(outer * inner);
  kernel('reduce')('max', floatData(x), floatData(values), indices, outer, dim, inner);
  return new Tensor(indices, outShape);
}
