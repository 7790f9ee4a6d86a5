// Incremental (KV-cached) forward of the byte-level LM: each new byte attends to the stored keys
// and values of the earlier ones instead of re-running the whole window. A Mixture-of-Depths block
// with a predictor (causal selection) runs only the tokens it chooses and caches only theirs, so
// each layer has its own cached length.
//
// H = heads, hd = head size, P = positions already cached, T = new tokens, L = P + T.

import type { ByteLM } from './lm.js';
import type { SelfAttention } from '../nn/sublayers.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { add, gatherRows, matmul, mul, narrow, reshape, scatterAddRows, sigmoid, sub, transpose } from '../ops/index.js';
import { kernel } from '../kernels/registry.js';
import { BYTE_VOCAB_SIZE } from '../data/text.js';

/** Keys (after rotary) and values of past positions, per block [H, maxLen, hd], allocated once. */
export class ByteLMCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  private len = 0;
  /** Rows cached per layer: the positions for a plain block, the chosen tokens for a Mixture-of-Depths block. */
  private readonly layerLens: Int32Array;

  constructor(readonly layers: number, readonly heads: number, readonly headDim: number, readonly maxLen: number) {
    for (const [k, v] of Object.entries({ layers, heads, headDim, maxLen })) {
      if (!Number.isInteger(v) || v <= 0) throw new Error(`ByteLMCache: ${k} must be a positive integer, got ${v}`);
    }
    const n = heads * maxLen * headDim;
    this.keys = Array.from({ length: layers }, () => new Float32Array(n));
    this.values = Array.from({ length: layers }, () => new Float32Array(n));
    this.layerLens = new Int32Array(layers);
  }

  /** Rows held by one layer (less than length in a Mixture-of-Depths block, whose skipped tokens are not cached). */
  layerLength(layer: number): number {
    return this.layerLens[layer]!;
  }

  /** Positions filled (the position of the next token). */
  get length(): number {
    return this.len;
  }

  reset(): void {
    this.len = 0;
    this.layerLens.fill(0);
  }

  /** @internal forwardCached moves it after every block stored the new rows. */
  advance(T: number): void {
    this.len += T;
  }

  /** @internal one layer stored n more rows. */
  advanceLayer(layer: number, n: number): void {
    this.layerLens[layer]! += n;
  }
}

export function newByteLMCache(model: ByteLM, maxLen = model.config.maxSeqLen): ByteLMCache {
  const c = model.config;
  if (maxLen > c.maxSeqLen) throw new Error(`ByteLM cache: maxLen ${maxLen} exceeds the model's maxSeqLen = ${c.maxSeqLen}`);
  // the attention sets the cache's shape (attention-MoE may have its own heads and head size)
  const { heads, headDim } = model.blocks[0]!.attn;
  return new ByteLMCache(c.layers, heads, headDim, maxLen);
}

/**
 * Logits [T, 256] of the bytes ids, which follow the cache.length bytes already in the cache (eval
 * semantics: no dropout; no gradients). Equals the last T rows of model.forward on the whole
 * sequence, as long as it fits in maxSeqLen.
 */
export function forwardCached(model: ByteLM, ids: Int32Array, cache: ByteLMCache): Tensor {
  const c = model.config;
  const T = ids.length;
  const P = cache.length;
  if (T === 0) throw new Error('ByteLM.forwardCached: no tokens given');
  const { heads, headDim } = model.blocks[0]!.attn;
  if (cache.layers !== c.layers || cache.heads !== heads || cache.headDim !== headDim) {
    throw new Error(`ByteLM.forwardCached: the cache is for ${cache.layers} layers x ${cache.heads} heads x ${cache.headDim}, the model has ${c.layers} x ${heads} x ${headDim}`);
  }
  if (P + T > cache.maxLen) throw new Error(`ByteLM.forwardCached: ${P} cached + ${T} new positions exceed the cache's maxLen = ${cache.maxLen}`);
  for (let i = 0; i < T; i++) {
    const b = ids[i]!;
    if (!(b >= 0 && b < BYTE_VOCAB_SIZE)) throw new Error(`ByteLM.forwardCached: id ${b} at ${i} is not a byte (0..255)`);
  }
  return noGrad(() => {
    let x = model.tokenEmbedding.forward(new Tensor(ids, [1, T])); // [1, T, d]
    if (model.positionEmbedding) x = add(x, narrow(model.positionEmbedding, 0, P, T));
    model.blocks.forEach((block, l) => {
      const run = (xs: Tensor, rowIds: Int32Array): Tensor => {
        const n = rowIds.length;
        xs = add(xs, cachedAttention(block.attn, block.norm1.forward(xs), cache, l, cache.layerLength(l), n));
        cache.advanceLayer(l, n);
        return add(xs, block.feedForward(block.norm2.forward(xs), rowIds).y);
      };
      if (!block.depth) {
        x = run(x, ids);
        return;
      }
      // Mixture-of-Depths: the predictor's causal choice, as the full forward makes it in causal selection
      const d = block.depth.dModel;
      const x2 = reshape(x, [T, d]);
      const { rows } = block.depth.causalRows(x2, 1, T);
      if (rows.length === 0) return;
      const xs = gatherRows(x2, rows);
      const update = sub(reshape(run(reshape(xs, [1, rows.length, d]), rows.map((r) => ids[r]!)), [rows.length, d]), xs);
      const gate = sigmoid(gatherRows(block.depth.scores(x2), rows));
      x = reshape(add(x2, scatterAddRows(mul(update, gate), rows, T)), [1, T, d]);
    });
    cache.advance(T);
    const h = model.finalNorm.forward(x);
    const logits = model.head ? model.head.forward(h) : matmul(h, model.tokenEmbedding.weight, { transB: true });
    return reshape(logits, [T, BYTE_VOCAB_SIZE]);
  });
}

/** Causal self-attention of T new rows h [1, T, d] over the cached P rows and themselves, through the cachedAttention kernel. */
function cachedAttention(attn: SelfAttention, h: Tensor, cache: ByteLMCache, layer: number, P: number, T: number): Tensor {
  const { heads: H, headDim: hd } = attn;
  const { q, k, v, state } = attn.cacheProjections(h, P); // [H, T, hd] each
  // store the new rows; attention then reads the cache in place (no copy of the L cached rows)
  const K = cache.keys[layer]!;
  const V = cache.values[layer]!;
  const kd = k.data;
  const vd = v.data;
  const stride = cache.maxLen * hd;
  for (let hh = 0; hh < H; hh++) {
    K.set(kd.subarray(hh * T * hd, (hh + 1) * T * hd), hh * stride + P * hd);
    V.set(vd.subarray(hh * T * hd, (hh + 1) * T * hd), hh * stride + P * hd);
  }
  const qt = transpose(q, [1, 0, 2]); // [T, H, hd]
  const out = new Float32Array(T * H * hd);
  const qd = qt.data instanceof Float32Array ? qt.data : Float32Array.from(qt.data); // a float64 model (js backend) attends in float32, as its cache holds
  kernel('cachedAttention')(qd, K, V, out, T, H, H, hd, cache.maxLen, P, 0, 1 / Math.sqrt(hd));
  return attn.cacheOutput(new Tensor(out, [T, H, hd]), state);
}
