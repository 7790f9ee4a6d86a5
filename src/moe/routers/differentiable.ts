// Differentiable top-k (the seed's "continuous MoE"): g_i = sigmoid((z_i - tau) / eps), with tau
// per token halfway between the k-th and (k+1)-th largest logits, so about k gates are open and
// the gradient reaches every logit through the sigmoid (and through tau). Experts whose gate
// falls below minGate are skipped: the remaining mass is what the layer computes.

import type { Tensor } from '../../tensor/tensor.js';
import { div, mean, narrow, sigmoid, softmax, sub, topk } from '../../ops/index.js';
import { noGrad } from '../../tensor/autograd.js';
import { LinearRouter, type LinearRouterOptions } from './base.js';
import type { Router, Routing } from './types.js';
import { checkInt, checkRange, flatPositions, takeFlat } from '../util.js';

export interface DifferentiableTopKOptions extends LinearRouterOptions {
  /** Experts open per token, about (default 2). */
  k?: number;
  /** Temperature eps of the sigmoid (default 0.1); smaller is closer to hard top-k. */
  temperature?: number;
  /** Gates below this are not computed (default 0.01). */
  minGate?: number;
}

export class DifferentiableTopKRouter extends LinearRouter implements Router {
  readonly kind = 'differentiable-topk';
  readonly k: number;
  readonly temperature: number;
  readonly minGate: number;

  constructor(dModel: number, numExperts: number, opts: DifferentiableTopKOptions = {}) {
    super(dModel, numExperts, opts);
    const n = 'DifferentiableTopKRouter';
    this.k = opts.k ?? 2;
    checkInt(n, 'k', this.k, 1, numExperts);
    this.temperature = opts.temperature ?? 0.1;
    checkRange(n, 'temperature', this.temperature, 0, Infinity, true);
    this.minGate = opts.minGate ?? 0.01;
    checkRange(n, 'minGate', this.minGate, 0, 1);
  }

  route(x: Tensor): Routing {
    const z = this.logits(x); // [T, E]
    const T = x.shape[0]!;
    const E = this.numExperts;
    let tau: Tensor;
    if (this.k < E) {
      // halfway between the k-th and (k+1)-th largest logits
      tau = mean(narrow(topk(z, this.k + 1).values, 1, this.k - 1, 2), 1, true);
    } else {
      // all experts open: tau one temperature-scaled margin below the smallest logit
      tau = sub(noGrad(() => narrow(topk(z, E).values, 1, E - 1, 1)), 4 * this.temperature);
    }
    const g = sigmoid(div(sub(z, tau), this.temperature)); // [T, E]
    const gd = g.data;
    const token: number[] = [];
    const expert: number[] = [];
    for (let t = 0; t < T; t++) {
      for (let e = 0; e < E; e++) if (gd[t * E + e]! >= this.minGate) { token.push(t); expert.push(e); }
    }
    const tok = Int32Array.from(token);
    const exp = Int32Array.from(expert);
    const gates = takeFlat(g, flatPositions(tok, exp, E));
    const probs = noGrad(() => softmax(z));
    return {
      tokens: T, experts: E, token: tok, expert: exp, gates, k: this.k, logits: z, probs, aux: {},
      stats: { meanOpen: T > 0 ? tok.length / T : 0 },
    };
  }
}

