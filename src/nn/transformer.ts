// Pre-norm transformer block around two ready sub-layers (nn/sublayers.ts):
//   x = x + attn(norm1(x));  x = x + ffn(norm2(x))
// The attention (default: dense multi-head) and the feed-forward (a dense MLP, or a sparse layer
// built above nn/: models/block.ts builds them from configs) are modules passed in.
//
// B = batch, T = time, d = channels.

import { Module } from './module.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { add, dropout } from '../ops/index.js';
import { MultiHeadAttention } from './attention.js';
import { MLP } from './mlp.js';
import { LayerNorm, RMSNorm } from './norm.js';
import { DepthRouter } from './mixture-of-depths.js';
import type { FeedForward, SelfAttention } from './sublayers.js';

export interface TransformerBlockConfig<M = unknown> {
  /** Channels d. */
  dModel: number;
  /** The feed-forward: a ready module of width dModel (nn's MLP, or a sparse layer such as moe/'s MoELayer). */
  ffn: FeedForward<M>;
  /** Name the feed-forward is registered under (parameter names 'mlp.w1...', 'moe.router...'); default 'mlp' for an MLP, required otherwise. */
  ffnName?: string;
  /** A ready self-attention of width dModel (e.g. moe/attention/'s SwitchHead); default: MultiHeadAttention from the options below. */
  attn?: SelfAttention;
  /** Default attention: heads (d must divide evenly). */
  heads?: number;
  /** Default attention: longest sequence (sizes the rotary tables). */
  maxSeqLen?: number;
  /** Default attention: causal self-attention (decoder) or full (encoder). */
  causal?: boolean;
  /** Default attention: rotary position embeddings on q and k (default false). */
  rope?: boolean;
  /** Default attention: rotary base (default 10000). */
  ropeBase?: number;
  /** Default attention: biases in the projections (default true). */
  bias?: boolean;
  /** 'layer' (default) or 'rms'. */
  norm?: 'layer' | 'rms';
  /** Norm epsilon (default: the norm's own, 1e-5 for layer, 1e-6 for rms). */
  normEps?: number;
  /** Dropout on attention weights (default attention) and on both residual branches, in training mode (default 0). */
  dropout?: number;
  /** Mixture-of-Depths capacity c in (0, 1]: only the top ceil(c T) tokens of a sequence run the block (nn/mixture-of-depths.ts); default 1 (off). */
  depthCapacity?: number;
  /** With depthCapacity < 1: train a predictor of the top-c choice (its BCE joins the aux loss) so that decoding can choose causally (default false). */
  depthPredictor?: boolean;
  rng?: Rng;
}

const CONFIG_KEYS = ['dModel', 'ffn', 'ffnName', 'attn', 'heads', 'maxSeqLen', 'causal', 'rope', 'ropeBase', 'bias', 'norm', 'normEps', 'dropout', 'depthCapacity', 'depthPredictor', 'rng'] as const;
const ATTENTION_KEYS = ['heads', 'maxSeqLen', 'causal', 'rope', 'ropeBase', 'bias'] as const;

export interface TransformerBlockOutput<M = unknown> {
  /** [B, T, d]. */
  y: Tensor;
  /** The feed-forward's weighted aux loss plus the depth predictor's loss (scalar), null when there is none. */
  auxLoss: Tensor | null;
  /** The feed-forward's routing metrics of this forward, null for a dense block. */
  metrics: M | null;
}

type Norm = LayerNorm | RMSNorm;

export class TransformerBlock<M = unknown> extends Module {
  readonly norm1: Norm;
  readonly attn: SelfAttention;
  readonly norm2: Norm;
  /** Registered under ffnName ('mlp' dense, 'moe' sparse), so parameter names say which. */
  readonly ffn: FeedForward<M>;
  /** The Mixture-of-Depths router (null at capacity 1). */
  readonly depth: DepthRouter | null;
  readonly dropout: number;
  private rng: Rng | undefined;

  constructor(readonly config: TransformerBlockConfig<M>) {
    super();
    for (const k of Object.keys(config)) {
      if (!(CONFIG_KEYS as readonly string[]).includes(k)) throw new Error(`TransformerBlock: unknown key '${k}' (allowed: ${CONFIG_KEYS.join(', ')})`);
    }
    const d = config.dModel;
    const norm = config.norm ?? 'layer';
    if (norm !== 'layer' && norm !== 'rms') throw new Error(`TransformerBlock: norm = '${String(norm)}' must be 'layer' or 'rms'`);
    this.dropout = config.dropout ?? 0;
    this.rng = config.rng;
    const rngOpt = config.rng ? { rng: config.rng } : {};
    const makeNorm = (): Norm => {
      const eps = config.normEps !== undefined ? { eps: config.normEps } : {};
      return norm === 'rms' ? new RMSNorm(d, eps) : new LayerNorm(d, eps);
    };
    this.norm1 = this.module('norm1', makeNorm());
    this.attn = this.module('attn', config.attn ? checkAttention(config, d) : new MultiHeadAttention(d, required(config.heads, 'heads'), {
      causal: required(config.causal, 'causal'),
      maxSeqLen: required(config.maxSeqLen, 'maxSeqLen'),
      rope: config.rope ?? false,
      bias: config.bias ?? true,
      dropout: this.dropout,
      ...(config.ropeBase !== undefined ? { ropeBase: config.ropeBase } : {}),
      ...rngOpt,
    }));
    this.norm2 = this.module('norm2', makeNorm());
    this.ffn = config.ffn;
    if (config.ffn instanceof MLP && config.ffn.d !== d) throw new Error(`TransformerBlock: ffn MLP has width ${config.ffn.d}, the block dModel = ${d}`);
    const ffnName = config.ffnName ?? (config.ffn instanceof MLP ? 'mlp' : null);
    if (ffnName === null) throw new Error(`TransformerBlock: ffnName must be set for a feed-forward that is not an MLP (got ${config.ffn.constructor.name}); it names its parameters`);
    this.module(ffnName, this.ffn);
    const cap = config.depthCapacity ?? 1;
    if (cap < 1 && this.attn.rotary) throw new Error(`TransformerBlock: depthCapacity = ${cap} needs rope: false (the chosen tokens would get rotary positions 0..C-1); use learned positions`);
    if (config.depthPredictor && cap >= 1) throw new Error('TransformerBlock: depthPredictor needs depthCapacity < 1');
    this.depth = cap < 1 ? this.module('depth', new DepthRouter(d, cap, { predictor: config.depthPredictor ?? false, ...rngOpt })) : null;
  }


  /** x [B, T, d] -> y [B, T, d]; tokenIds (B*T ids) is passed to the feed-forward (hash routing). */
  forward(x: Tensor, opts: { tokenIds?: Int32Array } = {}): TransformerBlockOutput<M> {
    if (!this.depth) return this.inner(x, opts);
    const ids = opts.tokenIds;
    // hash routing inside the block reads the ids of the chosen tokens only
    const out = this.depth.forward(x, (xs, _sel, rows) => this.inner(xs, ids ? { tokenIds: rows.map((r) => ids[r]!) } : {}));
    let auxLoss = out.predictorLoss;
    for (const o of out.inner) if (o.auxLoss) auxLoss = auxLoss ? add(auxLoss, o.auxLoss) : o.auxLoss;
    // metrics of the last call (a single batched call except in causal selection)
    return { y: out.y, auxLoss, metrics: out.inner.length > 0 ? out.inner[out.inner.length - 1]!.metrics : null };
  }

  private inner(x: Tensor, opts: { tokenIds?: Int32Array }): TransformerBlockOutput<M> {
    x = add(x, this.attn.forward(this.norm1.forward(x)));
    const out = this.feedForward(this.norm2.forward(x), opts.tokenIds);
    return { y: add(x, this.drop(out.y)), auxLoss: out.auxLoss, metrics: out.metrics };
  }

  /** The feed-forward of h [B, T, d] (no residual, no dropout), its output normalised to { y, auxLoss, metrics }. */
  feedForward(h: Tensor, tokenIds?: Int32Array): TransformerBlockOutput<M> {
    const out = this.ffn.forward(h, tokenIds ? { tokenIds } : {});
    if (out instanceof Tensor) return { y: out, auxLoss: null, metrics: null };
    return { y: out.y, auxLoss: out.auxLoss ?? null, metrics: out.metrics ?? null };
  }

  /** Restarts the dropout generator (Module.reseedAll calls it, so a resumed run drops the same units). */
  reseed(seed: number): void {
    this.rng = new Rng(seed);
  }

  private drop(x: Tensor): Tensor {
    if (!this.training || this.dropout === 0) return x;
    return dropout(x, this.dropout, this.rng ? { training: true, rng: this.rng } : { training: true });
  }
}

function required<T>(v: T | undefined, key: string): T {
  if (v === undefined) throw new Error(`TransformerBlock: ${key} must be set (it configures the default attention; or pass a ready attn)`);
  return v;
}

function checkAttention<M>(config: TransformerBlockConfig<M>, d: number): SelfAttention {
  const attn = config.attn!;
  for (const k of ATTENTION_KEYS) {
    if (config[k] !== undefined) throw new Error(`TransformerBlock: ${k} configures the default attention; with a ready attn (${attn.constructor.name}) set it there`);
  }
  if (attn.d !== d) throw new Error(`TransformerBlock: attn has width ${attn.d}, the block dModel = ${d}`);
  return attn;
}
