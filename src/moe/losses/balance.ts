// Auxiliary routing losses, each returned unweighted (the layer applies its configured coefficient).

import { Tensor } from '../../tensor/tensor.js';
import { add, div, mean, mul, reshape, square, sub, sum } from '../../ops/index.js';
import { logSumExp } from '../util.js';

/** Fraction of assignments per expert f_i = count_i / (T*k), a constant (counts have no gradient). */
function fractions(expert: Int32Array, E: number, denom: number, like: Tensor): Tensor {
  const f = Tensor.empty([E], like.dtype);
  for (let i = 0; i < expert.length; i++) f.data[expert[i]!]! += 1;
  for (let e = 0; e < E; e++) f.data[e] = denom > 0 ? f.data[e]! / denom : 0;
  return f;
}

/**
 * Switch/GShard load balance: E * sum_i f_i * P_i, with f_i the fraction of the T*k assignments
 * routed to expert i (before capacity) and P_i the mean router probability of expert i.
 * Equals 1 when routing is uniform; the gradient flows through P.
 */
export function loadBalanceLoss(probs: Tensor, expert: Int32Array, k: number): Tensor {
  const [T, E] = probs.shape as [number, number];
  if (T === 0) return Tensor.empty([], probs.dtype);
  const f = fractions(expert, E, T * k, probs);
  return mul(sum(mul(mean(probs, 0), f)), E);
}

/**
 * The sequence-level variant (DeepSeek-V2/V3): the balance loss computed within each sequence of
 * seqLen consecutive tokens, then averaged over sequences. assignments give token and expert.
 */
export function sequenceLoadBalanceLoss(probs: Tensor, token: Int32Array, expert: Int32Array, k: number, seqLen: number): Tensor {
  const [T, E] = probs.shape as [number, number];
  if (!Number.isInteger(seqLen) || seqLen <= 0 || T % seqLen !== 0) {
    throw new Error(`sequenceLoadBalanceLoss: seqLen = ${seqLen} must be a positive integer dividing T = ${T}`);
  }
  const B = T / seqLen;
  if (B === 0) return Tensor.empty([], probs.dtype);
  const f = Tensor.empty([B, E], probs.dtype);
  for (let i = 0; i < token.length; i++) f.data[Math.floor(token[i]! / seqLen) * E + expert[i]!]! += 1 / (seqLen * k);
  const P = mean(reshape(probs, [B, seqLen, E]), 1); // [B, E]
  return mul(mean(sum(mul(P, f), 1)), E);
}

/** Router z-loss (ST-MoE): mean over tokens of logsumexp(logits)^2. */
export function zLoss(logits: Tensor): Tensor {
  if (logits.shape[0] === 0) return Tensor.empty([], logits.dtype);
  return mean(square(logSumExp(logits)));
}

/** Squared coefficient of variation var(x) / (mean(x)^2 + 1e-10) (population variance), as in noisy gating. */
export function cvSquared(x: Tensor): Tensor {
  if (x.size <= 1) return Tensor.empty([], x.dtype);
  const m = mean(x);
  return div(mean(square(sub(x, m))), add(square(m), 1e-10));
}
