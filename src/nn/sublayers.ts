// The two sub-layers a transformer block composes, as interfaces: its attention and its
// feed-forward are ready modules built above nn/ (dense ones here, sparse ones in moe/), so the
// block knows no experts.
//
// B = batch, T = time, d = channels, H = heads, hd = head size.

import type { Module } from './module.js';
import type { Tensor } from '../tensor/tensor.js';
import type { RotaryEmbedding } from './rope.js';

/** What a sparse sub-layer adds to its output: its weighted aux loss and its routing metrics. */
export interface SublayerOutput<M> {
  /** Same shape as the input. */
  y: Tensor;
  /** Weighted aux loss (scalar) to add to the task loss; null or absent when there is none. */
  auxLoss?: Tensor | null;
  /** Routing metrics of this forward (the block passes them up untouched). */
  metrics?: M | null;
}

/**
 * A block's feed-forward: a dense MLP (returns a tensor) or a sparse layer such as moe/'s MoELayer
 * (returns y with its aux loss and metrics). tokenIds (B*T ids) serve hash routing.
 */
export interface FeedForward<M = unknown> extends Module {
  forward(x: Tensor, opts?: { tokenIds?: Int32Array }): Tensor | SublayerOutput<M>;
}

/** Per-head projections of T new tokens for the KV-cached path, and what the output projection needs later. */
export interface CachedProjections {
  /** Queries, keys, values [H, T, hd] (q and k after rotary at positions P .. P + T - 1). */
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** Anything the output projection of these tokens needs (e.g. a sparse layer's selection); opaque to the caller. */
  state: unknown;
}

/**
 * A block's self-attention: softmax(q k^T / sqrt(hd)) v per head between a query projection and an
 * output projection that may be dense (nn/attention.ts) or sparse (moe/attention/). The split into
 * projections and output lets a KV cache run the middle with its own kernel.
 */
export interface SelfAttention extends Module {
  readonly d: number;
  readonly heads: number;
  readonly headDim: number;
  readonly causal: boolean;
  readonly maxSeqLen: number;
  /** Rotary embedding on q and k, or null (learned or no positions). */
  readonly rotary: RotaryEmbedding | null;
  /** x [B, T, d] -> [B, T, d]. */
  forward(x: Tensor): Tensor;
  /** h [1, T, d] of tokens at positions P .. P + T - 1 -> their q, k, v per head (eval, for the KV cache). */
  cacheProjections(h: Tensor, P: number): CachedProjections;
  /** Attention outputs of those tokens [T, H, hd] -> the sub-layer's output [1, T, d]. */
  cacheOutput(heads: Tensor, state: unknown): Tensor;
}
