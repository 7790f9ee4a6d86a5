// Router metrics from one forward: load per expert, mean probabilities, entropies, drops, dead
// experts. Plain numbers, computed off the autograd graph.

import type { Routing } from './routers/types.js';
import type { DispatchPlan } from './permute/bins.js';

export interface RouterMetrics {
  /** Assignments each expert received before capacity. */
  tokensPerExpert: number[];
  /** Rows each expert processed after capacity. */
  keptPerExpert: number[];
  /** P_i: mean routing probability of each expert (empty when the router has no distribution). */
  meanProb: number[];
  /** H(G): mean over tokens of the entropy of each token's routing distribution (nats). */
  entropy: number;
  /** Entropy of the mean distribution P (nats): log E when the load is balanced on average. */
  entropyOfMean: number;
  /** log E, the maximum of both entropies. */
  maxEntropy: number;
  /** Fraction of assignments dropped by capacity. */
  dropFraction: number;
  /** Coefficient of variation (std/mean) of tokensPerExpert. */
  loadCV: number;
  /** max / mean of tokensPerExpert. */
  maxOverMean: number;
  /** Experts that received no tokens. */
  deadExperts: number[];
  /** Router-specific statistics (e.g. expert choice coverage). */
  router: Record<string, number | number[]>;
}

function entropyOf(p: ArrayLike<number>, off: number, n: number): number {
  let h = 0;
  for (let j = 0; j < n; j++) {
    const v = p[off + j]!;
    if (v > 0) h -= v * Math.log(v);
  }
  return h;
}

export function routerMetrics(r: Routing, plan: DispatchPlan): RouterMetrics {
  const E = r.experts;
  const T = r.tokens;
  const demand = Array.from(plan.demand);
  // The distribution statistics read every routing probability (T x E logs: 5-7 ms of a ~116 ms
  // forward at E = 128, T = 4096, profiled and timed): computed when first read, from the router's
  // probabilities, which nothing writes after routing.
  const probs = r.probs;
  type Distribution = Pick<RouterMetrics, 'meanProb' | 'entropy' | 'entropyOfMean'>;
  let dist: Distribution | null = null;
  const distribution = (): Distribution => {
    if (dist) return dist;
    const meanProb: number[] = [];
    let entropy = NaN;
    let entropyOfMean = NaN;
    if (probs && T > 0) {
      const p = probs.data;
      const P = new Float64Array(E);
      let h = 0;
      for (let t = 0; t < T; t++) {
        h += entropyOf(p, t * E, E);
        for (let e = 0; e < E; e++) P[e]! += p[t * E + e]!;
      }
      for (let e = 0; e < E; e++) meanProb.push(P[e]! / T);
      entropy = h / T;
      entropyOfMean = entropyOf(meanProb, 0, E);
    }
    return (dist = { meanProb, entropy, entropyOfMean });
  };
  const total = demand.reduce((a, b) => a + b, 0);
  const mu = total / E;
  const variance = demand.reduce((a, b) => a + (b - mu) ** 2, 0) / E;
  return {
    tokensPerExpert: demand,
    keptPerExpert: Array.from(plan.groupSizes),
    get meanProb() { return distribution().meanProb; },
    get entropy() { return distribution().entropy; },
    get entropyOfMean() { return distribution().entropyOfMean; },
    maxEntropy: Math.log(E),
    dropFraction: total > 0 ? plan.dropped / total : 0,
    loadCV: mu > 0 ? Math.sqrt(variance) / mu : 0,
    maxOverMean: mu > 0 ? Math.max(...demand) / mu : 0,
    deadExperts: demand.flatMap((d, e) => (d === 0 ? [e] : [])),
    router: r.stats,
  };
}
