// What learned routers share: a linear scoring layer W_g [E, d] (no bias, as in every major
// library), optional multiplicative input jitter in training, and flattening of a [T, k]
// selection into assignments.

import { Module } from '../../nn/module.js';
import { Tensor } from '../../tensor/tensor.js';
import { Rng } from '../../tensor/rng.js';
import { matmul, mul, reshape } from '../../ops/index.js';
import { uniform } from '../../nn/init.js';
import { checkInt, checkRange, checkTokens, repeatEach } from '../util.js';

export interface LinearRouterOptions {
  /** Multiplicative jitter eps: in training, x is scaled elementwise by U(1 - eps, 1 + eps) (Switch). 0 = off. */
  jitter?: number;
  /** Seed for initialisation, noise and jitter. */
  seed?: number;
}

export abstract class LinearRouter extends Module {
  abstract readonly kind: string;
  readonly weight: Tensor;
  protected rng: Rng;
  readonly jitter: number;

  constructor(readonly dModel: number, readonly numExperts: number, opts: LinearRouterOptions) {
    super();
    const name = this.constructor.name;
    checkInt(name, 'dModel', dModel, 1);
    checkInt(name, 'numExperts', numExperts, 1);
    this.jitter = opts.jitter ?? 0;
    checkRange(name, 'jitter', this.jitter, 0, 1);
    this.rng = new Rng(opts.seed ?? 0);
    this.weight = this.param('weight', uniform([numExperts, dModel], 1 / Math.sqrt(dModel), this.rng));
  }

  /** Restarts the generator behind jitter and noise: the same seed replays the same routing. */
  reseed(seed: number): void {
    this.rng = new Rng(seed);
  }

  /** Router logits [T, E] = jitter(x) W_g^T. */
  protected logits(x: Tensor): Tensor {
    checkTokens(this.constructor.name, x, this.dModel);
    let xin = x;
    if (this.training && this.jitter > 0) {
      const noise = Tensor.empty(x.shape, x.dtype);
      this.rng.fillUniform(noise.data as Float32Array, 1 - this.jitter, 1 + this.jitter);
      xin = mul(x, noise);
    }
    return matmul(xin, this.weight, { transB: true });
  }
}

/** Flattens [T, k] gates and indices into token-major assignments. */
export function flattenSelection(gates: Tensor, indices: Tensor): { token: Int32Array; expert: Int32Array; gates: Tensor } {
  const [T, k] = gates.shape as [number, number];
  return { token: repeatEach(T, k), expert: Int32Array.from(indices.data as Int32Array), gates: reshape(gates, [T * k]) };
}
