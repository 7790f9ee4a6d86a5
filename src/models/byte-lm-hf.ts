// A trained byte-level LM (`moe train`, model byte-lm) in an HF MoE layout: Mixtral, or Qwen2-MoE where
// Mixtral cannot say it (dense blocks between MoE blocks, gates not renormalised), with a bytes-only tokenizer.
//
// The byte LM and the MoE decoder compute the same function when the byte LM is built as the HF
// families are: RMSNorm pre-norms, rotary positions (rotate-half, base 10000), SwiGLU experts, dense
// multi-head attention without biases (attentionBias: false), softmax top-k routing. Everything
// else (LayerNorm, learned positions, GELU, SwitchHead, Mixture-of-Depths, other routers, expert
// biases) has no field in these configs and is refused by name rather than exported wrong.
// d = dModel, h = dFF (expert width), E = experts, V = 256 bytes.

import type { HFConfig } from '../formats/hf/config.js';
import { hfNames } from '../formats/hf/names.js';
import type { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { transpose } from '../ops/index.js';
import { MoELayer } from '../moe/layer.js';
import { TopKRouter } from '../moe/routers/topk.js';
import { RMSNorm } from '../nn/norm.js';
import { MLP } from '../nn/mlp.js';
import { BYTE_VOCAB_SIZE } from '../data/text.js';
import { ByteLM } from './lm.js';
import { decoderConfigToHF, type MoEDecoderConfig } from './moe-decoder-config.js';
import { readExpertTokenCounts, withExpertTokenCounts } from './expert-token-counts.js';

export interface ByteLMExport {
  config: HFConfig;
  /** The decoder config the HF config describes (for fromHF / tests). */
  decoderConfig: MoEDecoderConfig;
  /** HF names, HF [out, in] layouts, float32: views of the model's parameters where the layout is the same (readers copy). */
  tensors: Array<[string, Float32Array, number[]]>;
  /** What the export changes about the model's behaviour (e.g. an evaluation capacity factor it drops). */
  warnings: string[];
}

/** A stacked [E, in, out] tensor as E HF [out, in] matrices: one transpose of the stack, then a view per expert. */
function expertMatrices(t: Tensor): Float32Array[] {
  const [E, rows, cols] = t.shape as [number, number, number];
  const hf = noGrad(() => transpose(t)).data as Float32Array; // [E, out, in]
  return Array.from({ length: E }, (_, e) => hf.subarray(e * rows * cols, (e + 1) * rows * cols));
}

/**
 * The HF checkpoint of a byte LM: config.json (Mixtral, or Qwen2-MoE), tensors in HF names.
 * Throws naming the first config field or parameter that no HF MoE layout expresses.
 */
/** Per-expert training token counts as `moe train` keeps them (train/expert-counts.ts): tokens, and per MoE layer's module path. */
export interface ByteLMTrainedCounts {
  tokens: number;
  layers: Record<string, number[]>;
}

export function byteLMToHF(model: ByteLM, opts: { family?: string; counts?: ByteLMTrainedCounts } = {}): ByteLMExport {
  const c = model.config;
  if (opts.family !== undefined && opts.family !== 'mixtral' && opts.family !== 'qwen2_moe') {
    const why = opts.family === 'qwen3_moe' || opts.family === 'olmoe' ? ' (its attention normalises queries and keys, which the byte LM does not)' : '';
    throw new Error(`moe convert (byte-lm): --arch ${opts.family} cannot hold a byte LM${why}; use mixtral or qwen2_moe`);
  }
  const refuse = (what: string, why: string): never => {
    throw new Error(`moe convert (byte-lm): model.${what} ${why}; the HF MoE layouts (Mixtral, Qwen2-MoE) cannot express it`);
  };
  if (c.norm !== 'rms') refuse('norm', `is '${c.norm}' (they use RMSNorm: norm 'rms')`);
  if (c.positions !== 'rope') refuse('positions', `is '${c.positions}' (they use rotary positions: positions 'rope')`);
  if (c.activation !== 'swiglu') refuse('activation', `is '${c.activation}' (their experts are SwiGLU: activation 'swiglu')`);
  if (c.attention.type !== 'mha') refuse('attention', `is ${JSON.stringify(c.attention)} (dense multi-head attention only)`);
  if (c.attentionBias) refuse('attentionBias', 'is true (their attention projections have no biases: train with attentionBias false)');
  if (c.depthCapacity < 1) refuse('depthCapacity', `is ${c.depthCapacity} (Mixture-of-Depths)`);
  if (c.ffn !== 'moe') refuse('ffn', `is '${c.ffn}' (a dense model is not a MoE layout)`);

  const d = c.dModel;
  const warnings: string[] = [];
  const moeLayers: number[] = [];
  const denseLayers: number[] = [];
  let router: TopKRouter | null = null;
  let E = 0;
  let denseHidden = 0;
  const eps = new Set<number>();
  const ropeBases = new Set<number>();
  model.blocks.forEach((b, i) => {
    for (const n of [b.norm1, b.norm2]) if (n instanceof RMSNorm) eps.add(n.eps);
    ropeBases.add(b.config.ropeBase ?? 10000);
    if (b.ffn instanceof MoELayer) {
      const r = b.ffn.router;
      if (!(r instanceof TopKRouter) || (r.kind !== 'topk' && r.kind !== 'switch')) refuse('router', `of block ${i} is '${r.kind}' (softmax top-k routing only: router topk or switch)`);
      const tr = r as TopKRouter;
      if (router && (tr.k !== router.k || tr.normalize !== router.normalize || tr.order !== router.order)) refuse('router', `differs between blocks (block ${i})`);
      router = tr;
      if (E !== 0 && b.ffn.config.numExperts !== E) refuse('numExperts', `differs between blocks (block ${i}: ${b.ffn.config.numExperts} after ${E}, a grown model?)`);
      E = b.ffn.config.numExperts;
      if (b.ffn.shared) refuse('router', `of block ${i} has shared experts (moe-ts's shared bank has no Qwen2-MoE gate)`);
      if (b.ffn.config.evalCapacityFactor !== null && b.ffn.config.evalCapacityFactor !== undefined) {
        warnings.push(`block ${i} drops tokens over an evaluation capacity factor of ${b.ffn.config.evalCapacityFactor} in moe-ts; the HF model routes every token (dropless)`);
      }
      moeLayers.push(i);
    } else if (b.ffn instanceof MLP) {
      if (b.ffn.activation !== 'swiglu') refuse('activation', `of dense block ${i} is '${b.ffn.activation}'`);
      denseHidden = b.ffn.w1.weight.shape[0]!;
      denseLayers.push(i);
    } else {
      refuse('ffn', `of block ${i} is neither an MoE layer nor an MLP`);
    }
  });
  if (!router || moeLayers.length === 0) return refuse('ffn', 'has no MoE block');
  if (eps.size > 1 || !(model.finalNorm instanceof RMSNorm) || !eps.has(model.finalNorm.eps)) refuse('norm', 'eps differs between norms');
  if (ropeBases.size > 1) refuse('positions', 'rotary base differs between blocks');
  const r = router as TopKRouter;
  // softmax then top-k, renormalised over the k, and top-k of the logits then a softmax over them,
  // give the same gates; softmax then top-k without renormalising is Qwen's norm_topk_prob = false
  const normTopkProb = r.order === 'topk-softmax' || r.normalize;
  const mixtralFits = denseLayers.length === 0 && normTopkProb;
  if (opts.family === 'mixtral' && !mixtralFits) {
    refuse(denseLayers.length > 0 ? 'moeEvery' : 'router', denseLayers.length > 0 ? `gives dense blocks (${denseLayers.join(', ')}), which --arch mixtral has no place for (qwen2_moe has)` : 'does not renormalise the top-k gates, which --arch mixtral always does (qwen2_moe can leave them)');
  }
  const family = opts.family === 'qwen2_moe' || !mixtralFits ? 'qwen2_moe' : 'mixtral';
  const H = c.heads;
  const dc: MoEDecoderConfig = {
    family, vocabSize: BYTE_VOCAB_SIZE, hiddenSize: d, numLayers: c.layers, numHeads: H, numKVHeads: H, headDim: d / H,
    numExperts: E, topK: r.k, moeIntermediateSize: c.dFF, router: { type: 'softmax', normTopkProb },
    denseIntermediateSize: denseLayers.length > 0 ? denseHidden : 0, denseLayers,
    sharedExpertIntermediateSize: 0, sharedExpertGate: false,
    // Qwen2-MoE's attention always has q/k/v biases in HF transformers: written as zeros
    qkvBias: family === 'qwen2_moe', qkNorm: 'none',
    rmsNormEps: [...eps][0] ?? model.finalNorm.eps, ropeTheta: [...ropeBases][0]!, ropeScaling: null, slidingWindow: null,
    tieWordEmbeddings: c.tieEmbeddings, maxPositionEmbeddings: c.maxSeqLen,
  };
  let config = { ...decoderConfigToHF(dc), moe_ts: { convertedFrom: 'byte-lm' } } as HFConfig;
  if (opts.counts) {
    // the run's counts by module path (blocks.N.moe) -> config.json's per decoder layer (null: dense)
    const layers = Array.from({ length: c.layers }, (_, l) => (moeLayers.includes(l) ? opts.counts!.layers[`blocks.${l}.moe`] ?? null : null));
    const missing = moeLayers.find((l) => layers[l] === null);
    if (missing !== undefined) throw new Error(`moe convert (byte-lm): the run's expert token counts have no entry for blocks.${missing}.moe`);
    config = withExpertTokenCounts(config, { tokens: opts.counts.tokens, layers });
    readExpertTokenCounts(config, dc, 'the run\'s trainer state (expertTokenCounts)'); // the checks a load makes
  }

  // Every parameter must land somewhere: anything left over (a bias, an extra table) is refused by name.
  const state = new Map<string, Tensor>(model.namedParameters());
  const take = (name: string): Tensor => {
    const t = state.get(name);
    if (!t) throw new Error(`moe convert (byte-lm): parameter ${name} is missing from the model`);
    state.delete(name);
    if (t.dtype !== 'float32') throw new Error(`moe convert (byte-lm): parameter ${name} is ${t.dtype}, not float32`);
    return t;
  };
  const data = (t: Tensor): Float32Array => t.data as Float32Array; // a view: every reader copies (MemoryTensorSource.read, writeHFDir)
  const n = hfNames(family);
  const tensors: Array<[string, Float32Array, number[]]> = [];
  tensors.push([n.embed, data(take('tokenEmbedding.weight')), [BYTE_VOCAB_SIZE, d]]);
  for (let l = 0; l < c.layers; l++) {
    const p = `blocks.${l}`;
    tensors.push([n.inputNorm(l), data(take(`${p}.norm1.weight`)), [d]]);
    const qkv = take(`${p}.attn.qkv.weight`).data as Float32Array; // [3d, d]: q rows, then k, then v
    (['q', 'k', 'v'] as const).forEach((proj, i) => tensors.push([n.attn(l, proj), qkv.subarray(i * d * d, (i + 1) * d * d), [d, d]]));
    if (family === 'qwen2_moe') for (const proj of ['q', 'k', 'v'] as const) tensors.push([n.attn(l, proj, 'bias'), new Float32Array(d), [d]]);
    tensors.push([n.attn(l, 'o'), data(take(`${p}.attn.proj.weight`)), [d, d]]);
    if (moeLayers.includes(l)) {
      tensors.push([n.router(l), data(take(`${p}.moe.router.weight`)), [E, d]]);
      const w1 = expertMatrices(take(`${p}.moe.experts.w1`)), w3 = expertMatrices(take(`${p}.moe.experts.w3`)), w2 = expertMatrices(take(`${p}.moe.experts.w2`));
      for (let e = 0; e < E; e++) {
        tensors.push([n.expert(l, e, 'gate'), w1[e]!, [c.dFF, d]]);
        tensors.push([n.expert(l, e, 'up'), w3[e]!, [c.dFF, d]]);
        tensors.push([n.expert(l, e, 'down'), w2[e]!, [d, c.dFF]]);
      }
    } else {
      tensors.push([n.denseMlp(l, 'gate'), data(take(`${p}.mlp.w1.weight`)), [denseHidden, d]]);
      tensors.push([n.denseMlp(l, 'up'), data(take(`${p}.mlp.w3.weight`)), [denseHidden, d]]);
      tensors.push([n.denseMlp(l, 'down'), data(take(`${p}.mlp.w2.weight`)), [d, denseHidden]]);
    }
    tensors.push([n.postAttnNorm(l), data(take(`${p}.norm2.weight`)), [d]]);
  }
  tensors.push([n.finalNorm, data(take('finalNorm.weight')), [d]]);
  if (!c.tieEmbeddings) tensors.push([n.lmHead, data(take('head.weight')), [BYTE_VOCAB_SIZE, d]]);
  if (state.size > 0) {
    throw new Error(`moe convert (byte-lm): parameter ${[...state.keys()][0]} has no place in the ${family} layout${state.size > 1 ? ` (${state.size} such parameters)` : ''}`);
  }
  return { config, decoderConfig: dc, tensors, warnings };
}

