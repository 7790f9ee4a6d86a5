// Token embedding table: weight [vocab, d] looked up by int32 ids (PyTorch's nn.Embedding).

import { Module } from './module.js';
import { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/rng.js';
import { normal } from './init.js';
import { embedding } from '../ops/index.js';

export interface EmbeddingOptions {
  /** Standard deviation of the normal initialisation (default 1, PyTorch's; GPT-2 uses 0.02). */
  std?: number;
  rng?: Rng;
}

export class Embedding extends Module {
  readonly weight: Tensor;

  constructor(readonly vocabSize: number, readonly dim: number, opts: EmbeddingOptions = {}) {
    super();
    for (const [n, v] of [['vocabSize', vocabSize], ['dim', dim]] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new Error(`Embedding: ${n} must be a positive integer, got ${v}`);
    }
    const std = opts.std ?? 1;
    if (!(std >= 0 && Number.isFinite(std))) throw new Error(`Embedding: std must be a finite non-negative number, got ${std}`);
    this.weight = this.param('weight', normal([vocabSize, dim], std, opts.rng));
  }

  /** ids int32 [...] -> [..., dim]. */
  forward(ids: Tensor | Int32Array): Tensor {
    const t = ids instanceof Tensor ? ids : new Tensor(ids, [ids.length]);
    return embedding(this.weight, t);
  }
}
