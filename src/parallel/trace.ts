// Records the routing of every MoE layer's training forwards to a JSONL file (one line per layer
// per step: the dispatch plan's group sizes and token of each kept row), the input of moe simulate ep.

import { appendFileSync, writeFileSync } from 'node:fs';
import type { Module } from '../nn/module.js';
import { MoELayer } from '../moe/layer.js';

export interface RoutingRecorder {
  /** Restores each layer's previous expert computation. */
  close(): void;
}

/** Appends one record per training forward of each MoE layer to path (truncated first). */
export function recordRouting(model: Module, path: string): RoutingRecorder {
  writeFileSync(path, '');
  const layers = model.namedModules().filter((e): e is [string, MoELayer] => e[1] instanceof MoELayer);
  if (layers.length === 0) throw new Error(`parallel.trace: the model has no MoE layer to record`);
  const counts = new Map<string, number>();
  const restore: Array<() => void> = [];
  for (const [name, layer] of layers) {
    const prev = layer.routedExperts;
    restore.push(() => { layer.routedExperts = prev; });
    layer.routedExperts = (x, plan, gates) => {
      if (layer.training) {
        const step = (counts.get(name) ?? 0) + 1;
        counts.set(name, step);
        appendFileSync(path, `${JSON.stringify({
          step, layer: name, tokens: x.shape[0], dModel: x.shape[1], dFF: layer.experts.dHidden, activation: layer.experts.activation,
          groupSizes: Array.from(plan.groupSizes), tokenOfRow: Array.from(plan.tokenOfRow),
        })}\n`);
      }
      return prev ? prev(x, plan, gates)
        : layer.experts.forwardRouted(x, plan.tokenOfRow, plan.groupSizes, gates, layer.config.bias ? plan.expertOfRow : undefined);
    };
  }
  return { close: () => { for (const r of restore) r(); } };
}
