// Builds a transformer block from configs: the feed-forward ('mlp' or 'moe') and the attention
// (dense multi-head, or attention-MoE) are made here, above nn/, and handed to nn's block as modules.
//
// d = channels (dModel).

import { TransformerBlock, type TransformerBlockConfig } from '../nn/transformer.js';
import { MLP } from '../nn/mlp.js';
import type { Activation } from '../nn/activations.js';
import type { SelfAttention } from '../nn/sublayers.js';
import type { Rng } from '../tensor/rng.js';
import { MoELayer, type MoELayerConfig } from '../moe/layer.js';
import type { RouterMetrics } from '../moe/metrics.js';
import { checkKeys } from '../moe/config.js';
import { attentionModule, type AttentionConfig } from './attention-config.js';

/** Dense feed-forward: d -> hidden -> d. */
export interface DenseFFNConfig {
  type: 'mlp';
  hidden: number;
  /** Default 'gelu'. */
  activation?: Activation;
  /** Default false. */
  bias?: boolean;
}

/** Sparse feed-forward: an MoELayer; dModel comes from the block. */
export type MoEFFNConfig = { type: 'moe' } & Omit<MoELayerConfig, 'dModel'>;

export type FeedForwardConfig = DenseFFNConfig | MoEFFNConfig;

/** nn's block config with the feed-forward (and optionally the attention) given as configs or ready modules. */
export type BlockSpec = Omit<TransformerBlockConfig<RouterMetrics>, 'ffn' | 'ffnName' | 'attn'> & {
  ffn: FeedForwardConfig | MLP | MoELayer;
  /** 'mha' (default: the block's multi-head attention from heads, maxSeqLen, causal, rope, ...), an attention-MoE config, or a ready module. */
  attention?: AttentionConfig | SelfAttention;
};

const DENSE_KEYS = ['type', 'hidden', 'activation', 'bias'] as const;

/** A TransformerBlock whose feed-forward is built from spec.ffn ('mlp' registered as 'mlp', 'moe' as 'moe': checkpoint names unchanged). */
export function transformerBlock(spec: BlockSpec): TransformerBlock<RouterMetrics> {
  const { ffn: ffnSpec, attention, ...rest } = spec;
  if (ffnSpec === undefined || ffnSpec === null) throw new Error('TransformerBlock: ffn must be set (a config { type: \'mlp\' | \'moe\', ... } or a ready MLP / MoELayer)');
  const rngOpt = spec.rng ? { rng: spec.rng } : {};
  const ffn = buildFeedForward(ffnSpec, spec.dModel, rngOpt);
  const ffnName = ffn instanceof MoELayer ? 'moe' : 'mlp';
  const attn = attention === undefined ? null : attentionModule(attention, rest, rngOpt);
  if (attn === null) return new TransformerBlock<RouterMetrics>({ ...rest, ffn, ffnName });
  // the attention options went into the module
  const { heads: _h, maxSeqLen: _m, causal: _c, rope: _r, ropeBase: _rb, bias: _b, ...blockOnly } = rest;
  return new TransformerBlock<RouterMetrics>({ ...blockOnly, ffn, ffnName, attn });
}

/** The feed-forward module of width d from its config (or a ready MLP / MoELayer, checked for width). */
export function buildFeedForward(ffn: FeedForwardConfig | MLP | MoELayer, d: number, rngOpt: { rng?: Rng } = {}): MLP | MoELayer {
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
