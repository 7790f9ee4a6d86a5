// Multi-head self-attention with a fused qkv projection, optional causal mask and rotary positions.
//
// B = batch, T = time, d = channels, H = heads, hd = d / H (head size).

import { Module } from './module.js';
import { Tensor } from '../tensor/tensor.js';
import { allocArray, type DType } from '../tensor/dtype.js';
import { Rng } from '../tensor/rng.js';
import { Linear } from './linear.js';
import { RotaryEmbedding } from './rope.js';
import { add, dropout, matmul, mul, narrow, reshape, softmax, transpose } from '../ops/index.js';
import type { CachedProjections, SelfAttention } from './sublayers.js';

export interface MultiHeadAttentionOptions {
  /** Mask future positions (decoder self-attention). */
  causal: boolean;
  /** Longest sequence the layer accepts (sizes the rotary tables). */
  maxSeqLen: number;
  /** Rotate q and k by rotary position embeddings (default false). */
  rope?: boolean;
  /** Rotary wavelength base (default 10000). */
  ropeBase?: number;
  /** Biases on the qkv and output projections (default true, like nn.MultiheadAttention). */
  bias?: boolean;
  /** Dropout on the attention weights and on the output, in training mode (default 0). */
  dropout?: number;
  rng?: Rng;
}

// -1e9 rather than -Infinity: exp underflows to exactly 0 either way, and a finite value cannot
// produce NaN in a kernel that computes (x - max) with max = -Infinity.
const MASKED = -1e9;

const masks = new Map<string, Tensor>();

/** Constant [T, T]: 0 on and below the diagonal, MASKED above (key j > query i); shared by every attention. */
export function causalMask(T: number, dtype: DType): Tensor {
  const key = `${T}:${dtype}`;
  let m = masks.get(key);
  if (!m) {
    const data = allocArray(dtype, T * T);
    for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) data[i * T + j] = MASKED;
    m = new Tensor(data, [T, T]);
    masks.set(key, m);
  }
  return m;
}

export class MultiHeadAttention extends Module implements SelfAttention {
  /** Fused projection: weight [3d, d], rows q, then k, then v (nanoGPT's c_attn). */
  readonly qkv: Linear;
  /** Output projection: weight [d, d]. */
  readonly proj: Linear;
  readonly rotary: RotaryEmbedding | null;
  readonly headDim: number;
  readonly causal: boolean;
  readonly maxSeqLen: number;
  readonly dropout: number;
  private rng: Rng | undefined;

  constructor(readonly d: number, readonly heads: number, opts: MultiHeadAttentionOptions) {
    super();
    if (!Number.isInteger(d) || d <= 0) throw new Error(`MultiHeadAttention: d must be a positive integer, got ${d}`);
    if (!Number.isInteger(heads) || heads <= 0 || d % heads !== 0) throw new Error(`MultiHeadAttention: heads = ${heads} must be a positive divisor of d = ${d}`);
    if (!Number.isInteger(opts.maxSeqLen) || opts.maxSeqLen <= 0) throw new Error(`MultiHeadAttention: maxSeqLen must be a positive integer, got ${opts.maxSeqLen}`);
    this.headDim = d / heads;
    this.causal = opts.causal;
    this.maxSeqLen = opts.maxSeqLen;
    this.dropout = opts.dropout ?? 0;
    if (!(this.dropout >= 0 && this.dropout < 1)) throw new Error(`MultiHeadAttention: dropout must be in [0, 1), got ${this.dropout}`);
    this.rng = opts.rng;
    const lin = { bias: opts.bias ?? true, ...(opts.rng ? { rng: opts.rng } : {}) };
    this.qkv = this.module('qkv', new Linear(d, 3 * d, lin));
    this.proj = this.module('proj', new Linear(d, d, lin));
    if (opts.rope && this.headDim % 2 !== 0) throw new Error(`MultiHeadAttention: rope needs an even head size, got d / heads = ${this.headDim}`);
    this.rotary = opts.rope ? new RotaryEmbedding(this.headDim, { maxSeqLen: opts.maxSeqLen, ...(opts.ropeBase !== undefined ? { base: opts.ropeBase } : {}) }) : null;
  }

  /** Restarts the dropout generator (Module.reseedAll calls it, so a resumed run drops the same units). */
  reseed(seed: number): void {
    this.rng = new Rng(seed);
  }

  private drop(x: Tensor): Tensor {
    if (!this.training || this.dropout === 0) return x;
    return dropout(x, this.dropout, this.rng ? { training: true, rng: this.rng } : { training: true });
  }

  /** x [B, T, d] -> [B, T, d]. */
  forward(x: Tensor): Tensor {
    const { d, heads: H, headDim: hd } = this;
    if (x.rank !== 3 || x.shape[2] !== d) throw new Error(`MultiHeadAttention: input must be [B, T, ${d}], got [${x.shape.join(', ')}]`);
    const [B, T] = x.shape as [number, number, number];
    if (T > this.maxSeqLen) throw new Error(`MultiHeadAttention: sequence length ${T} exceeds maxSeqLen = ${this.maxSeqLen}`);
    const qkv = reshape(this.qkv.forward(x), [B, T, 3, H, hd]); // [B, T, 3d] viewed per head
    const split = transpose(qkv, [2, 0, 3, 1, 4]); // [3, B, H, T, hd]
    const part = (i: number): Tensor => reshape(narrow(split, 0, i, 1), [B, H, T, hd]);
    let q = part(0); // [B, H, T, hd]
    let k = part(1); // [B, H, T, hd]
    const v = part(2); // [B, H, T, hd]
    if (this.rotary) {
      q = this.rotary.forward(q);
      k = this.rotary.forward(k);
    }
    let scores = mul(matmul(q, k, { transB: true }), 1 / Math.sqrt(hd)); // [B, H, T, T]
    if (this.causal) scores = add(scores, causalMask(T, x.dtype));
    const att = this.drop(softmax(scores, -1)); // [B, H, T, T]
    const heads = matmul(att, v); // [B, H, T, hd]
    const merged = reshape(transpose(heads, [0, 2, 1, 3]), [B, T, d]); // [B, T, H, hd] -> [B, T, d]
    return this.drop(this.proj.forward(merged));
  }

  /** h [1, T, d] at positions P .. P + T - 1 -> q, k (rotated), v [H, T, hd] for the KV cache. */
  cacheProjections(h: Tensor, P: number): CachedProjections {
    const { heads: H, headDim: hd } = this;
    const T = h.size / this.d;
    const split = transpose(reshape(this.qkv.forward(h), [T, 3, H, hd]), [1, 2, 0, 3]); // [3, H, T, hd]
    const part = (i: number): Tensor => reshape(narrow(split, 0, i, 1), [H, T, hd]);
    const q = part(0);
    const k = part(1);
    return { q: this.rotary ? this.rotary.forward(q, P) : q, k: this.rotary ? this.rotary.forward(k, P) : k, v: part(2), state: null };
  }

  /** Attention outputs [T, H, hd] -> [1, T, d]. */
  cacheOutput(heads: Tensor): Tensor {
    const T = heads.size / this.d;
    return this.proj.forward(reshape(heads, [1, T, this.d]));
  }
}
