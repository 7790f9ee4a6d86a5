// Soft MoE expert-subset selection (Algorithm 1 of Chung et al. 2024): per input, Csum[j] = sum
// over tokens and expert j's slots of C; keep the k experts with the largest Csum and run only
// those. The output combines with the unchanged C (unselected slots contribute 0) or, as an
// option, with C renormalised over the kept slots. A seeded random subset is the baseline.

import type { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/rng.js';
import { div, gatherRows, matmul, reshape, scatterAddRows, transpose } from '../ops/index.js';
import type { SoftMoELayer } from './soft.js';
import { checkInt } from './util.js';

export interface SelectOptions {
  /** Renormalise C over the kept slots (default false: the paper's unchanged C). */
  renormalize?: boolean;
  /** Random subsets of k experts from this generator instead of Algorithm 1. */
  random?: Rng;
}

export interface SelectOutput {
  y: Tensor;
  /** Kept experts per input [B, k]. */
  selected: Int32Array;
  /** Per input, the share of the combine weight C (summed over tokens and slots) that the kept experts hold [B]. */
  keptShare: Float64Array;
}

/** Csum [B, n]: per input, the total combine weight of each expert. */
export function combineSums(C: Tensor, n: number, p: number): Float64Array {
  const [B, m] = C.shape as [number, number];
  const np = n * p;
  const out = new Float64Array(B * n);
  const cd = C.data;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < m; t++) {
      const row = (b * m + t) * np;
      for (let s = 0; s < np; s++) out[b * n + Math.floor(s / p)]! += cd[row + s]!;
    }
  }
  return out;
}

/**
 * Runs the layer with k experts per input: only the kept experts' slots are formed, run and
 * combined, so the cost of everything after the logits scales with k / n.
 */
export function forwardSelected(layer: SoftMoELayer, x: Tensor, k: number, opts: SelectOptions = {}): SelectOutput {
  const n = layer.numExperts;
  const p = layer.slotsPerExpert;
  const d = layer.dModel;
  checkInt('forwardSelected', 'k', k, 1, n);
  const { x3, dispatch, combine } = layer.weights(x);
  const B = x3.shape[0]!;
  const m = x3.shape[1]!;

  // choose k experts per input
  const selected = new Int32Array(B * k);
  const cs = combineSums(combine, n, p);
  if (opts.random) {
    for (let b = 0; b < B; b++) selected.set(opts.random.permutation(n).subarray(0, k), b * k);
  } else {
    for (let b = 0; b < B; b++) {
      const order = [...Array(n).keys()].sort((i, j) => cs[b * n + j]! - cs[b * n + i]! || i - j);
      selected.set(order.slice(0, k), b * k);
    }
  }

  const keptShare = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    let kept = 0;
    let total = 0;
    for (let j = 0; j < n; j++) total += cs[b * n + j]!;
    for (let i = 0; i < k; i++) kept += cs[b * n + selected[b * k + i]!]!;
    keptShare[b] = total > 0 ? kept / total : 0;
  }

  // kept (input, expert) pairs, grouped by expert; each brings its p slots as rows
  const groupSizes = new Int32Array(n);
  const byExpert: number[][] = Array.from({ length: n }, () => []);
  for (let b = 0; b < B; b++) for (let i = 0; i < k; i++) byExpert[selected[b * k + i]!]!.push(b);
  const slotRows: number[] = []; // row of the slot in [B*n*p]
  const inputOfRow: number[] = [];
  const expertOfRow: number[] = [];
  for (let j = 0; j < n; j++) {
    groupSizes[j] = byExpert[j]!.length * p;
    for (const b of byExpert[j]!) {
      for (let s = 0; s < p; s++) { slotRows.push(b * n * p + j * p + s); inputOfRow.push(b); expertOfRow.push(j); }
    }
  }
  const rowIdx = Int32Array.from(slotRows);
  const inputIdx = Int32Array.from(inputOfRow);
  const R = rowIdx.length;
  // per kept slot: its dispatch column [m] and its input's tokens [m, d]; slot = D_col^T X_b
  const dCols = gatherRows(reshape(transpose(dispatch, [0, 2, 1]), [B * n * p, m]), rowIdx); // [R, m]
  const xs = reshape(gatherRows(x3, inputIdx), [R, m, d]);
  const slots = reshape(matmul(reshape(dCols, [R, 1, m]), xs), [R, d]);
  const out = layer.experts.forward(slots, groupSizes, layer.experts.b1 ? Int32Array.from(expertOfRow) : undefined);

  // combine: y_b = sum over kept slots r of b of C[b, :, r] outer out_r
  let cCols = gatherRows(reshape(transpose(combine, [0, 2, 1]), [B * n * p, m]), rowIdx); // [R, m]
  if (opts.renormalize) {
    // C over the kept slots only: divide by each (input, token)'s kept mass
    cCols = div(cCols, gatherRows(scatterAddRows(cCols, inputIdx, B), inputIdx));
  }
  const contrib = matmul(reshape(cCols, [R, m, 1]), reshape(out, [R, 1, d])); // [R, m, d]
  const y = scatterAddRows(reshape(contrib, [R, m * d]), inputIdx, B);
  return { y: reshape(y, x.shape), selected, keptShare };
}
