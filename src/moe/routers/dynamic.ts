// Dynamic-k routing: a variable number of experts per token. 'top-p' takes the smallest set of
// experts whose probability mass reaches p (Huang et al. 2024); 'threshold' takes every expert
// whose probability reaches tau. Both are clamped to [minK, maxK].

import type { Tensor } from '../../tensor/tensor.js';
import { div, gatherRows, reshape, scatterAddRows, softmax } from '../../ops/index.js';
import { LinearRouter, type LinearRouterOptions } from './base.js';
import type { Router, Routing } from './types.js';
import { checkInt, checkRange, flatPositions, takeFlat } from '../util.js';

export interface DynamicRouterOptions extends LinearRouterOptions {
  /** 'top-p' (default) or 'threshold'. */
  mode?: 'top-p' | 'threshold';
  /** Probability mass to reach in top-p mode (default 0.5). */
  p?: number;
  /** Minimum gate in threshold mode (default 0.2). */
  threshold?: number;
  /** At least this many experts per token (default 1). */
  minK?: number;
  /** At most this many experts per token (default E). */
  maxK?: number;
  /** Renormalise each token's gates to sum to 1 (default true). */
  normalize?: boolean;
}

export class DynamicRouter extends LinearRouter implements Router {
  readonly kind = 'dynamic';
  readonly mode: 'top-p' | 'threshold';
  readonly p: number;
  readonly threshold: number;
  readonly minK: number;
  readonly maxK: number;
  readonly normalize: boolean;

  constructor(dModel: number, numExperts: number, opts: DynamicRouterOptions = {}) {
    super(dModel, numExperts, opts);
    const n = 'DynamicRouter';
    this.mode = opts.mode ?? 'top-p';
    if (this.mode !== 'top-p' && this.mode !== 'threshold') throw new Error(`${n}: mode = '${String(this.mode)}' must be 'top-p' or 'threshold'`);
    this.p = opts.p ?? 0.5;
    checkRange(n, 'p', this.p, 0, 1, true);
    this.threshold = opts.threshold ?? 0.2;
    checkRange(n, 'threshold', this.threshold, 0, 1);
    this.minK = opts.minK ?? 1;
    this.maxK = opts.maxK ?? numExperts;
    checkInt(n, 'minK', this.minK, 1, numExperts);
    checkInt(n, 'maxK', this.maxK, this.minK, numExperts);
    this.normalize = opts.normalize ?? true;
  }

  route(x: Tensor): Routing {
    const logits = this.logits(x);
    const probs = softmax(logits);
    const T = x.shape[0]!;
    const E = this.numExperts;
    const pd = probs.data;
    const token: number[] = [];
    const expert: number[] = [];
    const hist = new Array<number>(E + 1).fill(0);
    for (let t = 0; t < T; t++) {
      const order = [...Array(E).keys()].sort((a, b) => pd[t * E + b]! - pd[t * E + a]! || a - b);
      let n = 0;
      if (this.mode === 'top-p') {
        let mass = 0;
        while (n < E && mass < this.p) mass += pd[t * E + order[n++]!]!;
      } else {
        while (n < E && pd[t * E + order[n]!]! >= this.threshold) n++;
      }
      n = Math.min(this.maxK, Math.max(this.minK, n));
      hist[n]!++;
      for (let j = 0; j < n; j++) { token.push(t); expert.push(order[j]!); }
    }
    const tok = Int32Array.from(token);
    const exp = Int32Array.from(expert);
    let gates = takeFlat(probs, flatPositions(tok, exp, E));
    if (this.normalize && tok.length > 0) {
      // divide each gate by its token's total: segment sums by scatter, gathered back per assignment
      const g2 = reshape(gates, [tok.length, 1]);
      const totals = gatherRows(scatterAddRows(g2, tok, T), tok);
      gates = reshape(div(g2, totals), [tok.length]);
    }
    while (hist.length > 1 && hist[hist.length - 1] === 0) hist.pop();
    return {
      tokens: T, experts: E, token: tok, expert: exp, gates, k: T > 0 ? tok.length / T : 0, logits, probs, aux: {},
      stats: { meanK: T > 0 ? tok.length / T : 0, tokensWithNExperts: hist },
    };
  }
}

