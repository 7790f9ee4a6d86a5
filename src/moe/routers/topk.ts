// Top-k softmax routing. Two orders exist in the wild: softmax over all experts then top-k
// (Switch, Mixtral, GShard; optionally renormalising the k gates), or top-k of the logits then a
// softmax over the k (Megatron-Core's default). Switch routing is k = 1.
//
// Hard top-k has no gradient with respect to which experts were chosen: gradients reach the router
// through the selected gate values only (what every major library does).

import { div, softmax, sum, topk } from '../../ops/index.js';
import type { Tensor } from '../../tensor/tensor.js';
import { LinearRouter, flattenSelection, type LinearRouterOptions } from './base.js';
import type { Router, Routing } from './types.js';
import { checkInt } from '../util.js';

export type ScoreOrder = 'softmax-topk' | 'topk-softmax';

export interface TopKRouterOptions extends LinearRouterOptions {
  /** Experts per token (default 2). */
  k?: number;
  /** 'softmax-topk' (default; Switch, Mixtral) or 'topk-softmax' (Megatron-Core). */
  order?: ScoreOrder;
  /** With softmax-topk: renormalise the k gates to sum to 1 (Mixtral: true; Switch k=1: false). Default true for k > 1. */
  normalize?: boolean;
}

export class TopKRouter extends LinearRouter implements Router {
  readonly kind: string = 'topk';
  readonly k: number;
  readonly order: ScoreOrder;
  readonly normalize: boolean;

  constructor(dModel: number, numExperts: number, opts: TopKRouterOptions = {}) {
    super(dModel, numExperts, opts);
    this.k = opts.k ?? 2;
    checkInt(this.constructor.name, 'k', this.k, 1, numExperts);
    this.order = opts.order ?? 'softmax-topk';
    if (this.order !== 'softmax-topk' && this.order !== 'topk-softmax') {
      throw new Error(`${this.constructor.name}: order = '${String(this.order)}' must be 'softmax-topk' or 'topk-softmax'`);
    }
    this.normalize = opts.normalize ?? this.k > 1;
  }

  route(x: Tensor): Routing {
    const logits = this.logits(x);
    const probs = softmax(logits);
    let gates: Tensor;
    let indices: Tensor;
    if (this.order === 'softmax-topk') {
      const sel = topk(probs, this.k);
      indices = sel.indices;
      gates = this.normalize ? div(sel.values, sum(sel.values, -1, true)) : sel.values;
    } else {
      const sel = topk(logits, this.k);
      indices = sel.indices;
      gates = softmax(sel.values);
    }
    const flat = flattenSelection(gates, indices);
    return { tokens: x.shape[0]!, experts: this.numExperts, ...flat, k: this.k, logits, probs, aux: {}, stats: {} };
  }
}

/** Switch Transformer routing: top-1 of the softmax, gate = the chosen probability. */
export class SwitchRouter extends TopKRouter {
  override readonly kind = 'switch';
  constructor(dModel: number, numExperts: number, opts: LinearRouterOptions = {}) {
    super(dModel, numExperts, { ...opts, k: 1, order: 'softmax-topk', normalize: false });
  }
}
