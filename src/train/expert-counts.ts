// Per-expert training token counts of any model with MoE layers, kept in the trainer state (state.json) of `moe train` runs.
//
// Seed 002's rare inputs: experts that saw few training tokens are the under-trained ones a server
// should flag (src/serve/rare-tracking.ts reads the same counts from an HF config.json). Counted
// from every training forward of each MoELayer: the rows each expert processed after capacity
// (keptPerExpert: what its weights were trained on) and the tokens the layer saw. Kept as plain
// numbers in the trainer state, keyed by the layer's module path, so a resumed run adds up and
// `moe convert` of a byte-LM run carries them into config.json's moe_ts.expert_token_counts.

import type { Module } from '../nn/module.js';
import { MoELayer, type MoEOutput } from '../moe/layer.js';
import type { Tensor } from '../tensor/tensor.js';
import { hookMoELayers } from './layer-log.js';

export interface TrainedTokenCounts {
  /** Training tokens (positions) that went through the first MoE layer. */
  tokens: number;
  /** Per MoE layer (module path): rows each expert trained on. */
  layers: Record<string, number[]>;
}

function clone(c: TrainedTokenCounts): TrainedTokenCounts {
  return { tokens: c.tokens, layers: Object.fromEntries(Object.entries(c.layers).map(([k, v]) => [k, v.slice()])) };
}

/** Counts routing during training forwards, starting from a resumed run's counts. */
export class ExpertCountLog {
  private readonly restore: () => void;
  private first: string | null = null;
  readonly counts: TrainedTokenCounts;

  constructor(model: Module, start?: TrainedTokenCounts) {
    this.counts = start ? clone(start) : { tokens: 0, layers: {} };
    this.restore = hookMoELayers(model, (name, out, x, layer) => {
      if (!(layer instanceof MoELayer)) return; // Soft MoE has no discrete assignments to count
      const kept = (out as MoEOutput).metrics.keptPerExpert;
      const acc = this.counts.layers[name] ?? (this.counts.layers[name] = new Array<number>(kept.length).fill(0));
      for (let e = 0; e < kept.length; e++) acc[e] = (acc[e] ?? 0) + kept[e]!;
      // tokens counted once, at the first MoE layer a forward reaches (every token passes it)
      this.first ??= name;
      if (name === this.first) {
        const t = x as Tensor;
        this.counts.tokens += t.size / t.shape[t.shape.length - 1]!;
      }
    });
  }

  /** A copy for the trainer state. */
  snapshot(): TrainedTokenCounts {
    return clone(this.counts);
  }

  stop(): void {
    this.restore();
  }
}
