// Row gathers and scatters by an index vector (MoE permute/un-permute) and embedding lookup.
// Each one's backward is the other.

import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { shapeStr } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import { assertFloat, assertIndicesInRange, emptyLike, floatData, indexData } from './util.js';

function rowWidth(t: Tensor): number {
  return t.shape.slice(1).reduce((a, b) => a * b, 1);
}

/** out[i] = src[idx[i]] over the first axis; src [N, ...] -> [idx.length, ...]. */
export function gatherRows(src: Tensor, idx: Tensor | Int32Array): Tensor {
  assertFloat('gatherRows', src);
  if (src.rank < 1) throw new Error(`gatherRows: src must have rank >= 1, got ${shapeStr(src.shape)}`);
  const ix = indexData('gatherRows', idx);
  const n = src.shape[0]!;
  assertIndicesInRange('gatherRows', ix, n, () => `row index (src ${shapeStr(src.shape)})`);
  const d = rowWidth(src);
  const out = emptyLike([ix.length, ...src.shape.slice(1)], src.dtype);
  kernel('gatherRows')(floatData(src), ix, floatData(out), n, d);
  return record(out, 'gatherRows', [src], (g) => {
    const dx = emptyLike(src.shape, src.dtype);
    kernel('scatterAddRows')(floatData(g), ix, floatData(dx), n, d);
    return [dx];
  }, [ix]);
}

/** out[idx[i]] += src[i]; src [M, ...] -> [nOut, ...] (rows nobody targets stay zero). */
export function scatterAddRows(src: Tensor, idx: Tensor | Int32Array, nOut: number): Tensor {
  assertFloat('scatterAddRows', src);
  const ix = indexData('scatterAddRows', idx);
  if (src.rank < 1 || src.shape[0] !== ix.length) {
    throw new Error(`scatterAddRows: src ${shapeStr(src.shape)} needs one row per index (${ix.length} indices)`);
  }
  if (!Number.isInteger(nOut) || nOut < 0) throw new Error(`scatterAddRows: nOut must be a non-negative integer, got ${nOut}`);
  assertIndicesInRange('scatterAddRows', ix, nOut, `row index (output has ${nOut} rows)`);
  const d = rowWidth(src);
  const out = emptyLike([nOut, ...src.shape.slice(1)], src.dtype);
  kernel('scatterAddRows')(floatData(src), ix, floatData(out), nOut, d);
  return record(out, 'scatterAddRows', [src], (g) => {
    const dx = emptyLike(src.shape, src.dtype);
    kernel('gatherRows')(floatData(g), ix, floatData(dx), nOut, d);
    return [dx];
  }, [ix]);
}

/** weight [V, d] looked up at int32 ids of any shape -> [...ids.shape, d]. */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  if (weight.rank !== 2) throw new Error(`embedding: weight must be [vocab, dim], got ${shapeStr(weight.shape)}`);
  const ix = indexData('embedding', ids, 'ids');
  assertIndicesInRange('embedding', ix, weight.shape[0]!, `token id (vocabulary of ${weight.shape[0]})`);
  const rows = gatherRows(weight, ix);
  const out = new Tensor(rows.data, [...ids.shape, weight.shape[1]!]);
  return record(out, 'embedding', [rows], (g) => [new Tensor(g.data, rows.shape)]);
}
