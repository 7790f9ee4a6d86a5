// Mixture-of-Depths (Raposo et al. 2024): capacity-limited layer skipping. A per-block router
// scores each token, r = x w_r; in each sequence the top ceil(c T) tokens (c the capacity) go through
// the block, the others skip it on the residual stream. The block's residual update of a chosen
// token is multiplied by sigmoid(r), so the router trains through the task loss:
//   y_t = x_t + sigmoid(r_t) (f(x~)_t - x_t)   if t is chosen   (x~: the chosen tokens, in time order)
//   y_t = x_t                                   otherwise
// The chosen tokens attend only among themselves (the block runs on the [B, C, d] subsequence).
// Selection is a top-c over the whole sequence, so it is not causal: token t's fate depends on the
// router scores of later tokens. moe-ts evaluates MoD models teacher-forced and generates without
// the KV cache (each step re-runs the window, so the newest byte competes only with its past).
//
// B = batch, T = time, C = chosen tokens per sequence, d = channels.

import { Module } from './module.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { add, gatherRows, matmul, mul, reshape, scatterAddRows, sigmoid, sub } from '../ops/index.js';

/** Tokens per sequence that a block processes at capacity c: ceil(c T), at least 1 (T > 0). */
export function depthCapacityTokens(capacity: number, T: number): number {
  return T === 0 ? 0 : Math.max(1, Math.min(T, Math.ceil(capacity * T - 1e-9)));
}

export interface DepthSelection {
  /** Flat row indices (b * T + t) of the chosen tokens, per sequence in time order [B * C]. */
  rows: Int32Array;
  B: number;
  T: number;
  C: number;
}

export class DepthRouter extends Module {
  /** w_r [1, d]; zeros, so every token starts with weight sigmoid(0) = 1/2 and ties broken by position. */
  readonly weight: Tensor;
  /** The selection of the latest forward (for per-token statistics). */
  lastSelection: DepthSelection | null = null;

  constructor(readonly dModel: number, readonly capacity: number) {
    super();
    if (!(Number.isFinite(capacity) && capacity > 0 && capacity <= 1)) throw new Error(`DepthRouter: capacity = ${capacity} must be in (0, 1]`);
    this.weight = this.param('weight', Tensor.empty([1, dModel]));
  }

  /**
   * x [B, T, d] -> [B, T, d]: the top-c tokens of each sequence through `block` (a function of a
   * [B, C, d] tensor and the selection, returning the block's output x~ + update), the rest unchanged.
   */
  forward<R extends { y: Tensor }>(x: Tensor, block: (xs: Tensor, selection: DepthSelection) => R): { y: Tensor; inner: R; selection: DepthSelection } {
    if (x.rank !== 3 || x.shape[2] !== this.dModel) throw new Error(`DepthRouter: input must be [B, T, ${this.dModel}], got [${x.shape.join(', ')}]`);
    const [B, T, d] = x.shape as [number, number, number];
    const x2 = reshape(x, [B * T, d]);
    const r = matmul(x2, this.weight, { transB: true }); // [B*T, 1]
    const C = depthCapacityTokens(this.capacity, T);
    const rows = noGrad(() => selectTopC(r.data, B, T, C));
    const selection = { rows, B, T, C };
    this.lastSelection = selection;
    const xs = gatherRows(x2, rows); // [B*C, d]
    const inner = block(reshape(xs, [B, C, d]), selection);
    const update = sub(reshape(inner.y, [B * C, d]), xs); // the block's residual update
    const gate = sigmoid(gatherRows(r, rows)); // [B*C, 1]
    const y = add(x2, scatterAddRows(mul(update, gate), rows, B * T));
    return { y: reshape(y, [B, T, d]), inner, selection };
  }
}

/** Per sequence, the C largest scores (ties: the earlier position), returned in time order. */
export function selectTopC(scores: ArrayLike<number>, B: number, T: number, C: number): Int32Array {
  const out = new Int32Array(B * C);
  const order = Array.from({ length: T }, (_, t) => t);
  for (let b = 0; b < B; b++) {
    const base = b * T;
    const chosen = order.slice().sort((i, j) => scores[base + j]! - scores[base + i]! || i - j).slice(0, C).sort((i, j) => i - j);
    chosen.forEach((t, i) => { out[b * C + i] = base + t; });
  }
  return out;
}
