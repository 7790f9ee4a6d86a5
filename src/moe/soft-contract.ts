// The two small contractions of Soft MoE's token side, fused: per example b and expert j, a
// [p, m] x [m, h] product (dispatch: slots' hidden rows from the tokens' rows) and its adjoint,
// a [m, p] x [p, h] product (combine: tokens' rows from the slots' hidden rows).
//
// Shapes (B examples, m tokens, n experts, p slots per expert, h hidden units):
//   W [B, m, n, p]  dispatch or combine weights (softmax outputs, viewed per expert)
//   U [B, m, n, h]  per token, per expert: a row of h (token x W1_j, or the C-weighted hidden row)
//   V [B, n, p, h]  per slot: a row of h (the slot's pre-activation or activation)
// slotMix(W, U) = V with V[b,j,q,:] = sum_t W[b,t,j,q] U[b,t,j,:]
// tokenMix(W, V) = U with U[b,t,j,:] = sum_q W[b,t,j,q] V[b,j,q,:]
// Each is the other's adjoint in its second operand, and the gradient in W is the same pairwise
// dot dW[b,t,j,q] = sum_c U[b,t,j,c] V[b,j,q,c] for both. Built from broadcast mul + sum these
// cost ~10 passes over [B, m, n, p, h] temporaries per step (8-25 ms of a ~90 ms step on the paper
// grid); as loops they are one pass each with no temporaries. The work is O(B m n p h) with no
// GEMM structure (m and p are small), so plain loops over the typed arrays run near memory speed
// on every backend, float32 and float64 alike.

import type { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { shapeStr } from '../tensor/shape.js';
import type { FloatArray } from '../tensor/dtype.js';
import { assertFloat, assertSameDtype, emptyLike, floatData } from '../ops/util.js';

interface Dims { B: number; m: number; n: number; p: number; h: number }

function dimsOf(op: string, w: Tensor, u: Tensor | null, v: Tensor | null): Dims {
  const desc = (): string => `W ${shapeStr(w.shape)}${u ? `, U ${shapeStr(u.shape)}` : ''}${v ? `, V ${shapeStr(v.shape)}` : ''}`;
  if (w.rank !== 4) throw new Error(`${op}: W must be [B, m, n, p] (${desc()})`);
  const [B, m, n, p] = w.shape as [number, number, number, number];
  const other = (u ?? v)!;
  if (other.rank !== 4) throw new Error(`${op}: ${u ? 'U must be [B, m, n, h]' : 'V must be [B, n, p, h]'} (${desc()})`);
  const h = other.shape[3]!;
  const ok = u ? u.shape[0] === B && u.shape[1] === m && u.shape[2] === n : v!.shape[0] === B && v!.shape[1] === n && v!.shape[2] === p;
  if (!ok) throw new Error(`${op}: shapes do not fit (${desc()})`);
  return { B, m, n, p, h };
}

/** V[b,j,q,:] += sum_t W[b,t,j,q] U[b,t,j,:]; V zero-filled by the caller. */
function slotMixRaw(w: FloatArray, u: FloatArray, v: FloatArray, { B, m, n, p, h }: Dims): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < m; t++) {
      for (let j = 0; j < n; j++) {
        const wo = ((b * m + t) * n + j) * p;
        const uo = ((b * m + t) * n + j) * h;
        for (let q = 0; q < p; q++) {
          const wv = w[wo + q]!;
          const vo = ((b * n + j) * p + q) * h;
          for (let c = 0; c < h; c++) v[vo + c]! += wv * u[uo + c]!;
        }
      }
    }
  }
}

/** U[b,t,j,:] += sum_q W[b,t,j,q] V[b,j,q,:]; U zero-filled by the caller. */
function tokenMixRaw(w: FloatArray, v: FloatArray, u: FloatArray, { B, m, n, p, h }: Dims): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < m; t++) {
      for (let j = 0; j < n; j++) {
        const wo = ((b * m + t) * n + j) * p;
        const uo = ((b * m + t) * n + j) * h;
        for (let q = 0; q < p; q++) {
          const wv = w[wo + q]!;
          const vo = ((b * n + j) * p + q) * h;
          for (let c = 0; c < h; c++) u[uo + c]! += wv * v[vo + c]!;
        }
      }
    }
  }
}

/** dW[b,t,j,q] = sum_c U[b,t,j,c] V[b,j,q,c]: the gradient in W of both contractions. */
function pairDotRaw(u: FloatArray, v: FloatArray, dw: FloatArray, { B, m, n, p, h }: Dims): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < m; t++) {
      for (let j = 0; j < n; j++) {
        const wo = ((b * m + t) * n + j) * p;
        const uo = ((b * m + t) * n + j) * h;
        for (let q = 0; q < p; q++) {
          const vo = ((b * n + j) * p + q) * h;
          let s = 0;
          for (let c = 0; c < h; c++) s += u[uo + c]! * v[vo + c]!;
          dw[wo + q] = s;
        }
      }
    }
  }
}

/** Dispatch side: W [B, m, n, p], U [B, m, n, h] -> V [B, n, p, h], V[b,j,q] = sum_t W[b,t,j,q] U[b,t,j]. */
export function slotMix(w: Tensor, u: Tensor): Tensor {
  assertFloat('slotMix', w, u);
  assertSameDtype('slotMix', w, u);
  const dims = dimsOf('slotMix', w, u, null);
  const out = emptyLike([dims.B, dims.n, dims.p, dims.h], w.dtype);
  slotMixRaw(floatData(w), floatData(u), floatData(out), dims);
  return record(out, 'slotMix', [w, u], (g) => {
    let dw: Tensor | null = null;
    let du: Tensor | null = null;
    if (w.requiresGrad) {
      dw = emptyLike(w.shape, w.dtype);
      pairDotRaw(floatData(u), floatData(g), floatData(dw), dims);
    }
    if (u.requiresGrad) {
      du = emptyLike(u.shape, u.dtype);
      tokenMixRaw(floatData(w), floatData(g), floatData(du), dims);
    }
    return [dw, du];
  }, [w, u]);
}

/** Combine side: W [B, m, n, p], V [B, n, p, h] -> U [B, m, n, h], U[b,t,j] = sum_q W[b,t,j,q] V[b,j,q]. */
export function tokenMix(w: Tensor, v: Tensor): Tensor {
  assertFloat('tokenMix', w, v);
  assertSameDtype('tokenMix', w, v);
  const dims = dimsOf('tokenMix', w, null, v);
  const out = emptyLike([dims.B, dims.m, dims.n, dims.h], w.dtype);
  tokenMixRaw(floatData(w), floatData(v), floatData(out), dims);
  return record(out, 'tokenMix', [w, v], (g) => {
    let dw: Tensor | null = null;
    let dv: Tensor | null = null;
    if (w.requiresGrad) {
      dw = emptyLike(w.shape, w.dtype);
      pairDotRaw(floatData(g), floatData(v), floatData(dw), dims);
    }
    if (v.requiresGrad) {
      dv = emptyLike(v.shape, v.dtype);
      slotMixRaw(floatData(w), floatData(g), floatData(dv), dims);
    }
    return [dw, dv];
  }, [w, v]);
}
