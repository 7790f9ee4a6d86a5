// The js reference of cachedAttention (kernels.ts): per query and head, scores over the visible
// keys, a softmax and the weighted sum of values, in the order the native kernel follows.

import type { KernelImpls } from '../../kernels/kernels.js';

export const cachedAttention: KernelImpls['cachedAttention'] = (q, keys, values, out, T, H, G, hd, maxLen, P, window, scale) => {
  if (G <= 0 || H % G !== 0) throw new Error(`cachedAttention: H = ${H} query heads are not a multiple of G = ${G} key/value heads`);
  if (P + T > maxLen) throw new Error(`cachedAttention: P + T = ${P + T} positions exceed maxLen = ${maxLen}`);
  const g = H / G;
  const s = new Float64Array(P + T);
  const acc = new Float64Array(hd);
  for (let t = 0; t < T; t++) {
    const pos = P + t;
    const first = window > 0 ? Math.max(0, pos - window + 1) : 0;
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * hd;
      const base = Math.floor(h / g) * maxLen * hd;
      let mx = -Infinity;
      for (let j = first; j <= pos; j++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += q[qo + i]! * keys[base + j * hd + i]!;
        d *= scale;
        s[j] = d;
        if (d > mx) mx = d;
      }
      let sum = 0;
      for (let j = first; j <= pos; j++) {
        s[j] = Math.exp(s[j]! - mx);
        sum += s[j]!;
      }
      acc.fill(0);
      for (let j = first; j <= pos; j++) {
        const p = s[j]! / sum;
        for (let i = 0; i < hd; i++) acc[i] += p * values[base + j * hd + i]!;
      }
      for (let i = 0; i < hd; i++) out[qo + i] = acc[i]!;
    }
  }
};
