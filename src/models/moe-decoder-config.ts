// The MoE decoder's typed config (one for Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) and its mapping from and to HF config.json.

import { HF_MODEL_TYPES, HFConfigReader, type HFConfig, type HFModelType } from '../formats/hf/config.js';

export type MoEFamily = HFModelType;

/** How a token picks its experts. */
export type DecoderRouterConfig =
  /** softmax over all experts, top-k, optionally renormalised over the k (Mixtral: always; Qwen/OLMoE: norm_topk_prob). */
  | { type: 'softmax'; normTopkProb: boolean }
  /** DeepSeek-V3-style sigmoid affinities with group-limited selection (src/moe/routers/sigmoid-group.ts). */
  | { type: 'sigmoid-group'; groups: number; topkGroups: number; routedScaling: number; normTopkProb: boolean };

export interface RopeScaling {
  /** 'linear': positions divided by factor (position interpolation). */
  type: 'linear';
  factor: number;
}

export interface MoEDecoderConfig {
  /** The HF layout the model reads and writes (tensor names, config keys). */
  family: MoEFamily;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** Key/value heads (grouped-query attention); divides numHeads. */
  numKVHeads: number;
  /** Per-head width (Qwen3-MoE sets it apart from hiddenSize / numHeads). */
  headDim: number;
  numExperts: number;
  /** Experts per token. */
  topK: number;
  /** Hidden width of each routed expert. */
  moeIntermediateSize: number;
  router: DecoderRouterConfig;
  /** Hidden width of the dense MLP in denseLayers (0 when there are none). */
  denseIntermediateSize: number;
  /** Layers with a dense SwiGLU MLP instead of experts (Qwen's mlp_only_layers / decoder_sparse_step). */
  denseLayers: number[];
  /** Hidden width of a shared expert every token passes through (Qwen2-MoE); 0 = none. */
  sharedExpertIntermediateSize: number;
  /** Scale the shared expert by sigmoid(x w_g) (Qwen2-MoE's shared_expert_gate). */
  sharedExpertGate: boolean;
  /** Biases on q, k, v (Qwen2-MoE). */
  qkvBias: boolean;
  /** RMSNorm of queries and keys: per head (Qwen3-MoE), over the full projections (OLMoE), or none. */
  qkNorm: 'none' | 'head' | 'full';
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  /** Keys further back than this many positions are masked (Mistral-style); null = full causal. */
  slidingWindow: number | null;
  /** lm_head shares the embedding matrix. */
  tieWordEmbeddings: boolean;
  /** Longest context the model is meant for (sizes a KV cache by default). */
  maxPositionEmbeddings: number;
}

/** Checks a config; every message names the field. */
export function validateMoEDecoderConfig(c: MoEDecoderConfig): void {
  const fail = (msg: string): never => { throw new Error(`MoEDecoderConfig: ${msg}`); };
  if (!(HF_MODEL_TYPES as readonly string[]).includes(c.family)) fail(`family '${String(c.family)}' is not one of ${HF_MODEL_TYPES.join(', ')}`);
  const pos = ['vocabSize', 'hiddenSize', 'numLayers', 'numHeads', 'numKVHeads', 'headDim', 'numExperts', 'topK', 'moeIntermediateSize', 'maxPositionEmbeddings'] as const;
  for (const k of pos) if (!Number.isInteger(c[k]) || c[k] <= 0) fail(`${k} = ${c[k]} must be a positive integer`);
  for (const k of ['denseIntermediateSize', 'sharedExpertIntermediateSize'] as const) if (!Number.isInteger(c[k]) || c[k] < 0) fail(`${k} = ${c[k]} must be a non-negative integer`);
  if (c.numHeads % c.numKVHeads !== 0) fail(`numKVHeads = ${c.numKVHeads} must divide numHeads = ${c.numHeads}`);
  if (c.headDim % 2 !== 0) fail(`headDim = ${c.headDim} must be even (rotary embedding pairs channels)`);
  if (c.topK > c.numExperts) fail(`topK = ${c.topK} exceeds numExperts = ${c.numExperts}`);
  for (const l of c.denseLayers) if (!Number.isInteger(l) || l < 0 || l >= c.numLayers) fail(`denseLayers entry ${l} is not a layer in [0, ${c.numLayers})`);
  if (c.denseLayers.length > 0 && c.denseIntermediateSize === 0) fail('denseLayers are given but denseIntermediateSize is 0');
  if (c.sharedExpertGate && c.sharedExpertIntermediateSize === 0) fail('sharedExpertGate without a shared expert (sharedExpertIntermediateSize = 0)');
  if (!['none', 'head', 'full'].includes(c.qkNorm)) fail(`qkNorm '${String(c.qkNorm)}' must be none, head or full`);
  if (!(c.rmsNormEps > 0)) fail(`rmsNormEps = ${c.rmsNormEps} must be > 0`);
  if (!(c.ropeTheta > 1)) fail(`ropeTheta = ${c.ropeTheta} must be > 1`);
  if (c.ropeScaling && !(c.ropeScaling.type === 'linear' && c.ropeScaling.factor > 0)) fail(`ropeScaling ${JSON.stringify(c.ropeScaling)} must be { type: 'linear', factor > 0 } or null`);
  if (c.slidingWindow !== null && !(Number.isInteger(c.slidingWindow) && c.slidingWindow > 0)) fail(`slidingWindow = ${c.slidingWindow} must be a positive integer or null`);
  const r = c.router;
  if (r.type === 'sigmoid-group') {
    if (!Number.isInteger(r.groups) || r.groups < 1 || c.numExperts % r.groups !== 0) fail(`router.groups = ${r.groups} must divide numExperts = ${c.numExperts}`);
    if (!Number.isInteger(r.topkGroups) || r.topkGroups < 1 || r.topkGroups > r.groups) fail(`router.topkGroups = ${r.topkGroups} must be in [1, groups]`);
  } else if (r.type !== 'softmax') {
    fail(`router.type '${String((r as { type: unknown }).type)}' must be softmax or sigmoid-group`);
  }
}

/** Layers with experts (all but denseLayers). */
export function isSparseLayer(c: MoEDecoderConfig, layer: number): boolean {
  return !c.denseLayers.includes(layer);
}

// Class defaults of transformers' config classes, used when config.json leaves a key out.
const DEFAULTS: Record<MoEFamily, { eps: number; theta: number }> = {
  mixtral: { eps: 1e-5, theta: 1e6 },
  qwen2_moe: { eps: 1e-6, theta: 10000 },
  qwen3_moe: { eps: 1e-6, theta: 10000 },
  olmoe: { eps: 1e-5, theta: 10000 },
};

function ropeScalingFrom(r: HFConfigReader): RopeScaling | null {
  const rs = r.object('rope_scaling');
  if (!rs) return null;
  const type = rs['rope_type'] ?? rs['type'];
  if (type === 'default') return null;
  if (type === 'linear') {
    const f = rs['factor'];
    if (typeof f !== 'number' || !(f > 0)) throw new Error(`${r.file}: rope_scaling.factor = ${JSON.stringify(f)} must be a number > 0`);
    return { type: 'linear', factor: f };
  }
  throw new Error(`${r.file}: rope_scaling type ${JSON.stringify(type)} is not supported (supported: linear, default; dynamic, yarn and the others are not implemented)`);
}

/** MoEDecoderConfig from a parsed config.json; unsupported settings are refused by name. */
export function decoderConfigFromHF(hf: HFConfig, file = 'config.json'): MoEDecoderConfig {
  const r = new HFConfigReader(hf, file);
  const family = hf.model_type;
  const act = r.string('hidden_act', 'silu');
  if (act !== 'silu') throw new Error(`${file}: hidden_act '${act}' is not supported (the ${family} experts here are SwiGLU: silu)`);
  const hidden = r.int('hidden_size');
  const heads = r.int('num_attention_heads');
  const numLayers = r.int('num_hidden_layers');
  const dflt = DEFAULTS[family];
  const common = {
    family, vocabSize: r.int('vocab_size'), hiddenSize: hidden, numLayers, numHeads: heads,
    numKVHeads: r.int('num_key_value_heads', heads),
    headDim: r.has('head_dim') ? r.int('head_dim') : hidden / heads,
    rmsNormEps: r.positive('rms_norm_eps', dflt.eps), ropeTheta: r.positive('rope_theta', dflt.theta),
    ropeScaling: ropeScalingFrom(r), tieWordEmbeddings: r.bool('tie_word_embeddings', false),
    maxPositionEmbeddings: r.int('max_position_embeddings', 4096),
  };
  if (!Number.isInteger(common.headDim)) throw new Error(`${file}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads} and head_dim is not given`);
  let c: MoEDecoderConfig;
  switch (family) {
    case 'mixtral': {
      if (r.bool('attention_bias', false)) throw new Error(`${file}: attention_bias = true is not supported for mixtral`);
      c = {
        ...common, numExperts: r.int('num_local_experts', 8), topK: r.int('num_experts_per_tok', 2), moeIntermediateSize: r.int('intermediate_size'),
        router: { type: 'softmax', normTopkProb: true }, denseIntermediateSize: 0, denseLayers: [],
        sharedExpertIntermediateSize: 0, sharedExpertGate: false, qkvBias: false, qkNorm: 'none',
        slidingWindow: r.has('sliding_window') ? r.int('sliding_window') : null,
      };
      break;
    }
    case 'qwen2_moe':
    case 'qwen3_moe': {
      if (r.bool('use_sliding_window', false)) throw new Error(`${file}: use_sliding_window = true is not supported for ${family}`);
      if (family === 'qwen3_moe' && r.bool('attention_bias', false)) throw new Error(`${file}: attention_bias = true is not supported for qwen3_moe`);
      const step = r.int('decoder_sparse_step', 1);
      const only = r.intList('mlp_only_layers');
      const dense = [...Array(numLayers).keys()].filter((l) => only.includes(l) || (l + 1) % step !== 0);
      const shared = family === 'qwen2_moe' ? r.int('shared_expert_intermediate_size', 0, 0) : 0;
      c = {
        ...common, numExperts: r.int('num_experts'), topK: r.int('num_experts_per_tok'), moeIntermediateSize: r.int('moe_intermediate_size'),
        router: { type: 'softmax', normTopkProb: r.bool('norm_topk_prob', false) },
        denseIntermediateSize: dense.length > 0 ? r.int('intermediate_size') : 0, denseLayers: dense,
        sharedExpertIntermediateSize: shared, sharedExpertGate: shared > 0,
        qkvBias: family === 'qwen2_moe' ? r.bool('qkv_bias', true) : false,
        qkNorm: family === 'qwen3_moe' ? 'head' : 'none', slidingWindow: null,
      };
      break;
    }
    case 'olmoe': {
      if (r.bool('attention_bias', false)) throw new Error(`${file}: attention_bias = true is not supported for olmoe`);
      if (r.has('clip_qkv')) throw new Error(`${file}: clip_qkv = ${JSON.stringify(hf['clip_qkv'])} is not supported (only null)`);
      c = {
        ...common, numExperts: r.int('num_experts', 64), topK: r.int('num_experts_per_tok', 8), moeIntermediateSize: r.int('intermediate_size'),
        router: { type: 'softmax', normTopkProb: r.bool('norm_topk_prob', false) }, denseIntermediateSize: 0, denseLayers: [],
        sharedExpertIntermediateSize: 0, sharedExpertGate: false, qkvBias: false, qkNorm: 'full', slidingWindow: null,
      };
      break;
    }
  }
  try {
    validateMoEDecoderConfig(c);
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  return c;
}

/** config.json for a config (what `moe create` and `toHF` write when no original config exists). */
export function decoderConfigToHF(c: MoEDecoderConfig): HFConfig {
  if (c.router.type !== 'softmax') throw new Error(`toHF: router '${c.router.type}' has no ${c.family} config.json form (only softmax top-k routing does)`);
  const archs: Record<MoEFamily, string> = { mixtral: 'MixtralForCausalLM', qwen2_moe: 'Qwen2MoeForCausalLM', qwen3_moe: 'Qwen3MoeForCausalLM', olmoe: 'OlmoeForCausalLM' };
  const base: Record<string, unknown> = {
    architectures: [archs[c.family]], model_type: c.family, vocab_size: c.vocabSize, hidden_size: c.hiddenSize,
    num_hidden_layers: c.numLayers, num_attention_heads: c.numHeads, num_key_value_heads: c.numKVHeads,
    hidden_act: 'silu', max_position_embeddings: c.maxPositionEmbeddings, rms_norm_eps: c.rmsNormEps, rope_theta: c.ropeTheta,
    rope_scaling: c.ropeScaling ? { rope_type: c.ropeScaling.type, factor: c.ropeScaling.factor } : null,
    tie_word_embeddings: c.tieWordEmbeddings, num_experts_per_tok: c.topK, torch_dtype: 'float32',
  };
  const needs = (cond: boolean, what: string): void => { if (!cond) throw new Error(`toHF: ${c.family} cannot express ${what}`); };
  switch (c.family) {
    case 'mixtral':
      needs(c.router.normTopkProb, 'norm_topk_prob = false');
      needs(c.denseLayers.length === 0 && c.sharedExpertIntermediateSize === 0 && !c.qkvBias && c.qkNorm === 'none', 'dense layers, shared experts, qkv bias or QK-norm');
      Object.assign(base, { head_dim: c.headDim, intermediate_size: c.moeIntermediateSize, num_local_experts: c.numExperts, sliding_window: c.slidingWindow });
      break;
    case 'qwen2_moe':
    case 'qwen3_moe': {
      needs(c.slidingWindow === null, 'a sliding window here');
      needs(c.qkNorm === (c.family === 'qwen3_moe' ? 'head' : 'none'), `qkNorm = ${c.qkNorm}`);
      if (c.family === 'qwen3_moe') needs(!c.qkvBias && c.sharedExpertIntermediateSize === 0, 'qkv bias or a shared expert');
      else needs(c.sharedExpertGate === c.sharedExpertIntermediateSize > 0, 'a shared expert without its gate');
      Object.assign(base, {
        intermediate_size: c.denseIntermediateSize || c.moeIntermediateSize, moe_intermediate_size: c.moeIntermediateSize,
        num_experts: c.numExperts, norm_topk_prob: c.router.normTopkProb, decoder_sparse_step: 1, mlp_only_layers: c.denseLayers,
        use_sliding_window: false,
      });
      if (c.family === 'qwen2_moe') Object.assign(base, { shared_expert_intermediate_size: c.sharedExpertIntermediateSize, qkv_bias: c.qkvBias });
      else Object.assign(base, { head_dim: c.headDim, attention_bias: false });
      break;
    }
    case 'olmoe':
      needs(c.qkNorm === 'full' && c.headDim * c.numHeads === c.hiddenSize, 'QK-norm other than full, or head_dim != hidden_size / heads');
      needs(c.denseLayers.length === 0 && c.sharedExpertIntermediateSize === 0 && !c.qkvBias && c.slidingWindow === null, 'dense layers, shared experts, qkv bias or a sliding window');
      Object.assign(base, { intermediate_size: c.moeIntermediateSize, num_experts: c.numExperts, norm_topk_prob: c.router.normTopkProb, attention_bias: false, clip_qkv: null });
      break;
  }
  return base as HFConfig;
}
