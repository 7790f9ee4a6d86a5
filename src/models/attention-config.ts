// The attention of a transformer block from its config: 'mha' (nn's dense multi-head attention,
// built by the block itself), 'switchhead' (attention-MoE, moe/attention/switchhead.ts), or a ready module.

import type { SelfAttention } from '../nn/sublayers.js';
import type { TransformerBlockConfig } from '../nn/transformer.js';
import type { Rng } from '../tensor/rng.js';
import { SwitchHead } from '../moe/attention/switchhead.js';

/** Dense multi-head attention (the block's default; heads, rope, bias are block options). */
export interface MHAConfig {
  type: 'mha';
}

/** SwitchHead: k of E value and output experts per head and token, chosen by sigmoid gates; dense queries and keys. */
export interface SwitchHeadConfig {
  type: 'switchhead';
  /** Heads H (default: the block's heads). */
  heads?: number;
  /** Head size (default dModel / heads). */
  headDim?: number;
  /** Experts per head E (default 4). */
  experts?: number;
  /** Experts per head and token k (default 2). */
  k?: number;
}

export type AttentionConfig = MHAConfig | SwitchHeadConfig;

export const ATTENTION_TYPES = ['mha', 'switchhead'] as const;
const SWITCHHEAD_KEYS = ['type', 'heads', 'headDim', 'experts', 'k'];

/** Checks an attention config (unknown keys and bad values are errors naming `path`'s field); returns it with defaults filled. */
export function validateAttention(v: unknown, path: string): AttentionConfig {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: expected an object { type: 'mha' | 'switchhead', ... }, got ${JSON.stringify(v)}`);
  const o = v as Record<string, unknown>;
  if (o['type'] === 'mha') {
    for (const k of Object.keys(o)) if (k !== 'type') throw new Error(`${path}.${k}: unknown key for type 'mha' (heads, rope and bias are model options)`);
    return { type: 'mha' };
  }
  if (o['type'] !== 'switchhead') throw new Error(`${path}.type: expected one of ${ATTENTION_TYPES.join(', ')}, got ${JSON.stringify(o['type'])}`);
  for (const k of Object.keys(o)) if (!SWITCHHEAD_KEYS.includes(k)) throw new Error(`${path}.${k}: unknown key (known: ${SWITCHHEAD_KEYS.join(', ')})`);
  const int = (k: string): number | undefined => {
    const x = o[k];
    if (x === undefined) return undefined;
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 1) throw new Error(`${path}.${k}: expected an integer >= 1, got ${JSON.stringify(x)}`);
    return x;
  };
  const experts = int('experts') ?? 4;
  const k = int('k') ?? Math.min(2, experts);
  if (k > experts) throw new Error(`${path}.k: ${k} must be at most experts = ${experts}`);
  const heads = int('heads');
  const headDim = int('headDim');
  return { type: 'switchhead', experts, k, ...(heads !== undefined ? { heads } : {}), ...(headDim !== undefined ? { headDim } : {}) };
}

/** Block options the attention reads (heads, maxSeqLen, causal, rope, ...). */
export type AttentionBlockOptions = Omit<TransformerBlockConfig, 'ffn' | 'ffnName' | 'attn'>;

/** The attention module for a block, or null for 'mha' (the block builds its own from the same options). */
export function attentionModule(att: AttentionConfig | SelfAttention, block: AttentionBlockOptions, rngOpt: { rng?: Rng }): SelfAttention | null {
  if (typeof (att as SelfAttention).forward === 'function') return att as SelfAttention;
  const c = validateAttention(att, 'TransformerBlock.attention');
  if (c.type === 'mha') return null;
  const heads = c.heads ?? block.heads;
  if (heads === undefined) throw new Error('TransformerBlock.attention.heads: required (or set the block heads)');
  if (block.maxSeqLen === undefined || block.causal === undefined) throw new Error('TransformerBlock: maxSeqLen and causal must be set for the attention');
  if (block.bias === true) throw new Error('TransformerBlock: bias: true is not supported by switchhead attention (its projections have no biases)');
  return new SwitchHead(block.dModel, {
    heads, experts: c.experts!, k: c.k!, causal: block.causal, maxSeqLen: block.maxSeqLen,
    ...(c.headDim !== undefined ? { headDim: c.headDim } : {}),
    ...(block.rope !== undefined ? { rope: block.rope } : {}),
    ...(block.ropeBase !== undefined ? { ropeBase: block.ropeBase } : {}),
    ...(block.dropout !== undefined ? { dropout: block.dropout } : {}),
    ...rngOpt,
  });
}
