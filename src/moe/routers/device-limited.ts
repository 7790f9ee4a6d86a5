// Device-limited top-k routing (DeepSeek-V3's node-limited routing) and a topology-aware auxiliary
// loss (TA-MoE's idea). Experts sit on N devices (contiguous split, placement.ts); each token may
// use experts on at most M devices: the M devices with the highest sums of their best affinities
// are kept, then the usual top-k runs over those devices' experts only. With M = N it is exactly
// `topk`. The loss charges each token's dispatch probabilities by the cost of the link from the
// token's device to each expert's device, pulling the router towards local and intra-node experts.

import { Tensor } from '../../tensor/tensor.js';
import { add, div, mul, softmax, sum, topk } from '../../ops/index.js';
import { flattenSelection } from './base.js';
import { TopKRouter, type TopKRouterOptions } from './topk.js';
import { DevicePlacement, type DevicePlacementOptions } from './placement.js';
import type { Router, Routing } from './types.js';
import { checkInt } from '../util.js';

export interface DeviceLimitedRouterOptions extends TopKRouterOptions, DevicePlacementOptions {
  /** Devices M a token's k experts may span (default N: no limit, plain top-k). */
  maxDevices?: number;
  /** A device's score is the sum of its best `deviceScoreTopN` probabilities (default ceil(k / M), DeepSeek-V3's K_r / M). */
  deviceScoreTopN?: number;
  /** Return the topology loss in aux as `topology` (weighted by the layer's routerLossCoefs.topology, default 0.01). Default false. */
  topologyLoss?: boolean;
}

/** Far below any logit or probability: a masked expert is never among the top k. */
const MASKED = -1e30;

export class DeviceLimitedRouter extends TopKRouter implements Router {
  override readonly kind = 'device-limited';
  readonly placement: DevicePlacement;
  readonly maxDevices: number;
  readonly deviceScoreTopN: number;
  readonly topologyLoss: boolean;
  private costCache: { T: number; dtype: string; c: Tensor } | null = null;

  constructor(dModel: number, numExperts: number, opts: DeviceLimitedRouterOptions = {}) {
    super(dModel, numExperts, opts);
    const n = 'DeviceLimitedRouter';
    this.placement = new DevicePlacement(n, numExperts, opts);
    const N = this.placement.devices;
    this.maxDevices = opts.maxDevices ?? N;
    checkInt(n, 'maxDevices', this.maxDevices, 1, N);
    const reachable = this.placement.minExpertsOn(this.maxDevices);
    if (this.k > reachable) {
      throw new Error(`${n}: k = ${this.k} experts cannot always fit on maxDevices = ${this.maxDevices} of ${N} devices (the smallest ${this.maxDevices} hold ${reachable} of ${numExperts} experts)`);
    }
    this.deviceScoreTopN = opts.deviceScoreTopN ?? Math.ceil(this.k / this.maxDevices);
    checkInt(n, 'deviceScoreTopN', this.deviceScoreTopN, 1, numExperts);
    this.topologyLoss = opts.topologyLoss ?? false;
    if (typeof this.topologyLoss !== 'boolean') throw new Error(`${n}: topologyLoss must be a boolean, got ${JSON.stringify(opts.topologyLoss)}`);
  }

  /**
   * The devices each token may use [T * M], from probabilities p [T, E]: per device, the sum of
   * its best min(deviceScoreTopN, size) probabilities; the M best devices (ties: lower index).
   */
  chooseDevices(p: ArrayLike<number>, T: number): Int32Array {
    const { devices: N, expertStart } = this.placement;
    const E = this.numExperts;
    const M = this.maxDevices;
    const out = new Int32Array(T * M);
    const score = new Float64Array(N);
    const order = Array.from({ length: N }, (_, r) => r);
    for (let t = 0; t < T; t++) {
      for (let r = 0; r < N; r++) {
        const mine: number[] = [];
        for (let e = expertStart[r]!; e < expertStart[r + 1]!; e++) mine.push(p[t * E + e]!);
        mine.sort((a, b) => b - a);
        let s = 0;
        for (let j = 0; j < Math.min(this.deviceScoreTopN, mine.length); j++) s += mine[j]!;
        score[r] = s;
      }
      order.sort((a, b) => score[b]! - score[a]! || a - b);
      for (let j = 0; j < M; j++) out[t * M + j] = order[j]!;
    }
    return out;
  }

  /** The topology loss: mean over tokens of sum_e p[t, e] * cost(device of t, device of e). */
  topologyLossOf(probs: Tensor): Tensor {
    const T = probs.shape[0]!;
    if (!this.costCache || this.costCache.T !== T || this.costCache.dtype !== probs.dtype) {
      const c = Tensor.empty([T, this.numExperts], probs.dtype);
      c.data.set(this.placement.costMatrix(T));
      this.costCache = { T, dtype: probs.dtype, c };
    }
    return mul(sum(mul(probs, this.costCache.c)), T > 0 ? 1 / T : 0);
  }

  override route(x: Tensor): Routing {
    const logits = this.logits(x);
    const probs = softmax(logits);
    const T = x.shape[0]!;
    const E = this.numExperts;
    // selection runs on the probabilities (softmax-topk) or the logits (topk-softmax), as topk does
    let sel = this.order === 'softmax-topk' ? probs : logits;
    if (this.maxDevices < this.placement.devices && T > 0) {
      const allowed = this.chooseDevices(probs.data, T);
      const mask = Tensor.empty([T, E], probs.dtype);
      mask.data.fill(MASKED);
      const { expertStart } = this.placement;
      const M = this.maxDevices;
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < M; j++) {
          const r = allowed[t * M + j]!;
          mask.data.fill(0, t * E + expertStart[r]!, t * E + expertStart[r + 1]!);
        }
      }
      sel = add(sel, mask);
    }
    const top = topk(sel, this.k);
    // masked entries never win, so the chosen values are the unmasked probabilities or logits
    const gates = this.order === 'softmax-topk'
      ? (this.normalize ? div(top.values, sum(top.values, -1, true)) : top.values)
      : softmax(top.values);
    const flat = flattenSelection(gates, top.indices);
    const aux: Record<string, Tensor> = {};
    if (this.topologyLoss) aux['topology'] = this.topologyLossOf(probs);
    return { tokens: T, experts: E, ...flat, k: this.k, logits, probs, aux, stats: this.dispatchStats(flat.expert, T) };
  }

  /** Devices used per token and the shares of assignments that leave the token's device or node. */
  private dispatchStats(expert: Int32Array, T: number): Record<string, number> {
    if (T === 0) return { devicesPerToken: 0, offDeviceShare: 0, offNodeShare: 0 };
    const pl = this.placement;
    const src = pl.sourceDevices(T);
    let devs = 0;
    let offDevice = 0;
    let offNode = 0;
    for (let t = 0; t < T; t++) {
      const seen = new Set<number>();
      for (let j = 0; j < this.k; j++) {
        const d = pl.deviceOfExpert[expert[t * this.k + j]!]!;
        seen.add(d);
        if (d !== src[t]) offDevice++;
        if (Math.floor(d / pl.devicesPerNode) !== Math.floor(src[t]! / pl.devicesPerNode)) offNode++;
      }
      devs += seen.size;
    }
    const A = T * this.k;
    return { devicesPerToken: devs / T, offDeviceShare: offDevice / A, offNodeShare: offNode / A };
  }
}
