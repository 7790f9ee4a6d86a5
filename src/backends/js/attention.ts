// The js reference of cachedAttention (kernels.ts): per query and head, scores over the visible
// keys, a softmax and the weighted sum of values, in the order the native kernel follows.

import type { KernelImpls } from '../../kernels/kernels.js';
import { floatToHalf, halfTable } from '../../tensor/half.js';

type Cache = Float32Array | Float64Array | Uint16Array;

/** A cache layer as floats: f16 bit patterns widened (exactly), float arrays as they are. */
function widen(x: Cache): Float32Array | Float64Array {
  if (!(x instanceof Uint16Array)) return x;
  const t = halfTable();
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = t[x[i]!]!;
  return out;
}

export const cachedAttention: KernelImpls['cachedAttention'] = (q, keysIn, valuesIn, out, T, H, G, hd, maxLen, P, window, scale) => {
  const keys = widen(keysIn);
  const values = widen(valuesIn);
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

export const kvWrite: KernelImpls['kvWrite'] = (src, dst, T, G, hd, maxLen, pos) => {
  if (pos + T > maxLen) throw new Error(`kvWrite: pos + T = ${pos + T} positions exceed maxLen = ${maxLen}`);
  if (src.length < T * G * hd) throw new Error(`kvWrite: src has ${src.length} elements but T * G * hd = ${T * G * hd}`);
  if (dst.length < G * maxLen * hd) throw new Error(`kvWrite: dst has ${dst.length} elements but G * maxLen * hd = ${G * maxLen * hd}`);
  const half = dst instanceof Uint16Array;
  for (let t = 0; t < T; t++) {
    for (let g = 0; g < G; g++) {
      const a = (t * G + g) * hd;
      const b = (g * maxLen + pos + t) * hd;
      for (let i = 0; i < hd; i++) dst[b + i] = half ? floatToHalf(src[a + i]!) : src[a + i]!;
    }
  }
};
