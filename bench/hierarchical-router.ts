// Routing time per token of the hierarchical router (E = 64, G = 8, k = 2) against flat top-k
// (k = 2) in the same run: eval forward without gradients, the router alone and with the losses
// MoELayer adds to it. Rounds interleave the four cases so that load on a shared machine hits all.
// Run: node dist/bench/hierarchical-router.js [--json]

import { fileURLToPath } from 'node:url';
import { Rng, Tensor, noGrad, moe, getBackend } from '../src/index.js';
import { formatTable } from './timing.js';

export interface HierarchicalBenchRow {
  d: number;
  T: number;
  /** Microseconds per token, minimum and median over rounds, per case. */
  us: Record<'flat' | 'hier' | 'flatLosses' | 'hierLosses', { min: number; median: number }>;
  /** Scoring multiply-adds per token: d E (flat) and d (G + E/G) (hierarchical). */
  macsFlat: number;
  macsHier: number;
}

export function benchHierarchicalRouter(opts: { E?: number; G?: number; k?: number; shapes?: Array<[number, number]>; rounds?: number } = {}): HierarchicalBenchRow[] {
  const E = opts.E ?? 64;
  const G = opts.G ?? 8;
  const k = opts.k ?? 2;
  const rounds = opts.rounds ?? 12;
  const out: HierarchicalBenchRow[] = [];
  for (const [d, T] of opts.shapes ?? [[256, 1], [256, 512], [1024, 512]]) {
    const x = Tensor.empty([T, d]);
    new Rng(1).fillUniform(x.data as Float32Array, -1, 1);
    const h = new moe.HierarchicalRouter(d, E, { groups: G, k, seed: 1 }).eval();
    const f = new moe.TopKRouter(d, E, { k, seed: 1 }).eval();
    // what MoELayer computes from a routing besides the router's own aux losses
    const withLosses = (r: moe.Router) => (): void => {
      const o = r.route(x);
      if (o.probs) moe.loadBalanceLoss(o.probs, o.expert, o.k);
      if (o.logits) moe.zLoss(o.logits);
    };
    const cases = { flat: () => { f.route(x); }, hier: () => { h.route(x); }, flatLosses: withLosses(f), hierLosses: withLosses(h) };
    const reps = T === 1 ? 200 : 10;
    const times: Record<string, number[]> = { flat: [], hier: [], flatLosses: [], hierLosses: [] };
    for (let round = 0; round < rounds + 2; round++) {
      for (const [name, fn] of Object.entries(cases)) {
        const t0 = performance.now();
        for (let i = 0; i < reps; i++) noGrad(fn);
        if (round >= 2) times[name]!.push(((performance.now() - t0) / reps / T) * 1000); // the first two rounds warm up
      }
    }
    const stat = (a: number[]) => { a.sort((p, q) => p - q); return { min: a[0]!, median: a[a.length >> 1]! }; };
    out.push({
      d, T, macsFlat: d * E, macsHier: d * (G + E / G),
      us: { flat: stat(times['flat']!), hier: stat(times['hier']!), flatLosses: stat(times['flatLosses']!), hierLosses: stat(times['hierLosses']!) },
    });
  }
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const rows = benchHierarchicalRouter();
  if (process.argv.includes('--json')) console.log(JSON.stringify({ backend: getBackend().name, rows }, null, 1));
  else {
    const f = (v: number) => v.toFixed(2);
    console.log(`backend ${getBackend().name}; E = 64, G = 8, k = 2; us per token, min (median) over rounds`);
    console.log(formatTable(['d', 'T', 'flat', 'hierarchical', 'hier/flat', 'flat+losses', 'hier+losses', 'hier/flat+losses', 'MACs hier/flat'],
      rows.map((r) => [String(r.d), String(r.T), `${f(r.us.flat.min)} (${f(r.us.flat.median)})`, `${f(r.us.hier.min)} (${f(r.us.hier.median)})`,
        f(r.us.hier.min / r.us.flat.min), `${f(r.us.flatLosses.min)} (${f(r.us.flatLosses.median)})`,
        `${f(r.us.hierLosses.min)} (${f(r.us.hierLosses.median)})`, f(r.us.hierLosses.min / r.us.flatLosses.min), f(r.macsHier / r.macsFlat)])));
  }
}
