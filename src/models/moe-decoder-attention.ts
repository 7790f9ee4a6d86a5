// Attention helpers of the MoE decoder: rotary tables and the fused rotary, causal/sliding masks, attention over a KV cache.

import { KVCache } from '../nn/kv-cache.js';
import { Tensor } from '../tensor/tensor.js';
import { isGradEnabled } from '../tensor/autograd.js';
import { kernel } from '../kernels/registry.js';
import { applyRotary } from '../nn/rope.js';
import type { MoEDecoderConfig } from './moe-decoder-config.js';

// Finite rather than -Infinity: exp underflows to exactly 0 either way, and a row can never be all -Infinity.
const MASKED = -1e9;

/**
 * Rotary embedding of x [T, heads, hd] by tables [T, 1, hd]. Without gradients, one loop instead of
 * the seven ops of applyRotary (the decode step's largest share of small ops), with the same
 * float32 roundings: x1 c - x2 s and x2 c + x1 s, each product and sum rounded.
 */
export function rotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  if (isGradEnabled() || x.dtype !== 'float32') return applyRotary(x, cos, sin);
  const [T, H, hd] = x.shape as [number, number, number];
  const h = hd / 2;
  const xd = x.data as Float32Array;
  const c = cos.data as Float32Array;
  const s = sin.data as Float32Array;
  const out = new Float32Array(x.size);
  const f = Math.fround;
  for (let t = 0; t < T; t++) {
    const cb = t * hd;
    for (let head = 0; head < H; head++) {
      const b = (t * H + head) * hd;
      for (let i = 0; i < h; i++) {
        const x1 = xd[b + i]!;
        const x2 = xd[b + i + h]!;
        out[b + i] = f(f(x1 * c[cb + i]!) + f(-x2 * s[cb + i]!));
        out[b + i + h] = f(f(x2 * c[cb + i + h]!) + f(x1 * s[cb + i + h]!));
      }
    }
  }
  return new Tensor(out, x.shape);
}

/**
 * Attention of q [T, H, hd] (positions P .. P + T - 1, already written to the cache) over the
 * cache's first P + T positions, every head in one kernel call on the head-major cache (no copy of
 * past keys or values): [T, H, hd], written into out when given. Causal, and limited to the last
 * `window` positions when window is not null. Inference only (called under noGrad).
 */
export function cachedAttention(q: Tensor, cache: KVCache, layer: number, P: number, window: number | null, out?: Float32Array): Tensor {
  const [T, H, hd] = q.shape as [number, number, number];
  const o = out ?? new Float32Array(T * H * hd);
  kernel('cachedAttention')(q.data as Float32Array, cache.keys(layer), cache.values(layer), o, T, H, cache.numKVHeads, hd, cache.maxLen, P,
    window ?? 0, 1 / Math.sqrt(hd));
  return new Tensor(o, [T, H, hd]);
}

/** cos and sin [T, 1, hd] for positions P .. P + T - 1 (rotate-half layout, angles in float64). */
export function rotaryTables(c: Pick<MoEDecoderConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>, P: number, T: number): [Tensor, Tensor] {
  const hd = c.headDim;
  const h = hd / 2;
  const scale = c.ropeScaling ? 1 / c.ropeScaling.factor : 1;
  const cos = new Float32Array(T * hd);
  const sin = new Float32Array(T * hd);
  for (let j = 0; j < h; j++) {
    const invFreq = Math.pow(c.ropeTheta, (-2 * j) / hd);
    for (let t = 0; t < T; t++) {
      const a = (P + t) * scale * invFreq;
      cos[t * hd + j] = cos[t * hd + j + h] = Math.cos(a);
      sin[t * hd + j] = sin[t * hd + j + h] = Math.sin(a);
    }
  }
  return [new Tensor(cos, [T, 1, hd]), new Tensor(sin, [T, 1, hd])];
}

/** Additive mask [T, P + T]: query t (position P + t) sees keys j <= P + t within the window; null when nothing is masked. */
export function attentionMask(T: number, P: number, window: number | null): Tensor | null {
  const L = P + T;
  // T >= 2 always masks (query 0 cannot see the last key); a single query is masked only by the window (key 0 at P >= window).
  // A one-token decode step within the window (the hot path) masks nothing: no [1, L] buffer to fill.
  if (T === 0 || (T === 1 && (window === null || P < window))) return null;
  const data = new Float32Array(T * L);
  for (let t = 0; t < T; t++) {
    const i = P + t;
    for (let j = 0; j < L; j++) {
      if (j > i || (window !== null && i - j >= window)) data[t * L + j] = MASKED;
    }
  }
  return new Tensor(data, [T, L]);
}
