// Linear layer, y = x W^T + b, with W stored [out, in] like PyTorch so weights move across unchanged.

import { Module } from './module.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/rng.js';
import { uniform } from './init.js';
import { add, matmul } from '../ops/index.js';

export interface LinearOptions {
  /** Add a bias (default true). */
  bias?: boolean;
  rng?: Rng;
}

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LinearOptions = {}) {
    super();
    for (const [n, v] of [['inFeatures', inFeatures], ['outFeatures', outFeatures]] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new Error(`Linear: ${n} must be a positive integer, got ${v}`);
    }
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.param('weight', uniform([outFeatures, inFeatures], bound, opts.rng));
    this.bias = opts.bias ?? true ? this.param('bias', uniform([outFeatures], bound, opts.rng)) : null;
  }

  forward(x: Tensor): Tensor {
    const d = x.shape[x.rank - 1];
    if (d !== this.inFeatures) throw new Error(`Linear: input last dimension ${d} does not match inFeatures ${this.inFeatures} (input [${x.shape.join(', ')}])`);
    const y = matmul(x, this.weight, { transB: true });
    return this.bias ? add(y, this.bias) : y;
  }
}
