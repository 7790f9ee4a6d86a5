// Reference cross-entropy with label smoothing (per-row losses; ops take the mean).

import type { KernelImpls } from '../../kernels/kernels.js';

export const crossEntropy: KernelImpls['crossEntropy'] = (logits, targets, losses, probs, rows, c, smoothing) => {
  for (let r = 0; r < rows; r++) {
    const o = r * c;
    let mx = -Infinity;
    for (let j = 0; j < c; j++) mx = Math.max(mx, logits[o + j]!);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(logits[o + j]! - mx);
    const lse = mx + Math.log(s);
    let sumLogp = 0;
    for (let j = 0; j < c; j++) {
      const lp = logits[o + j]! - lse;
      probs[o + j] = Math.exp(lp);
      sumLogp += lp;
    }
    const t = targets[r]!;
    if (t < 0) { losses[r] = 0; continue; }
    const lpt = logits[o + t]! - lse;
    losses[r] = -(1 - smoothing) * lpt - (smoothing / c) * sumLogp;
  }
};

export const crossEntropyBackward: KernelImpls['crossEntropyBackward'] = (probs, targets, dloss, dlogits, rows, c, smoothing) => {
  for (let r = 0; r < rows; r++) {
    const o = r * c;
    const t = targets[r]!;
    if (t < 0) { for (let j = 0; j < c; j++) dlogits[o + j] = 0; continue; }
    const g = dloss[r]!;
    const u = smoothing / c;
    for (let j = 0; j < c; j++) dlogits[o + j] = g * (probs[o + j]! - u - (j === t ? 1 - smoothing : 0));
  }
};
