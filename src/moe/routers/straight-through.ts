// Straight-through top-k routing: the forward pass uses hard gates (each of a token's k chosen
// experts weighted 1/k; 1 for k = 1), the backward pass treats each gate as the soft probability
// p_i = softmax((z + G) / tau)_i of its expert, so that
//   g_i = h_i + p_i - stopgrad(p_i),   dL/dz = sum over chosen i of dL/dg_i * dp_i/dz.
// With `gumbel`, training selects the top k of z + G (G i.i.d. Gumbel(0, 1)): the straight-through
// Gumbel-softmax estimator; without it G = 0 and selection is the plain top k of z.
//
// Only the chosen experts' gates pass gradient: the full straight-through estimator would also need
// dL/dg_j = <dL/dy, E_j(x)> for the experts not chosen, i.e. running every expert (dense cost).

import { Tensor } from '../../tensor/tensor.js';
import { record } from '../../tensor/autograd.js';
import { allocArray } from '../../tensor/dtype.js';
import { add, div, softmax, topk } from '../../ops/index.js';
import { noGrad } from '../../tensor/autograd.js';
import { LinearRouter, type LinearRouterOptions } from './base.js';
import type { Router, Routing } from './types.js';
import { checkInt, checkRange, flatPositions, repeatEach, takeFlat } from '../util.js';

export interface StraightThroughOptions extends LinearRouterOptions {
  /** Experts per token (default 1). */
  k?: number;
  /** Straight-through Gumbel-softmax: select on z + Gumbel noise in training (default false). */
  gumbel?: boolean;
  /** Temperature tau of the soft surrogate softmax((z + G) / tau) whose gradient is passed (default 1). */
  temperature?: number;
}

/** Forward: the constant `value` in every entry; backward: the gradient passes to `soft` unchanged. */
export function straightThrough(soft: Tensor, value: number): Tensor {
  const out = new Tensor(allocArray(soft.dtype, soft.size).fill(value), soft.shape);
  return record(out, 'straightThrough', [soft], (g) => [g], []);
}

export class StraightThroughRouter extends LinearRouter implements Router {
  readonly kind = 'straight-through';
  readonly k: number;
  readonly gumbel: boolean;
  readonly temperature: number;

  constructor(dModel: number, numExperts: number, opts: StraightThroughOptions = {}) {
    super(dModel, numExperts, opts);
    const n = 'StraightThroughRouter';
    this.k = opts.k ?? 1;
    checkInt(n, 'k', this.k, 1, numExperts);
    this.gumbel = opts.gumbel ?? false;
    if (typeof this.gumbel !== 'boolean') throw new Error(`${n}: gumbel = ${String(this.gumbel)} must be true or false`);
    this.temperature = opts.temperature ?? 1;
    checkRange(n, 'temperature', this.temperature, 0, Infinity, true);
  }

  route(x: Tensor): Routing {
    const z = this.logits(x); // [T, E]
    const T = x.shape[0]!;
    const E = this.numExperts;
    let scores = z;
    if (this.training && this.gumbel && z.size > 0) {
      const g = Tensor.empty(z.shape, z.dtype);
      const gd = g.data;
      // G = -log(-log U), U in (0, 1)
      for (let i = 0; i < gd.length; i++) {
        let u = this.rng.next();
        while (u <= 0) u = this.rng.next();
        gd[i] = -Math.log(-Math.log(u));
      }
      scores = add(z, g);
    }
    const indices = noGrad(() => topk(scores, this.k).indices);
    const token = repeatEach(T, this.k);
    const expert = Int32Array.from(indices.data as Int32Array);
    const soft = softmax(this.temperature === 1 ? scores : div(scores, this.temperature)); // [T, E]
    const gates = straightThrough(takeFlat(soft, flatPositions(token, expert, E)), 1 / this.k);
    const probs = softmax(z);
    return { tokens: T, experts: E, token, expert, gates, k: this.k, logits: z, probs, aux: {}, stats: {} };
  }
}
