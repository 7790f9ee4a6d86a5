// The attention of a transformer block from its config: 'mha' (nn's dense multi-head attention,
// built by the block itself) or a ready SelfAttention module.

import type { SelfAttention } from '../nn/sublayers.js';
import type { TransformerBlockConfig } from '../nn/transformer.js';
import type { Rng } from '../tensor/rng.js';

/** Dense multi-head attention (the block's default). */
export interface MHAConfig {
  type: 'mha';
}

export type AttentionConfig = MHAConfig;

/** Block options the attention reads (heads, maxSeqLen, causal, rope, ...). */
export type AttentionBlockOptions = Omit<TransformerBlockConfig, 'ffn' | 'ffnName' | 'attn'>;

/** The attention module for a block, or null for 'mha' (the block builds its own from the same options). */
export function attentionModule(att: AttentionConfig | SelfAttention, _block: AttentionBlockOptions, _rngOpt: { rng?: Rng }): SelfAttention | null {
  if (typeof (att as SelfAttention).forward === 'function') return att as SelfAttention;
  const type = (att as { type?: unknown }).type;
  if (type === 'mha') {
    if (Object.keys(att).length !== 1) throw new Error(`TransformerBlock.attention: 'mha' takes no options here (heads, rope, bias are block options), got keys ${Object.keys(att).join(', ')}`);
    return null;
  }
  throw new Error(`TransformerBlock.attention.type = '${String(type)}' must be 'mha'`);
}
