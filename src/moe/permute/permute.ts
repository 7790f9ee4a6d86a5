// Permute token rows into expert order, and un-permute expert outputs back to tokens weighted by
// their gates (summing over each token's experts). Each op's backward is the other's gather/scatter.

import type { Tensor } from '../../tensor/tensor.js';
import { gatherRows, mul, reshape, scatterAddRows } from '../../ops/index.js';
import { takeFlat } from '../util.js';
import type { DispatchPlan } from './bins.js';

/** x [T, d] -> rows in expert order [A', d]. */
export function permute(x: Tensor, plan: DispatchPlan): Tensor {
  return gatherRows(x, plan.tokenOfRow);
}

/** y [A', d] expert outputs, gates [A] -> [T, d] = sum over kept assignments of gate * y. */
export function unpermute(y: Tensor, gates: Tensor, plan: DispatchPlan, numTokens: number): Tensor {
  const g = reshape(takeFlat(gates, plan.order), [plan.order.length, 1]);
  return scatterAddRows(mul(y, g), plan.tokenOfRow, numTokens);
}
