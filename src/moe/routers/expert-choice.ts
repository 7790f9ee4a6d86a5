// Expert-choice routing (Zhou et al. 2022): token-expert affinities S = softmax(x W_g^T) over
// experts; each expert takes its top C = ceil(T * c / E) tokens by affinity, gate = S[t, e].
// Perfect load balance, no drops, but a token may get 0, 1, 2... experts: reported as coverage.

import { softmax, topk, transpose } from '../../ops/index.js';
import type { Tensor } from '../../tensor/tensor.js';
import { LinearRouter, type LinearRouterOptions } from './base.js';
import type { Router, Routing } from './types.js';
import { checkRange, flatPositions, repeatEach, takeFlat } from '../util.js';

export interface ExpertChoiceRouterOptions extends LinearRouterOptions {
  /** Capacity factor c: on average c experts per token (default 2). */
  capacityFactor?: number;
}

export class ExpertChoiceRouter extends LinearRouter implements Router {
  readonly kind = 'expert-choice';
  readonly capacityFactor: number;

  constructor(dModel: number, numExperts: number, opts: ExpertChoiceRouterOptions = {}) {
    super(dModel, numExperts, opts);
    this.capacityFactor = opts.capacityFactor ?? 2;
    checkRange('ExpertChoiceRouter', 'capacityFactor', this.capacityFactor, 0, numExperts, true);
  }

  route(x: Tensor): Routing {
    const logits = this.logits(x);
    const probs = softmax(logits); // [T, E]
    const T = x.shape[0]!;
    const E = this.numExperts;
    const C = Math.min(T, Math.ceil((T * this.capacityFactor) / E));
    const sel = topk(transpose(probs), C); // per expert: [E, C]
    const token = Int32Array.from(sel.indices.data as Int32Array);
    const expert = repeatEach(E, C);
    const gates = takeFlat(probs, flatPositions(token, expert, E));
    const perToken = new Int32Array(T);
    for (const t of token) perToken[t]!++;
    const coverage = new Array<number>(E + 1).fill(0);
    for (const n of perToken) coverage[n]!++;
    while (coverage.length > 1 && coverage[coverage.length - 1] === 0) coverage.pop();
    return {
      tokens: T, experts: E, token, expert, gates, k: T > 0 ? (E * C) / T : 0, logits, probs, aux: {}, capacity: C,
      stats: { selfCapacity: C, tokensWithNExperts: coverage },
    };
  }
}
