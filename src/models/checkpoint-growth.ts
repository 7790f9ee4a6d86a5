// Loading checkpoints into a model whose MoE layers have another expert count (continual MoE):
// the rule is "same E loads, more E in the file grows the model only when asked, fewer is refused".

import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import { shapeStr } from '../tensor/shape.js';
import { MoELayer } from '../moe/layer.js';
import { growMoELayer, moeLayersOf } from '../moe/grow.js';
import { loadModelWeights, type LoadWeightsOptions, type LoadWeightsResult } from './checkpoint.js';

export interface LoadWithGrowthOptions extends LoadWeightsOptions {
  /** Grow MoE layers to the file's expert count when it is larger (default false: an error). */
  grow?: boolean;
}

/** True when a model config has a non-empty `grow` schedule (its checkpoints hold the grown expert count). */
export function hasGrowSchedule(modelConfig: unknown): boolean {
  const g = (modelConfig as { grow?: unknown } | null)?.grow;
  return Array.isArray(g) && g.length > 0;
}

/**
 * Loads model tensors whose expert count may differ from the model's. Each MoE layer's expert
 * count in the file is read from '<layer>.router.weight'. Equal counts load as usual. A larger
 * count is an error naming the tensor and both shapes, unless `grow` is set: the layer then grows
 * by the difference first (the file's values then replace the new experts' initialisation, growBias included). A
 * smaller count is always an error (experts are never dropped silently).
 */
export function loadWeightsWithGrowth(model: Module, tensors: Map<string, Tensor>, opts: LoadWithGrowthOptions = {}): LoadWeightsResult & { grown: string[] } {
  const grown: string[] = [];
  const plan: Array<[MoELayer, number, string]> = [];
  for (const [name, layer] of moeLayersOf(model)) {
    const key = `${name ? `${name}.` : ''}router.weight`;
    const t = tensors.get(key);
    if (!t) continue; // the strict name check of loadModelWeights reports it
    const E = layer.config.numExperts;
    const Ef = t.shape[0]!;
    if (Ef === E) continue;
    const mine = shapeStr(layer.router.namedParameters().find(([n]) => n === 'weight')![1].shape);
    if (Ef < E) throw new Error(`loadWeightsWithGrowth: '${key}' has shape ${shapeStr(t.shape)} but the model's is ${mine}: the file has fewer experts (${Ef} < ${E}), and experts are never dropped`);
    if (!opts.grow) throw new Error(`loadWeightsWithGrowth: '${key}' has shape ${shapeStr(t.shape)} but the model's is ${mine} (${Ef} experts in the file, ${E} in the model); pass { grow: true } to grow the model to ${Ef} experts first`);
    plan.push([layer, Ef - E, name]);
  }
  for (const [layer, K, name] of plan) {
    growMoELayer(layer, { add: K });
    grown.push(name);
  }
  return { ...loadModelWeights(model, tensors, opts.strict !== undefined ? { strict: opts.strict } : {}), grown };
}
