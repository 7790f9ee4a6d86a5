// Top-k over the last axis: values (descending, ties to the lower index) and int32 indices.
// The gradient flows to the selected entries only.

import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { shapeStr } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import { assertFloat, emptyLike, floatData } from './util.js';

export interface TopK {
  values: Tensor;
  indices: Tensor;
}

export function topk(x: Tensor, k: number): TopK {
  assertFloat('topk', x);
  if (x.rank < 1) throw new Error(`topk: input must have rank >= 1, got ${shapeStr(x.shape)}`);
  const n = x.shape[x.rank - 1]!;
  if (!Number.isInteger(k) || k < 0 || k > n) throw new Error(`topk: k = ${k} must be an integer in [0, ${n}] for input ${shapeStr(x.shape)}`);
  const d = floatData(x);
  for (let i = 0; i < d.length; i++) {
    // a NaN score would route silently to an arbitrary expert
    if (Number.isNaN(d[i]!)) throw new Error(`topk: input ${shapeStr(x.shape)} contains NaN (row ${Math.floor(i / n)}, column ${i % n})`);
  }
  const rows = n === 0 ? 0 : x.size / n;
  const outShape = [...x.shape.slice(0, -1), k];
  const values = emptyLike(outShape, x.dtype);
  const indices = emptyLike(outShape, 'int32');
  kernel('topk')(d, floatData(values), indices.data as Int32Array, rows, n, k);
  record(values, 'topk', [x], (g) => {
    const dx = emptyLike(x.shape, x.dtype);
    kernel('topkBackward')(floatData(g), indices.data as Int32Array, floatData(dx), rows, n, k);
    return [dx];
  }, [indices]);
  return { values, indices };
}
