// LayerNorm and RMSNorm modules over the last axis, parameters named like PyTorch's (weight, bias).

import { Module } from './module.js';
import { Tensor } from '../tensor/tensor.js';
import { layerNorm, rmsNorm } from '../ops/index.js';

export interface LayerNormOptions {
  /** Added to the variance (default 1e-5, PyTorch's). */
  eps?: number;
  /** Learn weight (ones) and bias (zeros) (default true). */
  affine?: boolean;
  /** With affine, learn the bias too (default true; false gives the bias-free LayerNorm of some GPTs). */
  bias?: boolean;
}

function checkDim(owner: string, d: number): void {
  if (!Number.isInteger(d) || d <= 0) throw new Error(`${owner}: d must be a positive integer, got ${d}`);
}

function checkInput(owner: string, x: Tensor, d: number): void {
  if (x.rank < 1 || x.shape[x.rank - 1] !== d) throw new Error(`${owner}: input last dimension must be ${d}, got [${x.shape.join(', ')}]`);
}

function filled(d: number, v: number): Tensor {
  const t = Tensor.empty([d]);
  if (v !== 0) t.data.fill(v);
  return t;
}

export class LayerNorm extends Module {
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly eps: number;

  constructor(readonly d: number, opts: LayerNormOptions = {}) {
    super();
    checkDim('LayerNorm', d);
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.affine ?? true;
    this.weight = affine ? this.param('weight', filled(d, 1)) : null;
    this.bias = affine && (opts.bias ?? true) ? this.param('bias', filled(d, 0)) : null;
  }

  /** x [..., d] -> [..., d]. */
  forward(x: Tensor): Tensor {
    checkInput('LayerNorm', x, this.d);
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export interface RMSNormOptions {
  /** Added to the mean square (default 1e-6, LLaMA's). */
  eps?: number;
  /** Learn weight (ones) (default true). */
  affine?: boolean;
}

export class RMSNorm extends Module {
  readonly weight: Tensor | null;
  readonly eps: number;

  constructor(readonly d: number, opts: RMSNormOptions = {}) {
    super();
    checkDim('RMSNorm', d);
    this.eps = opts.eps ?? 1e-6;
    this.weight = opts.affine ?? true ? this.param('weight', filled(d, 1)) : null;
  }

  /** x [..., d] -> [..., d]. */
  forward(x: Tensor): Tensor {
    checkInput('RMSNorm', x, this.d);
    return rmsNorm(x, this.weight, this.eps);
  }
}
