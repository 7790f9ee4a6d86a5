// Layer norm and RMS norm over the last axis, with optional affine parameters.

import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { shapeStr } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import { assertFloat, assertSameDtype, emptyLike, floatData } from './util.js';
import type { FloatArray } from '../tensor/dtype.js';

function checkParam(op: string, x: Tensor, p: Tensor | null, what: string): void {
  if (!p) return;
  assertFloat(op, p);
  assertSameDtype(op, x, p);
  const d = x.shape[x.rank - 1];
  if (p.rank !== 1 || p.shape[0] !== d) throw new Error(`${op}: ${what} must be [${d}] for input ${shapeStr(x.shape)}, got ${shapeStr(p.shape)}`);
}

function rowsOf(op: string, x: Tensor): [number, number] {
  assertFloat(op, x);
  if (x.rank < 1) throw new Error(`${op}: input must have rank >= 1, got ${shapeStr(x.shape)}`);
  const d = x.shape[x.rank - 1]!;
  return [d === 0 ? 0 : x.size / d, d];
}

const dataOrNull = (t: Tensor | null): FloatArray | null => (t ? floatData(t) : null);

/** (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance, like PyTorch). */
export function layerNorm(x: Tensor, gamma: Tensor | null = null, beta: Tensor | null = null, eps = 1e-5): Tensor {
  const [rows, d] = rowsOf('layerNorm', x);
  checkParam('layerNorm', x, gamma, 'gamma');
  checkParam('layerNorm', x, beta, 'beta');
  const y = emptyLike(x.shape, x.dtype);
  const mean = emptyLike([rows], x.dtype);
  const rstd = emptyLike([rows], x.dtype);
  kernel('layerNorm')(floatData(x), dataOrNull(gamma), dataOrNull(beta), floatData(y), floatData(mean), floatData(rstd), rows, d, eps);
  const inputs = [x, ...(gamma ? [gamma] : []), ...(beta ? [beta] : [])];
  return record(y, 'layerNorm', inputs, (g) => {
    const dx = emptyLike(x.shape, x.dtype);
    const dg = gamma ? emptyLike(gamma.shape, x.dtype) : null;
    const db = beta ? emptyLike(beta.shape, x.dtype) : null;
    kernel('layerNormBackward')(floatData(x), dataOrNull(gamma), floatData(mean), floatData(rstd), floatData(g), floatData(dx), dataOrNull(dg), dataOrNull(db), rows, d);
    return [dx, ...(dg ? [dg] : []), ...(db ? [db] : [])];
  }, [x, mean, rstd, ...(gamma ? [gamma] : [])]);
}

/** x / sqrt(mean(x^2) + eps) * gamma over the last axis. */
export function rmsNorm(x: Tensor, gamma: Tensor | null = null, eps = 1e-6): Tensor {
  const [rows, d] = rowsOf('rmsNorm', x);
  checkParam('rmsNorm', x, gamma, 'gamma');
  const y = emptyLike(x.shape, x.dtype);
  const rstd = emptyLike([rows], x.dtype);
  kernel('rmsNorm')(floatData(x), dataOrNull(gamma), floatData(y), floatData(rstd), rows, d, eps);
  return record(y, 'rmsNorm', gamma ? [x, gamma] : [x], (g) => {
    const dx = emptyLike(x.shape, x.dtype);
    const dg = gamma ? emptyLike(gamma.shape, x.dtype) : null;
    kernel('rmsNormBackward')(floatData(x), dataOrNull(gamma), floatData(rstd), floatData(g), floatData(dx), dataOrNull(dg), rows, d);
    return dg ? [dx, dg] : [dx];
  }, [x, rstd, ...(gamma ? [gamma] : [])]);
}
