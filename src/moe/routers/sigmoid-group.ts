// DeepSeek-V3-style routing: sigmoid affinities s = sigmoid(x W_g^T); experts in groups; keep the
// best groups (scored by the sum of their top-2 affinities), then the top-k experts inside them.
// A per-expert bias shifts the scores used for selection only (aux-loss-free balancing), updated
// after each training forward by bias += rate * sign(mean load - load). Gates are the chosen
// affinities (without bias), renormalised over the k, times a routed scaling factor.

import { Tensor } from '../../tensor/tensor.js';
import { div, mul, reshape, sigmoid, sum } from '../../ops/index.js';
import { noGrad } from '../../tensor/autograd.js';
import { LinearRouter, type LinearRouterOptions } from './base.js';
import type { Router, Routing } from './types.js';
import { checkInt, checkRange, flatPositions, repeatEach, takeFlat } from '../util.js';

export interface SigmoidGroupRouterOptions extends LinearRouterOptions {
  /** Experts per token (default 2). */
  k?: number;
  /** Number of expert groups; must divide E (default 1: no group limit). */
  groups?: number;
  /** Groups kept per token (default: all). */
  topkGroups?: number;
  /** Bias update rate per step (default 0.001; 0 disables aux-loss-free balancing). */
  biasRate?: number;
  /** Factor applied to the gates (default 1; DeepSeek-V3 uses 2.5). */
  routedScaling?: number;
  /** Renormalise the k gates to sum to 1 before scaling (default true). */
  normalize?: boolean;
}

export class SigmoidGroupRouter extends LinearRouter implements Router {
  readonly kind = 'sigmoid-group';
  readonly k: number;
  readonly groups: number;
  readonly topkGroups: number;
  readonly biasRate: number;
  readonly routedScaling: number;
  readonly normalize: boolean;
  /** Selection bias per expert: a buffer, saved with the weights, never trained by gradients. */
  readonly biasBuffer: Tensor;

  constructor(dModel: number, numExperts: number, opts: SigmoidGroupRouterOptions = {}) {
    super(dModel, numExperts, opts);
    const n = 'SigmoidGroupRouter';
    this.k = opts.k ?? 2;
    this.groups = opts.groups ?? 1;
    checkInt(n, 'groups', this.groups, 1, numExperts);
    if (numExperts % this.groups !== 0) throw new Error(`${n}: groups = ${this.groups} must divide numExperts = ${numExperts}`);
    this.topkGroups = opts.topkGroups ?? this.groups;
    checkInt(n, 'topkGroups', this.topkGroups, 1, this.groups);
    checkInt(n, 'k', this.k, 1, (numExperts / this.groups) * this.topkGroups);
    this.biasRate = opts.biasRate ?? 0.001;
    checkRange(n, 'biasRate', this.biasRate, 0, Infinity);
    this.routedScaling = opts.routedScaling ?? 1;
    checkRange(n, 'routedScaling', this.routedScaling, 0, Infinity, true);
    this.normalize = opts.normalize ?? true;
    this.biasBuffer = this.buffer('bias', Tensor.empty([numExperts]));
  }

  /** The selection bias per expert (a view of the buffer). */
  get bias(): Float32Array | Float64Array {
    return this.biasBuffer.data as Float32Array | Float64Array;
  }

  /** Expert choices [T*k] (token-major) from scores + bias, within the best groups. */
  private select(s: Float32Array | Float64Array, T: number): Int32Array {
    const E = this.numExperts;
    const G = this.groups;
    const per = E / G;
    const out = new Int32Array(T * this.k);
    const score = new Float64Array(E);
    for (let t = 0; t < T; t++) {
      for (let e = 0; e < E; e++) score[e] = s[t * E + e]! + this.bias[e]!;
      let allowed: Set<number> | null = null;
      if (this.topkGroups < G) {
        const gs: Array<[number, number]> = [];
        for (let g = 0; g < G; g++) {
          const v = Array.from(score.subarray(g * per, (g + 1) * per)).sort((a, b) => b - a);
          gs.push([v[0]! + (per > 1 ? v[1]! : 0), g]);
        }
        gs.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
        allowed = new Set(gs.slice(0, this.topkGroups).map(([, g]) => g));
      }
      const cand = [...Array(E).keys()].filter((e) => !allowed || allowed.has(Math.floor(e / per)));
      cand.sort((a, b) => score[b]! - score[a]! || a - b);
      for (let j = 0; j < this.k; j++) out[t * this.k + j] = cand[j]!;
    }
    return out;
  }

  route(x: Tensor): Routing {
    const logits = this.logits(x);
    const s = sigmoid(logits); // [T, E]
    const T = x.shape[0]!;
    const E = this.numExperts;
    const k = this.k;
    const expert = this.select(s.data as Float32Array, T);
    const token = repeatEach(T, k);
    let g = reshape(takeFlat(s, flatPositions(token, expert, E)), [T, k]);
    if (this.normalize) g = div(g, sum(g, -1, true));
    if (this.routedScaling !== 1) g = mul(g, this.routedScaling);
    // a distribution over experts for P_i and entropy: the affinities normalised per token
    const probs = noGrad(() => div(s, sum(s, -1, true)));
    if (this.training && this.biasRate > 0 && T > 0) {
      const load = new Float64Array(E);
      for (const e of expert) load[e]! += 1;
      const meanLoad = (T * k) / E;
      for (let e = 0; e < E; e++) this.bias[e]! += this.biasRate * Math.sign(meanLoad - load[e]!);
    }
    return {
      tokens: T, experts: E, token, expert, gates: reshape(g, [T * k]), k, logits, probs, aux: {},
      stats: { biasMin: Math.min(...this.bias), biasMax: Math.max(...this.bias) },
    };
  }
}

