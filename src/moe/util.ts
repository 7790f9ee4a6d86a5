// Small helpers shared by routers, dispatch and losses.

import { Tensor } from '../tensor/tensor.js';
import { gatherRows, reshape, scatterAddRows, sum, max, sub, exp, log, add } from '../ops/index.js';
import { noGrad } from '../tensor/autograd.js';

/** Elements of x (any shape, read flat) at flat positions idx -> [idx.length]; differentiable. */
export function takeFlat(x: Tensor, idx: Int32Array): Tensor {
  return reshape(gatherRows(reshape(x, [x.size, 1]), idx), [idx.length]);
}

/** The adjoint of takeFlat: a tensor of `shape` with v[i] added at flat position idx[i]. */
export function putFlat(v: Tensor, idx: Int32Array, shape: readonly number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return reshape(scatterAddRows(reshape(v, [v.size, 1]), idx, n), shape);
}

/** log(sum(exp(x))) over the last axis, stable; gradient softmax(x). */
export function logSumExp(x: Tensor): Tensor {
  const m = noGrad(() => max(x, -1, true)); // a constant shift: the gradient is unchanged
  return add(log(sum(exp(sub(x, m)), -1)), reshape(m, m.shape.slice(0, -1)));
}

/** Token-major flat positions t*E + e of assignments. */
export function flatPositions(token: Int32Array, expert: Int32Array, numExperts: number): Int32Array {
  const out = new Int32Array(token.length);
  for (let i = 0; i < token.length; i++) out[i] = token[i]! * numExperts + expert[i]!;
  return out;
}

/** [0,..0, 1,..1, ...]: each index below n repeated k times (tokens of a top-k choice, experts of expert choice). */
export function repeatEach(n: number, k: number): Int32Array {
  const out = new Int32Array(n * k);
  for (let i = 0; i < n; i++) out.fill(i, i * k, i * k + k);
  return out;
}

/** Checks an integer option and names the field on failure. */
export function checkInt(owner: string, field: string, v: number, lo: number, hi = Infinity): void {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new Error(`${owner}: ${field} = ${v} must be an integer in [${lo}, ${hi === Infinity ? '∞' : hi}]`);
  }
}

export function checkRange(owner: string, field: string, v: number, lo: number, hi: number, loOpen = false): void {
  if (!(typeof v === 'number' && (loOpen ? v > lo : v >= lo) && v <= hi)) {
    throw new Error(`${owner}: ${field} = ${v} must be in ${loOpen ? '(' : '['}${lo}, ${hi}]`);
  }
}

/** Checks x is [T, d] with the router's d. */
export function checkTokens(owner: string, x: Tensor, d: number): void {
  if (x.rank !== 2 || x.shape[1] !== d) throw new Error(`${owner}: input must be [T, ${d}] (d = ${d}), got [${x.shape.join(', ')}]`);
}
