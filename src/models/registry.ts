// Model registry: each model's name, typed config schema and constructor, so that configs and
// the CLI build models by name and validate their options.

import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Schema } from '../config/schema.js';
import { validate } from '../config/schema.js';
import { SOFTMOE_CLASSIFIER_SCHEMA, SoftMoEClassifier, type SoftMoEClassifierConfig } from './softmoe-classifier.js';
import { VIT_MOE_SCHEMA, VitMoE, type VitMoEConfig } from './vit-moe.js';
import { MMOE_SCHEMA, MMoE, type MMoEConfig } from './mmoe.js';
import { LM_SCHEMA, ByteLM, denseHiddenOf, isMoEBlock, lmConfig, type LMConfig } from './lm.js';
import { totalmem } from 'node:os';

export type TaskKind = 'image-classification' | 'multitask-classification' | 'language-model';

/** What the image-classification task needs from a model. */
export interface ImageClassifier extends Module {
  /** images [B, pixels] -> logits [B, classes], plus the weighted auxiliary loss and router metrics when it has any. */
  classify(images: Tensor): { logits: Tensor; auxLoss: Tensor | null; metrics: Record<string, number> };
}

export interface ModelSpec {
  name: string;
  doc: string;
  task: TaskKind;
  schema: Schema;
  build(config: Record<string, unknown>, seed: number): Module;
  /**
   * The parameter count from the validated options without allocating anything, as the sum of the
   * model's parts, each with the config keys that size it (so that an oversized model is refused
   * naming them). Matches numParameters() exactly for every model today; test/bad-input checks it stays within 2%.
   */
  estimate(config: Record<string, unknown>): ParameterTerm[];
}

/** One part of a model's parameter count and the config keys that set its size. */
export interface ParameterTerm {
  what: string;
  count: number;
  keys: string[];
}

const specs = new Map<string, ModelSpec>();

export function registerModel(spec: ModelSpec): void {
  specs.set(spec.name, spec);
}

export function modelNames(): string[] {
  return [...specs.keys()];
}

export function modelSpec(name: string): ModelSpec {
  const s = specs.get(name);
  if (!s) throw new Error(`model.type = '${name}' is unknown (known: ${modelNames().join(', ')})`);
  return s;
}

/**
 * Bytes of memory per parameter a training run needs at least: the float32 weight, its gradient and
 * Adam's two moments (activations come on top).
 */
export const TRAINING_BYTES_PER_PARAMETER = 16;

const giga = (n: number): string => (n >= 1e9 ? `${(n / 1e9).toFixed(1)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : String(Math.round(n)));

export interface SizeCheckOptions {
  /** Memory available (default: os.totalmem()). */
  memoryBytes?: number;
  /** Bytes per parameter (default TRAINING_BYTES_PER_PARAMETER). */
  bytesPerParameter?: number;
}

/**
 * Refuses a model whose parameters (with gradients and optimizer state) cannot fit in memory, or
 * whose largest tensor exceeds what one typed array can hold, before anything is allocated; the
 * error names the config keys that size the largest parts. Returns the estimated parameter count.
 */
export function checkModelSize(spec: ModelSpec, options: Record<string, unknown>, opts: SizeCheckOptions = {}): number {
  const terms = spec.estimate(options);
  const total = terms.reduce((s, t) => s + t.count, 0);
  const memory = opts.memoryBytes ?? totalmem();
  const perParam = opts.bytesPerParameter ?? TRAINING_BYTES_PER_PARAMETER;
  const need = total * perParam;
  if (need <= memory) return total;
  const big = [...terms].sort((a, b) => b.count - a.count).slice(0, 2).filter((t) => t.count > 0);
  const keys = [...new Set(big.flatMap((t) => t.keys))];
  const parts = big.map((t) => `${t.what} ${giga(t.count)} (${t.keys.map((k) => `model.${k} = ${String(options[k])}`).join(', ')})`).join('; ');
  throw new Error(`model (${spec.name}): about ${giga(total)} parameters need ${(need / 2 ** 30).toFixed(1)} GiB for weights, gradients and optimizer state (${perParam} bytes each), `
    + `more than this machine's ${(memory / 2 ** 30).toFixed(1)} GiB of memory. The largest parts: ${parts}. Lower ${keys.map((k) => `model.${k}`).join(', ')}`);
}

/** Validates a model config ({ type, ...options }), checks that it fits in memory, and builds the model. */
export function buildModel(config: { type: string } & Record<string, unknown>, seed: number, sizeCheck: SizeCheckOptions = {}): { model: Module; spec: ModelSpec; options: Record<string, unknown> } {
  const spec = modelSpec(config.type);
  const { type: _t, ...rest } = config;
  const options = validate<Record<string, unknown>>(spec.schema, rest, `model (${spec.name})`);
  checkModelSize(spec, options, sizeCheck);
  return { model: spec.build(options, seed), spec, options };
}

const num = (c: Record<string, unknown>, k: string): number => c[k] as number;

/** A pre-norm Transformer block's attention (4 d x d with biases) and its two norms (2 d each for LayerNorm, d for RMSNorm). */
function attentionTerm(d: number, layers: number, norm: 'layer' | 'rms'): ParameterTerm {
  return { what: 'attention', count: layers * (4 * d * d + 4 * d + (norm === 'layer' ? 4 : 2) * d), keys: ['dModel', 'layers'] };
}

/**
 * The feed-forwards of a Transformer stack: MoE blocks (router d x E, E experts of m matrices of
 * d x dFF, m = 3 for swiglu) and dense blocks (m matrices of d x hidden).
 */
/** SwitchHead attention (moe/attention/switchhead.ts: q, k, two gates, E value and output experts per head) and the block's two norms. */
function switchHeadTerm(c: LMConfig): ParameterTerm {
  const a = c.attention as { heads?: number; headDim?: number; experts?: number };
  const d = c.dModel;
  const H = a.heads ?? c.heads;
  const hd = a.headDim ?? d / H;
  const E = a.experts ?? 4;
  return { what: 'attention (SwitchHead)', count: c.layers * (2 * d * H * hd + 2 * d * H * E + 2 * E * d * H * hd + (c.norm === 'layer' ? 4 : 2) * d), keys: ['dModel', 'layers', 'attention'] };
}

function ffnTerms(c: Record<string, unknown>, layers: number, moeBlocks: number, denseHidden: number): ParameterTerm[] {
  const d = num(c, 'dModel');
  const E = num(c, 'numExperts');
  const m = c['activation'] === 'swiglu' ? 3 : 2;
  return [
    { what: 'experts', count: moeBlocks * E * m * d * num(c, 'dFF'), keys: ['numExperts', 'dModel', 'dFF', 'layers'] },
    { what: 'routers', count: moeBlocks * d * E, keys: ['numExperts', 'dModel'] },
    { what: 'dense feed-forwards', count: (layers - moeBlocks) * m * d * denseHidden, keys: ['dModel', 'denseHidden', 'dFF', 'k', 'layers'] },
  ];
}

/** Soft MoE classifier adapted to the classification task. */
class SoftMoEImageClassifier extends SoftMoEClassifier implements ImageClassifier {
  classify(images: Tensor): { logits: Tensor; auxLoss: null; metrics: Record<string, number> } {
    const { logits, metrics } = this.forward(images);
    const c = metrics.combineSumPerExpert;
    const total = c.reduce((a, b) => a + b, 0);
    // entropy of the share of combine weight per expert: how evenly the experts are used
    const entropy = total > 0 ? -c.reduce((h, v) => (v > 0 ? h + (v / total) * Math.log(v / total) : h), 0) : 0;
    return { logits, auxLoss: null, metrics: { combineEntropy: entropy, dispatchMax: metrics.dispatchMax, combineMax: metrics.combineMax } };
  }
}

registerModel({
  name: 'softmoe-classifier',
  doc: 'Soft MoE patch classifier (Chung et al. 2024): 4 patches of 14x14, one Soft MoE layer, linear decoder',
  task: 'image-classification',
  schema: SOFTMOE_CLASSIFIER_SCHEMA,
  build: (c, seed) => new SoftMoEImageClassifier(c as unknown as SoftMoEClassifierConfig, seed),
  estimate: (c) => {
    const S = num(c, 'imageSize');
    const d = num(c, 'patch') ** 2;
    const n = num(c, 'numExperts');
    const hidden = (c['hidden'] as number | null) ?? Math.floor((S * S) / n);
    return [
      { what: 'experts', count: n * 2 * d * hidden, keys: ['numExperts', 'hidden', 'patch'] },
      { what: 'slots (Phi)', count: d * n * num(c, 'slotsPerExpert') + 1, keys: ['numExperts', 'slotsPerExpert', 'patch'] },
      { what: 'decoder', count: (S * S + 1) * num(c, 'classes'), keys: ['imageSize', 'classes'] },
    ];
  },
});

registerModel({
  name: 'vit-moe',
  doc: 'sparse MoE image classifier: patch embedding, pre-norm Transformer blocks with MoE MLPs (any router), mean pooling; ffn: dense gives the counterpart with equal active parameters',
  task: 'image-classification',
  schema: VIT_MOE_SCHEMA,
  build: (c, seed) => new VitMoE(c as unknown as VitMoEConfig, seed),
  estimate: (c) => {
    const d = num(c, 'dModel');
    const L = num(c, 'layers');
    const P = num(c, 'patch');
    const tokens = Math.floor(num(c, 'imageSize') / P) ** 2;
    const moeBlocks = c['ffn'] === 'moe' ? Math.floor(L / num(c, 'moeEvery')) : 0;
    return [
      { what: 'patch embedding', count: (num(c, 'channels') * P * P + 1 + tokens) * d, keys: ['channels', 'patch', 'imageSize', 'dModel'] },
      attentionTerm(d, L, 'layer'),
      ...ffnTerms(c, L, moeBlocks, (c['denseHidden'] as number | null) ?? num(c, 'k') * num(c, 'dFF')),
      { what: 'head', count: (d + 1) * num(c, 'classes') + 2 * d, keys: ['dModel', 'classes'] },
    ];
  },
});

registerModel({
  name: 'mmoe',
  doc: 'Multi-gate Mixture-of-Experts (Ma et al. 2018): shared dense experts, one softmax gate and one tower per task (Fashion-MNIST: 10 classes and 4 coarse groups)',
  task: 'multitask-classification',
  schema: MMOE_SCHEMA,
  build: (c, seed) => new MMoE(c as unknown as MMoEConfig, seed),
  estimate: (c) => {
    const E = num(c, 'numExperts');
    const dIn = num(c, 'inputDim');
    const h = num(c, 'expertHidden');
    const o = num(c, 'expertOut');
    const t = num(c, 'towerHidden');
    const tasks = Array.isArray(c['tasks']) ? (c['tasks'] as Array<{ classes?: unknown }>) : [];
    const classes = tasks.reduce((s, x) => s + (typeof x.classes === 'number' ? x.classes : 0), 0);
    return [
      { what: 'experts', count: E * ((dIn + 1) * h + (h + 1) * o), keys: ['numExperts', 'inputDim', 'expertHidden', 'expertOut'] },
      { what: 'gates', count: tasks.length * dIn * E, keys: ['tasks', 'inputDim', 'numExperts'] },
      { what: 'towers', count: tasks.length * (o + 1) * t + (t + 1) * classes, keys: ['tasks', 'expertOut', 'towerHidden'] },
    ];
  },
});

registerModel({
  name: 'byte-lm',
  doc: 'byte-level decoder-only Transformer (causal attention, RMSNorm, RoPE or learned positions) with MoE feed-forwards in every or every other block; ffn: dense gives the counterpart with equal active parameters',
  task: 'language-model',
  schema: LM_SCHEMA,
  build: (c, seed) => new ByteLM(c as Partial<LMConfig>, seed),
  estimate: (c) => {
    const lc = lmConfig(c as Partial<LMConfig>);
    const d = lc.dModel;
    let moeBlocks = 0;
    for (let i = 0; i < lc.layers; i++) if (isMoEBlock(lc, i)) moeBlocks++;
    return [
      { what: 'byte embedding and head', count: 256 * d * (lc.tieEmbeddings ? 1 : 2) + (lc.norm === 'layer' ? 2 : 1) * d, keys: ['dModel'] },
      { what: 'position table', count: lc.positions === 'learned' ? lc.maxSeqLen * d : 0, keys: ['maxSeqLen', 'dModel'] },
      lc.attention.type === 'switchhead' ? switchHeadTerm(lc) : attentionTerm(d, lc.layers, lc.norm),
      ...ffnTerms(c, lc.layers, moeBlocks, denseHiddenOf(lc)),
    ];
  },
});
