// Hierarchical two-level routing: a cluster gate W_c [G, d] picks one of G clusters per token
// (learned argmax, or a given label such as the language family in the supervised variant), then
// an expert gate scores only that cluster's E/G experts and takes their top k. Scoring costs
// d * (G + E/G) multiply-adds per token instead of d * E: the second gate is one grouped GEMM over
// tokens sorted by cluster, each group against its own [E/G, d] slice of W_e.
//
// Gates are p(c | x) * p(e | c, x) (Shazeer et al. 2017's hierarchical MoE multiplies the two
// levels' gates), with the k within-cluster probabilities optionally renormalised first. The
// p(c) factor is what gives the cluster gate a gradient from the task loss; scaleByCluster: false
// drops it (gates then sum to 1, and the cluster gate learns from its own loss only).

import { Tensor } from '../../tensor/tensor.js';
import { add, crossEntropy, div, gatherRows, groupedMatmul, matmul, mul, reshape, softmax, sum, topk } from '../../ops/index.js';
import { noGrad } from '../../tensor/autograd.js';
import { uniform } from '../../nn/init.js';
import { LinearRouter, type LinearRouterOptions } from './base.js';
import type { RouteOptions, Router, Routing } from './types.js';
import { checkInt, checkTokens, flatPositions, putFlat, repeatEach, takeFlat } from '../util.js';
import { loadBalanceLoss, zLoss } from '../losses/balance.js';

export interface HierarchicalRouterOptions extends LinearRouterOptions {
  /** Number of clusters G; must divide E (default 1: a flat top-k router). */
  groups?: number;
  /** Experts per token, all inside the chosen cluster (default 2, at most E/G). */
  k?: number;
  /** Renormalise the k within-cluster probabilities to sum to 1 before the cluster factor (default true for k > 1, as topk). */
  normalize?: boolean;
  /** Multiply the gates by p(cluster) (default true). false: gates are the within-cluster gates alone. */
  scaleByCluster?: boolean;
  /**
   * Supervised variant (default false): the cluster of each token is given (clusterIds, e.g. its
   * language family) in training; the cluster gate learns to predict it by cross-entropy and routes
   * alone in evaluation when no labels are given.
   */
  supervised?: boolean;
}

export interface HierarchicalRouteOptions extends RouteOptions {
  /** Cluster of each token [T], in [0, G): the supervised variant's labels. */
  clusterIds?: Int32Array;
}

export class HierarchicalRouter extends LinearRouter implements Router {
  readonly kind = 'hierarchical';
  readonly groups: number;
  /** Experts per cluster, E / G. */
  readonly perGroup: number;
  readonly k: number;
  readonly normalize: boolean;
  readonly scaleByCluster: boolean;
  readonly supervised: boolean;
  /** The cluster gate W_c [G, d] (the expert gate W_e [E, d] is `weight`; rows g*E/G.. are cluster g's). */
  readonly clusterWeight: Tensor;
  /**
   * Labels for the next route() calls that get none in their options: how a model passes language
   * families through MoELayer.forward, which forwards token ids only. null = none.
   */
  clusterLabels: Int32Array | null = null;

  constructor(dModel: number, numExperts: number, opts: HierarchicalRouterOptions = {}) {
    super(dModel, numExperts, opts);
    const n = 'HierarchicalRouter';
    this.groups = opts.groups ?? 1;
    checkInt(n, 'groups', this.groups, 1, numExperts);
    if (numExperts % this.groups !== 0) throw new Error(`${n}: groups = ${this.groups} must divide numExperts = ${numExperts}`);
    this.perGroup = numExperts / this.groups;
    this.k = opts.k ?? Math.min(2, this.perGroup);
    checkInt(n, 'k', this.k, 1, this.perGroup);
    this.normalize = opts.normalize ?? this.k > 1;
    this.scaleByCluster = opts.scaleByCluster ?? true;
    this.supervised = opts.supervised ?? false;
    for (const key of ['normalize', 'scaleByCluster', 'supervised'] as const) {
      if (typeof this[key] !== 'boolean') throw new Error(`${n}: ${key} = ${String(this[key])} must be a boolean`);
    }
    // drawn after W_e, so W_e equals a flat TopKRouter's weight under the same seed
    this.clusterWeight = this.param('clusterWeight', uniform([this.groups, dModel], 1 / Math.sqrt(dModel), this.rng));
  }

  /** Sets (or clears with null) the cluster labels used by calls that pass none. */
  setClusterLabels(labels: Int32Array | null): void {
    this.clusterLabels = labels;
  }

  /** The labels for this call, checked: length T, each in [0, G). */
  private labelsFor(T: number, opts: HierarchicalRouteOptions): Int32Array | null {
    const labels = opts.clusterIds ?? this.clusterLabels;
    const n = 'HierarchicalRouter';
    if (!labels) {
      if (this.supervised && this.training) throw new Error(`${n}: supervised = true needs clusterIds (one cluster per token) in training`);
      return null;
    }
    if (!this.supervised) throw new Error(`${n}: clusterIds were given but supervised = false (set supervised: true to route by labels)`);
    if (labels.length !== T) throw new Error(`${n}: ${labels.length} clusterIds for ${T} tokens`);
    for (let t = 0; t < T; t++) {
      const c = labels[t]!;
      if (!Number.isInteger(c) || c < 0 || c >= this.groups) throw new Error(`${n}: clusterIds[${t}] = ${c} must be in [0, ${this.groups})`);
    }
    return labels;
  }

  route(x: Tensor, opts: HierarchicalRouteOptions = {}): Routing {
    checkTokens('HierarchicalRouter', x, this.dModel);
    const T = x.shape[0]!;
    const E = this.numExperts;
    const G = this.groups;
    const per = this.perGroup;
    const k = this.k;
    const labels = this.labelsFor(T, opts);
    let xin = x;
    if (this.training && this.jitter > 0) {
      const noise = Tensor.empty(x.shape, x.dtype);
      this.rng.fillUniform(noise.data as Float32Array, 1 - this.jitter, 1 + this.jitter);
      xin = mul(x, noise);
    }

    // level 1: cluster logits [T, G] = x W_c^T, d*G per token
    const clusterLogits = matmul(xin, this.clusterWeight, { transB: true });
    const pc = softmax(clusterLogits); // [T, G]
    let cluster: Int32Array;
    if (labels) cluster = Int32Array.from(labels);
    else cluster = Int32Array.from(noGrad(() => topk(pc, 1)).indices.data as Int32Array);
    const pChosen = reshape(takeFlat(pc, flatPositions(repeatEach(T, 1), cluster, G)), [T, 1]); // p(c_t | x_t)

    // level 2: tokens sorted by cluster (stable), one grouped GEMM against W_e as [G, E/G, d]:
    // group c's rows meet only cluster c's E/G rows of W_e, d*E/G per token
    const sizes = new Int32Array(G);
    for (let t = 0; t < T; t++) sizes[cluster[t]!]!++;
    const offsets = new Int32Array(G + 1);
    for (let c = 0; c < G; c++) offsets[c + 1] = offsets[c]! + sizes[c]!;
    const order = new Int32Array(T); // order[row] = token
    const rowOf = new Int32Array(T); // rowOf[token] = row
    const fill = offsets.slice(0, G);
    for (let t = 0; t < T; t++) {
      const r = fill[cluster[t]!]!++;
      order[r] = t;
      rowOf[t] = r;
    }
    // the permutation is a copy of x as large as the product's input: skip it when tokens already
    // come in cluster order (always at T = 1, the decode step)
    let sorted = true;
    for (let r = 0; r < T && sorted; r++) sorted = order[r] === r;
    const xSorted = sorted ? xin : gatherRows(xin, order); // [T, d]
    const logitsSorted = groupedMatmul(xSorted, reshape(this.weight, [G, per, this.dModel]), sizes, { transW: true }); // [T, E/G]
    const pSorted = softmax(logitsSorted); // p(e | c_t, x_t) over the cluster's experts
    const pe = sorted ? pSorted : gatherRows(pSorted, rowOf); // [T, E/G], token order
    const sel = topk(pe, k);
    let g = this.normalize ? div(sel.values, sum(sel.values, -1, true)) : sel.values;
    if (this.scaleByCluster) g = mul(g, pChosen);
    const local = sel.indices.data as Int32Array;
    const expert = new Int32Array(T * k);
    for (let i = 0; i < T * k; i++) expert[i] = cluster[Math.floor(i / k)]! * per + local[i]!;
    const token = repeatEach(T, k);

    // q [T, E]: p(e | c_t) in the token's cluster block, 0 elsewhere (other clusters' experts are
    // never scored). Returned detached as probs (rows sum to 1) for metrics: the router's own
    // losses do the balancing, so the layer's loadBalance on it is reported but does not train.
    const q = putFlat(reshape(pe, [T * per]), blockPositions(cluster, per, E), [T, E]);
    const probs = q.detach();

    const aux: Record<string, Tensor> = {};
    if (T > 0) {
      // cluster level: Switch balance over clusters (learned), or cross-entropy to the labels (supervised)
      if (labels) aux['clusterCE'] = crossEntropy(clusterLogits, labels);
      else if (!this.supervised) aux['clusterBalance'] = loadBalanceLoss(pc, cluster, 1);
      aux['expertBalance'] = this.expertBalance(q, sizes, expert, T);
      // ST-MoE's z-loss on both gates' logits (the layer weights it by zLossCoef; logits is null)
      aux['zLoss'] = add(zLoss(clusterLogits), zLoss(logitsSorted));
    }
    const clusterTokens = Array.from(sizes);
    return {
      tokens: T, experts: E, token, expert, gates: reshape(g, [T * k]), k, logits: null, probs, aux,
      stats: { clusterTokens, routingMacsPerToken: this.dModel * (G + per) },
    };
  }

  /**
   * Within-cluster balance: Switch's loss over each cluster's E/G experts and T_c tokens,
   * per * sum_j f_cj P_cj, weighted by T_c / T and summed; 1 when every cluster's experts are used
   * evenly. With f_e = count_e / (T_c k) and P_e = colsum(q)_e / T_c this is one weighted sum over
   * the columns of q, sum_e colsum(q)_e * per * count_e / (T k T_c(e)), instead of G small losses.
   */
  private expertBalance(q: Tensor, sizes: Int32Array, expert: Int32Array, T: number): Tensor {
    const E = this.numExperts;
    const per = this.perGroup;
    const w = Tensor.empty([E], q.dtype); // a constant: counts carry no gradient, as in loadBalanceLoss
    for (const e of expert) w.data[e]! += 1;
    for (let e = 0; e < E; e++) {
      const Tc = sizes[Math.floor(e / per)]!;
      w.data[e] = Tc > 0 ? (w.data[e]! * per) / (T * this.k * Tc) : 0;
    }
    return sum(mul(sum(q, 0), w));
  }
}

/** Flat [T, E] positions of each token's cluster block, token-major: t*E + c_t*per + j. */
function blockPositions(cluster: Int32Array, per: number, E: number): Int32Array {
  const out = new Int32Array(cluster.length * per);
  for (let t = 0; t < cluster.length; t++) for (let j = 0; j < per; j++) out[t * per + j] = t * E + cluster[t]! * per + j;
  return out;
}
