// Model registry: each model's name, typed config schema and constructor, so that configs and
// the CLI build models by name and validate their options.

import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Schema } from '../config/schema.js';
import { validate } from '../config/schema.js';
import { SOFTMOE_CLASSIFIER_SCHEMA, SoftMoEClassifier, type SoftMoEClassifierConfig } from './softmoe-classifier.js';
import { VIT_MOE_SCHEMA, VitMoE, type VitMoEConfig } from './vit-moe.js';
import { MMOE_SCHEMA, MMoE, type MMoEConfig } from './mmoe.js';
import { LM_SCHEMA, ByteLM, type LMConfig } from './lm.js';

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

/** Validates a model config ({ type, ...options }) and builds the model. */
export function buildModel(config: { type: string } & Record<string, unknown>, seed: number): { model: Module; spec: ModelSpec; options: Record<string, unknown> } {
  const spec = modelSpec(config.type);
  const { type: _t, ...rest } = config;
  const options = validate<Record<string, unknown>>(spec.schema, rest, `model (${spec.name})`);
  return { model: spec.build(options, seed), spec, options };
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
});

registerModel({
  name: 'vit-moe',
  doc: 'sparse MoE image classifier: patch embedding, pre-norm Transformer blocks with MoE MLPs (any router), mean pooling; ffn: dense gives the counterpart with equal active parameters',
  task: 'image-classification',
  schema: VIT_MOE_SCHEMA,
  build: (c, seed) => new VitMoE(c as unknown as VitMoEConfig, seed),
});

registerModel({
  name: 'mmoe',
  doc: 'Multi-gate Mixture-of-Experts (Ma et al. 2018): shared dense experts, one softmax gate and one tower per task (Fashion-MNIST: 10 classes and 4 coarse groups)',
  task: 'multitask-classification',
  schema: MMOE_SCHEMA,
  build: (c, seed) => new MMoE(c as unknown as MMoEConfig, seed),
});

registerModel({
  name: 'byte-lm',
  doc: 'byte-level decoder-only Transformer (causal attention, RMSNorm, RoPE or learned positions) with MoE feed-forwards in every or every other block; ffn: dense gives the counterpart with equal active parameters',
  task: 'language-model',
  schema: LM_SCHEMA,
  build: (c, seed) => new ByteLM(c as Partial<LMConfig>, seed),
});
