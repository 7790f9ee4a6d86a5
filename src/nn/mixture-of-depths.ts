// Mixture-of-Depths (Raposo et al. 2024): capacity-limited layer skipping. A per-block router
// scores each token, r = x w_r; in each sequence the top ceil(c T) tokens (c the capacity) go through
// the block, the others skip it on the residual stream. The block's residual update of a chosen
// token is multiplied by sigmoid(r), so the router trains through the task loss:
//   y_t = x_t + sigmoid(r_t) (f(x~)_t - x_t)   if t is chosen   (x~: the chosen tokens, in time order)
//   y_t = x_t                                   otherwise
// The chosen tokens attend only among themselves (the block runs on the [B, C, d] subsequence).
// Selection is a top-c over the whole sequence, so it is not causal: token t's fate depends on the
// router scores of later tokens. The paper's fix for autoregressive use, built here as an option:
// a small predictor p(x_t) (an MLP on the block input, gradient stopped) learns the top-c decision
// by binary cross-entropy during training; in 'causal' selection a token runs the block iff
// p(x_t) > 0, a decision of the token alone, so the KV-cached decoder can make it token by token.
//
// B = batch, T = time, C = chosen tokens per sequence, d = channels.

import { Module } from './module.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { add, concat, crossEntropy, gatherRows, matmul, mul, relu, reshape, scatterAddRows, sigmoid, sub, zeros } from '../ops/index.js';
import { Linear } from './linear.js';
import type { Rng } from '../tensor/rng.js';

/** Tokens per sequence that a block processes at capacity c: ceil(c T), at least 1 (T > 0). */
export function depthCapacityTokens(capacity: number, T: number): number {
  return T === 0 ? 0 : Math.max(1, Math.min(T, Math.ceil(capacity * T - 1e-9)));
}

export interface DepthSelection {
  /** Flat row indices (b * T + t) of the chosen tokens, per sequence in time order. */
  rows: Int32Array;
  B: number;
  T: number;
  /** Chosen tokens per sequence: ceil(c T) under top-c; in causal selection the largest count. */
  C: number;
  /** Chosen tokens of each sequence [B] (all C under top-c; they vary in causal selection). */
  counts: Int32Array;
}

/** 'top-c': the capacity's top tokens of each sequence (training; not causal). 'causal': the tokens the predictor says (needs one). */
export type DepthSelectionMode = 'top-c' | 'causal';

export interface DepthRouterOptions {
  /** Train a predictor of the top-c decision for causal selection (default false). */
  predictor?: boolean;
  /** Hidden width of the predictor MLP (default 16). */
  predictorHidden?: number;
  rng?: Rng;
}

/** d -> hidden -> 1 logit that the token is among its sequence's top-c; reads its input cut from the graph. */
export class DepthPredictor extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;

  constructor(readonly dModel: number, readonly hidden: number, rng?: Rng) {
    super();
    this.fc1 = this.module('fc1', new Linear(dModel, hidden, rng ? { rng } : {}));
    this.fc2 = this.module('fc2', new Linear(hidden, 1, rng ? { rng } : {}));
  }

  /** x2 [N, d] -> logits [N, 1]; no gradient reaches x (the predictor must not steer the residual stream). */
  forward(x2: Tensor): Tensor {
    return this.fc2.forward(relu(this.fc1.forward(x2.detach())));
  }
}

export interface DepthRouterOutput<R> {
  y: Tensor;
  /** The block's results, one per call (one batched call under top-c, one per sequence with chosen tokens in causal selection). */
  inner: R[];
  selection: DepthSelection;
  /** Mean binary cross-entropy of the predictor against the top-c choice (training with a predictor), else null. */
  predictorLoss: Tensor | null;
}

export class DepthRouter extends Module {
  /** w_r [1, d]; zeros, so every token starts with weight sigmoid(0) = 1/2 and ties broken by position. */
  readonly weight: Tensor;
  readonly predictor: DepthPredictor | null;
  /** How forward chooses tokens; generate switches to 'causal' (needs the predictor). */
  selection: DepthSelectionMode = 'top-c';
  /** The selection of the latest forward (for per-token statistics). */
  lastSelection: DepthSelection | null = null;

  constructor(readonly dModel: number, readonly capacity: number, opts: DepthRouterOptions = {}) {
    super();
    if (!(Number.isFinite(capacity) && capacity > 0 && capacity <= 1)) throw new Error(`DepthRouter: capacity = ${capacity} must be in (0, 1]`);
    this.weight = this.param('weight', Tensor.empty([1, dModel]));
    const hidden = opts.predictorHidden ?? 16;
    if (!Number.isInteger(hidden) || hidden < 1) throw new Error(`DepthRouter: predictorHidden = ${hidden} must be a positive integer`);
    this.predictor = opts.predictor ? this.module('predictor', new DepthPredictor(dModel, hidden, opts.rng)) : null;
  }

  /** Router scores r [N, 1] of token rows x2 [N, d]. */
  scores(x2: Tensor): Tensor {
    return matmul(x2, this.weight, { transB: true });
  }

  /** Causal selection: per sequence, the rows whose predictor logit is > 0, in time order. */
  causalRows(x2: Tensor, B: number, T: number): { rows: Int32Array; counts: Int32Array } {
    if (!this.predictor) throw new Error("DepthRouter: causal selection needs the predictor (train with depthPredictor: true)");
    const p = noGrad(() => this.predictor!.forward(x2)).data;
    const rows: number[] = [];
    const counts = new Int32Array(B);
    for (let i = 0; i < B * T; i++) {
      if (p[i]! > 0) { rows.push(i); counts[Math.floor(i / T)]!++; }
    }
    return { rows: Int32Array.from(rows), counts };
  }

  /**
   * x [B, T, d] -> [B, T, d]: the chosen tokens of each sequence through `block` (a function of a
   * [B', C, d] tensor and the selection, returning the block's output x~ + update), the rest unchanged.
   */
  forward<R extends { y: Tensor }>(x: Tensor, block: (xs: Tensor, selection: DepthSelection, rows: Int32Array) => R): DepthRouterOutput<R> {
    if (x.rank !== 3 || x.shape[2] !== this.dModel) throw new Error(`DepthRouter: input must be [B, T, ${this.dModel}], got [${x.shape.join(', ')}]`);
    const [B, T, d] = x.shape as [number, number, number];
    const x2 = reshape(x, [B * T, d]);
    const r = this.scores(x2); // [B*T, 1]
    let selection: DepthSelection;
    if (this.selection === 'causal') {
      const { rows, counts } = this.causalRows(x2, B, T);
      selection = { rows, B, T, C: Math.max(0, ...counts), counts };
    } else {
      const C = depthCapacityTokens(this.capacity, T);
      selection = { rows: noGrad(() => selectTopC(r.data, B, T, C)), B, T, C, counts: new Int32Array(B).fill(C) };
    }
    this.lastSelection = selection;
    const { rows, counts } = selection;
    let predictorLoss: Tensor | null = null;
    if (this.predictor && this.training && this.selection === 'top-c') {
      const labels = new Int32Array(B * T);
      for (const i of rows) labels[i] = 1;
      const z = this.predictor.forward(x2); // [B*T, 1]
      predictorLoss = crossEntropy(concat([zeros([B * T, 1], { dtype: z.dtype }), z], 1), labels); // binary cross-entropy as 2-class
    }
    if (rows.length === 0) return { y: x, inner: [], selection, predictorLoss };
    const xs = gatherRows(x2, rows); // [sum C_b, d]
    const inner: R[] = [];
    let ys: Tensor;
    if (counts.every((c) => c === counts[0])) {
      inner.push(block(reshape(xs, [B, counts[0]!, d]), selection, rows));
      ys = reshape(inner[0]!.y, [rows.length, d]);
    } else {
      // ragged (causal selection): one call per sequence that has chosen tokens
      const parts: Tensor[] = [];
      let at = 0;
      for (let b = 0; b < B; b++) {
        const c = counts[b]!;
        if (c === 0) continue;
        const sub_ = rows.subarray(at, at + c);
        const o = block(reshape(gatherRows(x2, sub_), [1, c, d]), selection, sub_);
        inner.push(o);
        parts.push(reshape(o.y, [c, d]));
        at += c;
      }
      ys = parts.length === 1 ? parts[0]! : concat(parts, 0);
    }
    const update = sub(ys, xs); // the block's residual update
    const gate = sigmoid(gatherRows(r, rows)); // [sum C_b, 1]
    const y = add(x2, scatterAddRows(mul(update, gate), rows, B * T));
    return { y: reshape(y, [B, T, d]), inner, selection, predictorLoss };
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
