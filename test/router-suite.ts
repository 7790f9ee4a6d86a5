// The router conformance suite every router runs: shapes and ranges, per-token gate sums,
// determinism under a seed, eval vs train, and gradients against float64 finite differences.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend, moe } from '../src/index.js';
import { checkAccumulatedGradients, randTensor } from './helpers.js';

type Router = moe.Router;

export interface RouterSuiteOptions {
  name: string;
  newRouter: (dModel: number, numExperts: number, seed: number) => Router;
  /** Sum of each token's gates: 'one' (normalised), 'le-one' (a subset of a softmax), or 'free'. */
  gateSum: 'one' | 'le-one' | 'free';
  /** Exactly k assignments per token (token choice with fixed k): give k; else null. */
  fixedK: ((E: number) => number) | null;
  /** Whether training and eval differ (noise, jitter): then two training calls differ. */
  stochasticInTraining: boolean;
  /** Tests skipped, each with its reason. */
  skip?: Array<{ reason: string; tests: string[] }>;
  /** Extra route options (token ids for hash routing, cluster labels for hierarchical routing) for T tokens and E experts. */
  routeOptions?: (T: number, E: number) => moe.RouteOptions;
}

const SHAPES: Array<[number, number, number]> = [[1, 4, 1], [1, 3, 4], [9, 6, 4], [16, 8, 8], [0, 4, 4], [7, 5, 3]];

export function runRouterSuite(o: RouterSuiteOptions): void {
  const skipped = new Map<string, string>();
  for (const s of o.skip ?? []) for (const t of s.tests) skipped.set(t, s.reason);
  const def = (name: string, fn: () => void): void => {
    const reason = skipped.get(name);
    test(`${o.name}: ${name}`, reason ? { skip: reason } : {}, fn);
  };
  const opts = (T: number, E: number) => o.routeOptions?.(T, E) ?? {};

  def('shapes, ranges and gate sums', () => {
    for (const [T, d, E] of SHAPES) {
      const r = o.newRouter(d, E, 1);
      const x = randTensor(new Rng(T + E), [T, d]);
      for (const training of [true, false]) {
        r.train(training);
        const out = noGrad(() => r.route(x, opts(T, E)));
        const A = out.token.length;
        assert.equal(out.expert.length, A);
        assert.deepEqual([...out.gates.shape], [A]);
        assert.equal(out.tokens, T);
        assert.equal(out.experts, E);
        for (let i = 0; i < A; i++) {
          assert.ok(out.token[i]! >= 0 && out.token[i]! < T, `token ${out.token[i]} out of range`);
          assert.ok(out.expert[i]! >= 0 && out.expert[i]! < E, `expert ${out.expert[i]} out of range`);
          const g = out.gates.data[i]!;
          assert.ok(Number.isFinite(g) && g >= 0, `gate ${g} at ${i}`);
        }
        if (o.fixedK) {
          const k = o.fixedK(E);
          assert.equal(A, T * k, `T=${T} E=${E}: ${A} assignments, expected ${T * k}`);
          for (let t = 0; t < T; t++) {
            const mine = [...out.expert.subarray(t * k, (t + 1) * k)];
            assert.equal(new Set(mine).size, k, 'a token chose the same expert twice');
          }
        }
        const sums = new Float64Array(T);
        for (let i = 0; i < A; i++) sums[out.token[i]!]! += out.gates.data[i]!;
        for (let t = 0; t < T; t++) {
          if (o.gateSum === 'one') assert.ok(Math.abs(sums[t]! - 1) < 1e-5, `token ${t}: gates sum to ${sums[t]}`);
          if (o.gateSum === 'le-one') assert.ok(sums[t]! <= 1 + 1e-5, `token ${t}: gates sum to ${sums[t]}`);
        }
        if (out.probs) {
          assert.deepEqual([...out.probs.shape], [T, E]);
          for (let t = 0; t < T; t++) {
            let s = 0;
            for (let e = 0; e < E; e++) s += out.probs.data[t * E + e]!;
            assert.ok(Math.abs(s - 1) < 1e-5, `probs row ${t} sums to ${s}`);
          }
        }
        if (out.logits) assert.deepEqual([...out.logits.shape], [T, E]);
      }
    }
  });

  def('the same seed gives the same routing; eval is deterministic', () => {
    const x = randTensor(new Rng(3), [12, 6]);
    for (const training of [true, false]) {
      const a = o.newRouter(6, 4, 7).train(training);
      const b = o.newRouter(6, 4, 7).train(training);
      const ra = noGrad(() => a.route(x, opts(12, 4)));
      const rb = noGrad(() => b.route(x, opts(12, 4)));
      assert.deepEqual([...ra.expert], [...rb.expert]);
      assert.deepEqual([...ra.token], [...rb.token]);
      assert.deepEqual([...ra.gates.data], [...rb.gates.data]);
    }
    const r = o.newRouter(6, 4, 7).eval();
    const r1 = noGrad(() => r.route(x, opts(12, 4)));
    const r2 = noGrad(() => r.route(x, opts(12, 4)));
    assert.deepEqual([...r1.gates.data], [...r2.gates.data]);
  });

  def('training adds noise or jitter; eval does not', () => {
    const x = randTensor(new Rng(4), [12, 6]);
    const r = o.newRouter(6, 4, 7).train(true);
    const g1 = noGrad(() => r.route(x, opts(12, 4))).gates.data;
    const g2 = noGrad(() => r.route(x, opts(12, 4))).gates.data;
    const same = g1.length === g2.length && g1.every((v, i) => v === g2[i]);
    assert.equal(!same, o.stochasticInTraining, o.stochasticInTraining ? 'two training calls gave identical gates' : 'training calls differ');
  });

  def('gradients of gates and aux losses match float64 finite differences', () => {
    withBackend('js', () => {
      for (const training of [false, true]) {
        const T = 10;
        const d = 5;
        const E = 4;
        const r = o.newRouter(d, E, 11).to('float64').train(training);
        const rng = new Rng(12);
        const x = randTensor(rng, [T, d], 'float64', -1.5, 1.5).requireGrad();
        const params = r.parameters();
        if (params.length === 0) {
          const out = r.route(x, opts(T, E));
          assert.equal(out.gates.requiresGrad, false, 'a router without parameters has constant gates');
          return;
        }
        const reseed = (): void => { (r as unknown as { reseed?: (s: number) => void }).reseed?.(5); };
        reseed();
        const probe = noGrad(() => r.route(x, opts(T, E)));
        const w = randTensor(rng, [probe.gates.size], 'float64');
        const loss = (): Tensor => {
          reseed();
          const out = r.route(x, opts(T, E));
          let l = ops.sum(ops.mul(out.gates, w));
          for (const a of Object.values(out.aux)) l = ops.add(l, a);
          return l;
        };
        for (const p of [...params, x]) p.grad = null;
        loss().backward();
        assert.ok(x.grad && params[0]!.grad, 'the input and the scoring weight must get gradients');
        // a parameter unused in this mode (noise weights in eval) has gradient 0
        checkAccumulatedGradients([...r.namedParameters(), ['x', x]], loss, { samples: 12, rtol: 1e-4, label: training ? 'train' : 'eval' });
      }
    });
  });
}
