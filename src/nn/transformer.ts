// Pre-norm transformer block whose feed-forward is a dense MLP or an MoE layer:
//   x = x + attn(norm1(x));  x = x + ffn(norm2(x))
//
// B = batch, T = time, d = channels.

import { Module } from './module.js';
import type { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { add, dropout } from '../ops/index.js';
import { MultiHeadAttention } from './attention.js';
import { MLP, type MLPActivation } from './mlp.js';
import { LayerNorm, RMSNorm } from './norm.js';
import { MoELayer, type MoELayerConfig } from '../moe/layer.js';
import type { RouterMetrics } from '../moe/metrics.js';
import { checkKeys } from '../moe/config.js';
import { DepthRouter } from './mixture-of-depths.js';

/** Dense feed-forward: d -> hidden -> d. */
export interface DenseFFNConfig {
  type: 'mlp';
  hidden: number;
  /** Default 'gelu'. */
  activation?: MLPActivation;
  /** Default false. */
  bias?: boolean;
}

/** Sparse feed-forward: an MoELayer; dModel comes from the block. */
export type MoEFFNConfig = { type: 'moe' } & Omit<MoELayerConfig, 'dModel'>;

export type FeedForwardConfig = DenseFFNConfig | MoEFFNConfig;

export interface TransformerBlockConfig {
  /** Channels d. */
  dModel: number;
  /** Attention heads (d must divide evenly). */
  heads: number;
  /** Longest sequence (sizes the rotary tables). */
  maxSeqLen: number;
  /** Causal self-attention (decoder) or full (encoder). */
  causal: boolean;
  /** The feed-forward: a config, or a ready MLP / MoELayer of width dModel. */
  ffn: FeedForwardConfig | MLP | MoELayer;
  /** 'layer' (default) or 'rms'. */
  norm?: 'layer' | 'rms';
  /** Norm epsilon (default: the norm's own, 1e-5 for layer, 1e-6 for rms). */
  normEps?: number;
  /** Rotary position embeddings on q and k (default false). */
  rope?: boolean;
  /** Rotary base (default 10000). */
  ropeBase?: number;
  /** Biases in the attention projections (default true). */
  bias?: boolean;
  /** Dropout on attention weights and on both residual branches, in training mode (default 0). */
  dropout?: number;
  /** Mixture-of-Depths capacity c in (0, 1]: only the top ceil(c T) tokens of a sequence run the block (nn/mixture-of-depths.ts); default 1 (off). */
  depthCapacity?: number;
  rng?: Rng;
}

const CONFIG_KEYS = ['dModel', 'heads', 'maxSeqLen', 'causal', 'ffn', 'norm', 'normEps', 'rope', 'ropeBase', 'bias', 'dropout', 'depthCapacity', 'rng'] as const;
const DENSE_KEYS = ['type', 'hidden', 'activation', 'bias'] as const;

export interface TransformerBlockOutput {
  /** [B, T, d]. */
  y: Tensor;
  /** The MoE layer's weighted aux loss (scalar), null for a dense block. */
  auxLoss: Tensor | null;
  /** Router metrics of this block's forward, null for a dense block. */
  metrics: RouterMetrics | null;
}

type Norm = LayerNorm | RMSNorm;

export class TransformerBlock extends Module {
  readonly norm1: Norm;
  readonly attn: MultiHeadAttention;
  readonly norm2: Norm;
  /** Registered as 'mlp' (dense) or 'moe' (sparse), so parameter names say which. */
  readonly ffn: MLP | MoELayer;
  /** The Mixture-of-Depths router (null at capacity 1). */
  readonly depth: DepthRouter | null;
  readonly dropout: number;
  private rng: Rng | undefined;

  constructor(readonly config: TransformerBlockConfig) {
    super();
    checkKeys('TransformerBlock', config, CONFIG_KEYS);
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
    this.attn = this.module('attn', new MultiHeadAttention(d, config.heads, {
      causal: config.causal,
      maxSeqLen: config.maxSeqLen,
      rope: config.rope ?? false,
      bias: config.bias ?? true,
      dropout: this.dropout,
      ...(config.ropeBase !== undefined ? { ropeBase: config.ropeBase } : {}),
      ...rngOpt,
    }));
    this.norm2 = this.module('norm2', makeNorm());
    this.ffn = buildFFN(config.ffn, d, rngOpt);
    this.module(this.ffn instanceof MoELayer ? 'moe' : 'mlp', this.ffn);
    const cap = config.depthCapacity ?? 1;
    if (cap < 1 && config.rope) throw new Error(`TransformerBlock: depthCapacity = ${cap} needs rope: false (the chosen tokens would get rotary positions 0..C-1); use learned positions`);
    this.depth = cap < 1 ? this.module('depth', new DepthRouter(d, cap)) : null;
  }


  /** x [B, T, d] -> y [B, T, d]; tokenIds (B*T ids) is passed to the MoE layer for hash routing. */
  forward(x: Tensor, opts: { tokenIds?: Int32Array } = {}): TransformerBlockOutput {
    if (!this.depth) return this.inner(x, opts);
    const ids = opts.tokenIds;
    // hash routing inside the block reads the ids of the chosen tokens only
    const out = this.depth.forward(x, (xs, sel) => this.inner(xs, ids ? { tokenIds: sel.rows.map((r) => ids[r]!) } : {}));
    return { y: out.y, auxLoss: out.inner.auxLoss, metrics: out.inner.metrics };
  }

  private inner(x: Tensor, opts: { tokenIds?: Int32Array }): TransformerBlockOutput {
    x = add(x, this.attn.forward(this.norm1.forward(x)));
    const h = this.norm2.forward(x); // [B, T, d]
    if (this.ffn instanceof MoELayer) {
      const out = this.ffn.forward(h, opts.tokenIds ? { tokenIds: opts.tokenIds } : {});
      return { y: add(x, this.drop(out.y)), auxLoss: out.auxLoss, metrics: out.metrics };
    }
    return { y: add(x, this.drop(this.ffn.forward(h))), auxLoss: null, metrics: null };
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

function buildFFN(ffn: TransformerBlockConfig['ffn'], d: number, rngOpt: { rng?: Rng }): MLP | MoELayer {
  if (ffn instanceof MLP) {
    if (ffn.d !== d) throw new Error(`TransformerBlock: ffn MLP has width ${ffn.d}, the block dModel = ${d}`);
    return ffn;
  }
  if (ffn instanceof MoELayer) {
    if (ffn.config.dModel !== d) throw new Error(`TransformerBlock: ffn MoELayer has dModel = ${ffn.config.dModel}, the block dModel = ${d}`);
    return ffn;
  }
  if (ffn.type === 'mlp') {
    checkKeys('TransformerBlock.ffn', ffn, DENSE_KEYS);
    return new MLP(d, ffn.hidden, {
      ...(ffn.activation !== undefined ? { activation: ffn.activation } : {}),
      ...(ffn.bias !== undefined ? { bias: ffn.bias } : {}),
      ...rngOpt,
    });
  }
  if (ffn.type === 'moe') {
    const { type: _type, ...rest } = ffn;
    if ('dModel' in rest) throw new Error("TransformerBlock: ffn.dModel must not be set; the block's dModel is used");
    return new MoELayer({ dModel: d, ...rest });
  }
  throw new Error(`TransformerBlock: ffn.type = '${String((ffn as { type: unknown }).type)}' must be 'mlp' or 'moe'`);
}
