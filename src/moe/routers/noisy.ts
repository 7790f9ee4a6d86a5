// Noisy top-k gating (Shazeer et al. 2017): H = x W_g + N(0,1) * softplus(x W_noise) in training
// (H = x W_g in eval), top-k of H, gates = softmax over the k. Its two balancing losses:
// importance (squared CV of the summed gates per expert) and the smooth load estimator (squared
// CV of the summed probabilities that each expert stays in the top k under fresh noise, by the
// normal CDF). The losses come back unweighted in aux as 'importance' and 'load'.

import { Tensor } from '../../tensor/tensor.js';
import { add, div, matmul, mul, narrow, normcdf, softmax, softplus, sub, sum, topk } from '../../ops/index.js';
import { noGrad } from '../../tensor/autograd.js';
import { LinearRouter, flattenSelection, type LinearRouterOptions } from './base.js';
import type { Router, Routing } from './types.js';
import { checkInt, checkRange, flatPositions, putFlat } from '../util.js';
import { cvSquared } from '../losses/balance.js';
import { Module } from '../../nn/module.js';
import { uniform } from '../../nn/init.js';
import type { Rng } from '../../tensor/rng.js';

export interface NoisyTopKRouterOptions extends LinearRouterOptions {
  /** Experts per token (default 2). */
  k?: number;
  /** Added to the noise standard deviation (default 0.01, as in the paper's code). */
  noiseEpsilon?: number;
}

/** W_noise lives in its own module so that parameter names read router.noise.weight. */
class NoiseProjection extends Module {
  readonly weight: Tensor;
  constructor(dModel: number, numExperts: number, bound: number, rng: Rng) {
    super();
    this.weight = this.param('weight', uniform([numExperts, dModel], bound, rng));
  }
}

export class NoisyTopKRouter extends LinearRouter implements Router {
  readonly kind = 'noisy-topk';
  readonly k: number;
  readonly noiseEpsilon: number;
  readonly noise: NoiseProjection;

  constructor(dModel: number, numExperts: number, opts: NoisyTopKRouterOptions = {}) {
    super(dModel, numExperts, opts);
    this.k = opts.k ?? 2;
    checkInt('NoisyTopKRouter', 'k', this.k, 1, numExperts);
    this.noiseEpsilon = opts.noiseEpsilon ?? 0.01;
    checkRange('NoisyTopKRouter', 'noiseEpsilon', this.noiseEpsilon, 0, Infinity);
    this.noise = this.module('noise', new NoiseProjection(dModel, numExperts, 1 / Math.sqrt(dModel), this.rng));
  }

  route(x: Tensor): Routing {
    const clean = this.logits(x); // [T, E]
    const T = x.shape[0]!;
    const E = this.numExperts;
    const k = this.k;
    const noisy = this.training;
    let H = clean;
    let std: Tensor | null = null;
    if (noisy) {
      std = add(softplus(matmul(x, this.noise.weight, { transB: true })), this.noiseEpsilon);
      const eps = Tensor.empty([T, E], x.dtype);
      this.rng.fillNormal(eps.data as Float32Array);
      H = add(clean, mul(eps, std));
    }
    const kk = Math.min(k + 1, E);
    const top = topk(H, kk);
    const topVals = kk > k ? narrow(top.values, 1, 0, k) : top.values;
    const topIdx = Tensor.empty([T, k], 'int32');
    for (let t = 0; t < T; t++) topIdx.data.set((top.indices.data as Int32Array).subarray(t * kk, t * kk + k), t * k);
    const gates = softmax(topVals);
    const flat = flattenSelection(gates, topIdx);
    const aux: Record<string, Tensor> = {};
    if (T > 0) {
      const full = putFlat(flat.gates, flatPositions(flat.token, flat.expert, E), [T, E]);
      aux['importance'] = cvSquared(sum(full, 0));
      if (noisy && std && k < E) {
        // threshold for an expert already in the top k: the (k+1)-th value; otherwise the k-th
        const thrIn = narrow(top.values, 1, k, 1);
        const thrOut = narrow(top.values, 1, k - 1, 1);
        const isIn = noGrad(() => {
          const m = Tensor.empty([T, E], x.dtype);
          for (let i = 0; i < flat.expert.length; i++) m.data[flat.token[i]! * E + flat.expert[i]!] = 1;
          return m;
        });
        const pIn = normcdf(div(sub(clean, thrIn), std));
        const pOut = normcdf(div(sub(clean, thrOut), std));
        const prob = add(mul(pIn, isIn), mul(pOut, sub(1, isIn)));
        aux['load'] = cvSquared(sum(prob, 0));
      }
    }
    const probs = noGrad(() => softmax(H));
    return { tokens: T, experts: E, ...flat, k, logits: clean, probs, aux, stats: {} };
  }
}
