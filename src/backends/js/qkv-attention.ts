// The js reference of qkvAttention (kernels.ts): the decode step's attention after the qkv product,
// composed of the reference kernels (rmsNorm, kvWrite, cachedAttention) and the decoder's rotary order.

import type { KernelImpls } from '../../kernels/kernels.js';
import type { FloatArray } from '../../tensor/dtype.js';
import { cachedAttention, kvWrite } from './attention.js';
import { rmsNorm } from './norm.js';

export const qkvAttention: KernelImpls['qkvAttention'] = (qkv, qBias, kBias, vBias, qNorm, kNorm, normMode, eps, cos, sin, keys, values, out,
  T, H, G, hd, maxLen, P, window, scale) => {
  const qw = H * hd;
  const kw = G * hd;
  const row = qw + 2 * kw;
  if (G === 0 || H % G !== 0) throw new Error(`qkvAttention: H = ${H} query heads are not a multiple of G = ${G} key/value heads`);
  if (hd % 2 !== 0) throw new Error(`qkvAttention: hd = ${hd} must be even for rotary`);
  if (P + T > maxLen) throw new Error(`qkvAttention: P + T = ${P + T} positions exceed maxLen = ${maxLen}`);
  if (qkv.length < T * row) throw new Error(`qkvAttention: qkv has ${qkv.length} elements but T * (H + 2G) * hd = ${T * row}`);
  if (![0, 1, 2].includes(normMode)) throw new Error(`qkvAttention: normMode must be 0 (none), 1 (full) or 2 (per head), got ${normMode}`);
  if (normMode !== 0 && (!qNorm || !kNorm)) throw new Error(`qkvAttention: qNorm and kNorm weights are needed with normMode ${normMode}`);
  if (cos.length < T * hd || sin.length < T * hd) throw new Error(`qkvAttention: cos and sin need T * hd = ${T * hd} elements`);
  const f32 = qkv instanceof Float32Array;
  const mk = (n: number): FloatArray => (f32 ? new Float32Array(n) : new Float64Array(n));
  const split = (at: number, w: number, bias: FloatArray | null): FloatArray => {
    if (bias && bias.length < w) throw new Error(`qkvAttention: a bias has ${bias.length} elements, ${w} needed`);
    const d = mk(T * w);
    for (let t = 0; t < T; t++) for (let j = 0; j < w; j++) d[t * w + j] = qkv[t * row + at + j]! + (bias ? bias[j]! : 0);
    return d;
  };
  let q = split(0, qw, qBias);
  let k = split(qw, kw, kBias);
  const v = split(qw + kw, kw, vBias);
  const norm = (x: FloatArray, gamma: FloatArray, rows: number, d: number): FloatArray => {
    if (gamma.length < d) throw new Error(`qkvAttention: a QK-norm weight has ${gamma.length} elements, ${d} needed`);
    const y = mk(rows * d);
    rmsNorm(x, gamma, y, mk(rows), rows, d, eps);
    return y;
  };
  if (normMode === 1) {
    q = norm(q, qNorm!, T, qw);
    k = norm(k, kNorm!, T, kw);
  } else if (normMode === 2) {
    q = norm(q, qNorm!, T * H, hd);
    k = norm(k, kNorm!, T * G, hd);
  }
  const r = f32 ? Math.fround : (x: number): number => x;
  const rotate = (x: FloatArray, heads: number): void => {
    const h = hd / 2;
    for (let t = 0; t < T; t++) {
      for (let head = 0; head < heads; head++) {
        const b = (t * heads + head) * hd;
        for (let i = 0; i < h; i++) {
          const x1 = x[b + i]!;
          const x2 = x[b + i + h]!;
          x[b + i] = r(r(x1 * cos[t * hd + i]!) + r(-x2 * sin[t * hd + i]!));
          x[b + i + h] = r(r(x2 * cos[t * hd + i + h]!) + r(x1 * sin[t * hd + i + h]!));
        }
      }
    }
  };
  rotate(q, H);
  rotate(k, G);
  kvWrite(k, keys, T, G, hd, maxLen, P);
  kvWrite(v, values, T, G, hd, maxLen, P);
  cachedAttention(q, keys, values, out, T, H, G, hd, maxLen, P, window, scale);
};
