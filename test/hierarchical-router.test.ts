// The hierarchical two-level router: the conformance suite (learned, unscaled with jitter,
// supervised), a naive float64 reference, equivalences (G = 1 is flat top-k, G = E is Switch on
// the cluster gate), routing cost counted from the kernels' product shapes, losses, edge cases
// and configuration errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend, getBackend, registerBackend, moe, models, type Backend, type KernelImpls } from '../src/index.js';
import { runRouterSuite } from './router-suite.js';
import { assertClose, randTensor } from './helpers.js';

const groupsFor = (E: number): number => (E % 2 === 0 ? 2 : 1);

runRouterSuite({
  name: 'hierarchical G=2 k=2',
  newRouter: (d, E, seed) => new moe.HierarchicalRouter(d, E, { groups: groupsFor(E), k: Math.min(2, E / groupsFor(E)), seed }),
  gateSum: 'le-one', fixedK: (E) => Math.min(2, E / groupsFor(E)), stochasticInTraining: false,
});
runRouterSuite({
  name: 'hierarchical unscaled, jitter',
  newRouter: (d, E, seed) => new moe.HierarchicalRouter(d, E, { groups: groupsFor(E), k: Math.min(2, E / groupsFor(E)), normalize: true, scaleByCluster: false, jitter: 0.1, seed }),
  gateSum: 'one', fixedK: (E) => Math.min(2, E / groupsFor(E)), stochasticInTraining: true,
});
runRouterSuite({
  name: 'hierarchical supervised',
  newRouter: (d, E, seed) => new moe.HierarchicalRouter(d, E, { groups: groupsFor(E), k: 1, supervised: true, seed }),
  gateSum: 'le-one', fixedK: () => 1, stochasticInTraining: false,
  routeOptions: (T, E) => {
    const o: moe.HierarchicalRouteOptions = { clusterIds: Int32Array.from({ length: T }, (_, i) => (i * 5 + 1) % groupsFor(E)) };
    return o;
  },
});

/** The routing rule written out with plain loops in float64: experts and gates per token. */
function naiveRoute(x: Tensor, Wc: Tensor, We: Tensor, G: number, k: number, normalize: boolean, scale: boolean): { expert: number[]; gates: number[] } {
  const [T, d] = x.shape as [number, number];
  const E = We.shape[0]!;
  const per = E / G;
  const dot = (t: number, W: Tensor, row: number): number => {
    let s = 0;
    for (let j = 0; j < d; j++) s += x.data[t * d + j]! * W.data[row * d + j]!;
    return s;
  };
  const softmaxOf = (z: number[]): number[] => {
    const m = Math.max(...z);
    const e = z.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };
  const expert: number[] = [];
  const gates: number[] = [];
  for (let t = 0; t < T; t++) {
    const pc = softmaxOf([...Array(G).keys()].map((c) => dot(t, Wc, c)));
    const c = pc.indexOf(Math.max(...pc));
    const pe = softmaxOf([...Array(per).keys()].map((j) => dot(t, We, c * per + j)));
    const idx = [...Array(per).keys()].sort((a, b) => pe[b]! - pe[a]! || a - b).slice(0, k);
    const s = normalize ? idx.reduce((a, j) => a + pe[j]!, 0) : 1;
    for (const j of idx) {
      expert.push(c * per + j);
      gates.push((pe[j]! / s) * (scale ? pc[c]! : 1));
    }
  }
  return { expert, gates };
}

test('hierarchical routing matches a naive float64 loop', () => {
  withBackend('js', () => {
    for (const [G, k, normalize, scale] of [[4, 2, true, true], [4, 3, false, true], [2, 1, false, false], [8, 1, true, true]] as const) {
      const r = new moe.HierarchicalRouter(6, 16, { groups: G, k, normalize, scaleByCluster: scale, seed: 3 }).to('float64').eval();
      const x = randTensor(new Rng(G * 10 + k), [25, 6], 'float64');
      const out = noGrad(() => r.route(x));
      const ref = naiveRoute(x, r.clusterWeight, r.weight, G, k, normalize, scale);
      assert.deepEqual([...out.expert], ref.expert, `G=${G} k=${k}: experts`);
      assertClose(out.gates, ref.gates, 1e-12, 1e-14, `G=${G} k=${k}: gates`);
      assert.deepEqual([...out.token], [...Array(25 * k).keys()].map((i) => Math.floor(i / k)));
    }
  });
});

test('G = 1 is a flat top-k router on the same weights: routing and gradients', () => {
  withBackend('js', () => {
    for (const [k, normalize] of [[2, true], [1, false], [3, true]] as const) {
      const h = new moe.HierarchicalRouter(5, 6, { groups: 1, k, normalize, seed: 4 }).to('float64');
      const f = new moe.TopKRouter(5, 6, { k, normalize, seed: 99 }).to('float64');
      f.weight.data.set(h.weight.data);
      const x = randTensor(new Rng(5), [13, 5], 'float64');
      const w = randTensor(new Rng(6), [13 * k], 'float64');
      const a = h.route(x);
      const b = f.route(x);
      assert.deepEqual([...a.expert], [...b.expert]);
      assertClose(a.gates, b.gates, 1e-14, 1e-15, `k=${k} gates`);
      ops.sum(ops.mul(a.gates, w)).backward();
      ops.sum(ops.mul(b.gates, w)).backward();
      assertClose(h.weight.grad!, f.weight.grad!, 1e-12, 1e-14, `k=${k} dW`);
      assertClose(a.probs!, b.probs!, 1e-14, 1e-15, `k=${k} probs`);
    }
  });
});

test('G = E (k = 1) is Switch routing on the cluster gate', () => {
  withBackend('js', () => {
    const h = new moe.HierarchicalRouter(5, 6, { groups: 6, k: 1, seed: 4 }).to('float64');
    const s = new moe.SwitchRouter(5, 6, { seed: 8 }).to('float64');
    s.weight.data.set(h.clusterWeight.data);
    const x = randTensor(new Rng(7), [11, 5], 'float64');
    const a = noGrad(() => h.route(x));
    const b = noGrad(() => s.route(x));
    assert.deepEqual([...a.expert], [...b.expert]);
    assertClose(a.gates, b.gates, 1e-14, 1e-15, 'gates');
    assert.deepEqual(a.stats['clusterTokens'], [...Array(6).keys()].map((e) => [...b.expert].filter((v) => v === e).length));
  });
});

test('k = E/G takes the whole chosen cluster; gates sum to p(cluster)', () => {
  const r = new moe.HierarchicalRouter(4, 12, { groups: 3, k: 4, seed: 2 });
  const x = randTensor(new Rng(1), [9, 4]);
  const out = noGrad(() => r.route(x));
  const pc = noGrad(() => ops.softmax(ops.matmul(x, r.clusterWeight, { transB: true })));
  for (let t = 0; t < 9; t++) {
    const mine = [...out.expert.subarray(4 * t, 4 * t + 4)].sort((a, b) => a - b);
    const c = Math.floor(mine[0]! / 4);
    assert.deepEqual(mine, [4 * c, 4 * c + 1, 4 * c + 2, 4 * c + 3]);
    const sum = [...out.gates.data.subarray(4 * t, 4 * t + 4)].reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - pc.data[3 * t + c]!) < 1e-6, `token ${t}: gates sum ${sum}, p(c) ${pc.data[3 * t + c]}`);
  }
});

/** A backend that runs the js kernels and counts the multiply-adds of every matrix product. */
function countingBackend(): { backend: Backend; macs: { n: number } } {
  const js = withBackend('js', () => getBackend());
  const macs = { n: 0 };
  const k = js.kernels as KernelImpls;
  const sizesSum = (s: Int32Array): number => s.reduce((a, b) => a + b, 0);
  const backend: Backend = {
    name: 'js-count-macs', float64: true, info: 'js kernels, counting matrix-product multiply-adds',
    kernels: {
      ...js.kernels,
      matmul: (a, b, out, batch, m, n, kk, ...rest) => { macs.n += batch * m * n * kk; k.matmul(a, b, out, batch, m, n, kk, ...rest); },
      groupedMatmul: (x, w, s, out, kk, n, t) => { macs.n += sizesSum(s) * kk * n; k.groupedMatmul(x, w, s, out, kk, n, t); },
      groupedMatmulEpilogue: (x, w, s, out, kk, n, t, ...rest) => { macs.n += sizesSum(s) * kk * n; k.groupedMatmulEpilogue(x, w, s, out, kk, n, t, ...rest); },
      groupedMatmulWeightGrad: (x, dy, s, out, kk, n) => { macs.n += sizesSum(s) * kk * n; k.groupedMatmulWeightGrad(x, dy, s, out, kk, n); },
    },
  };
  return { backend, macs };
}

test('routing cost is d*(G + E/G) multiply-adds per token, counted at the kernels (E = 64, G = 8)', () => {
  const { backend, macs } = countingBackend();
  registerBackend(backend);
  const [T, d, E, G] = [50, 16, 64, 8];
  const x = randTensor(new Rng(3), [T, d]);
  withBackend(backend.name, () => {
    const h = new moe.HierarchicalRouter(d, E, { groups: G, k: 2, seed: 1 });
    const f = new moe.TopKRouter(d, E, { k: 2, seed: 1 });
    macs.n = 0;
    noGrad(() => h.route(x));
    assert.equal(macs.n, T * d * (G + E / G), 'hierarchical forward');
    macs.n = 0;
    noGrad(() => f.route(x));
    assert.equal(macs.n, T * d * E, 'flat forward');
    // backward: input and weight gradients of both gates, again O(d (G + E/G)) per token
    const xg = x.detach().requireGrad();
    const out = h.route(xg);
    macs.n = 0;
    ops.sum(out.gates).backward();
    assert.equal(macs.n, 2 * T * d * (G + E / G), 'hierarchical backward');
    assert.equal(h.route(x).stats['routingMacsPerToken'], d * (G + E / G));
  });
});

test('balance losses: cluster level is Switch balance over clusters; expert level is per-cluster balance weighted by tokens', () => {
  withBackend('js', () => {
    const [T, d, E, G, k] = [40, 6, 12, 3, 2];
    const per = E / G;
    const r = new moe.HierarchicalRouter(d, E, { groups: G, k, seed: 5 }).to('float64');
    const x = randTensor(new Rng(8), [T, d], 'float64');
    const out = noGrad(() => r.route(x));
    const pc = noGrad(() => ops.softmax(ops.matmul(x, r.clusterWeight, { transB: true })));
    const cluster = [...Array(T).keys()].map((t) => Math.floor(out.expert[t * k]! / per));
    let cb = 0;
    for (let c = 0; c < G; c++) {
      const f = cluster.filter((v) => v === c).length / T;
      let P = 0;
      for (let t = 0; t < T; t++) P += pc.data[t * G + c]! / T;
      cb += G * f * P;
    }
    assert.ok(Math.abs(out.aux['clusterBalance']!.item() - cb) < 1e-12, `clusterBalance ${out.aux['clusterBalance']!.item()} vs ${cb}`);
    // probs holds p(e | c_t) in the token's cluster block
    let eb = 0;
    for (let c = 0; c < G; c++) {
      const mine = [...Array(T).keys()].filter((t) => cluster[t] === c);
      if (mine.length === 0) continue;
      let lc = 0;
      for (let j = 0; j < per; j++) {
        const e = c * per + j;
        const f = mine.reduce((a, t) => a + [...out.expert.subarray(t * k, t * k + k)].filter((v) => v === e).length, 0) / (mine.length * k);
        const P = mine.reduce((a, t) => a + out.probs!.data[t * E + e]!, 0) / mine.length;
        lc += per * f * P;
      }
      eb += (mine.length / T) * lc;
    }
    assert.ok(Math.abs(out.aux['expertBalance']!.item() - eb) < 1e-12, `expertBalance ${out.aux['expertBalance']!.item()} vs ${eb}`);
    assert.ok(out.aux['zLoss']!.item() > 0);
    assert.equal(out.logits, null, 'full [T, E] logits are never computed');
  });
});

test('all tokens in one cluster; T = 1; an empty batch', () => {
  const r = new moe.HierarchicalRouter(4, 8, { groups: 4, k: 2, supervised: true, seed: 1 });
  const x = randTensor(new Rng(2), [10, 4]);
  const one = noGrad(() => r.route(x, { clusterIds: new Int32Array(10).fill(3) }));
  assert.ok([...one.expert].every((e) => e === 6 || e === 7), 'every token stays in cluster 3');
  assert.deepEqual(one.stats['clusterTokens'], [0, 0, 0, 10]);
  assert.ok(Number.isFinite(one.aux['expertBalance']!.item()) && Number.isFinite(one.aux['clusterCE']!.item()));

  const learned = new moe.HierarchicalRouter(4, 8, { groups: 4, k: 2, seed: 1 });
  for (const T of [1, 0]) {
    const xt = randTensor(new Rng(3), [T, 4]).requireGrad();
    const out = learned.route(xt);
    assert.equal(out.token.length, 2 * T);
    assert.deepEqual([...out.probs!.shape], [T, 8]);
    if (T === 1) {
      ops.sum(out.gates).backward();
      assert.ok(learned.weight.grad && learned.clusterWeight.grad, 'both gates get gradients at T = 1');
      assert.ok(Number.isFinite(out.aux['clusterBalance']!.item()));
    } else {
      assert.deepEqual(Object.keys(out.aux), [], 'no losses for an empty batch');
    }
  }
  // through the layer, with labels passed on the side as a model would
  const layer = new moe.MoELayer({ dModel: 4, dFF: 8, numExperts: 8, router: { type: 'hierarchical', groups: 4, k: 2, supervised: true } });
  const hr = layer.router as moe.HierarchicalRouter;
  for (const T of [0, 1, 6]) {
    hr.setClusterLabels(Int32Array.from({ length: T }, (_, i) => i % 4));
    const y = layer.forward(randTensor(new Rng(T), [T, 4]));
    assert.deepEqual([...y.y.shape], [T, 4]);
    assert.ok(Number.isFinite(y.auxLoss.item()));
    if (T > 0) assert.deepEqual(Object.keys(y.losses).sort(), ['clusterCE', 'expertBalance', 'loadBalance', 'zLoss']);
  }
  hr.setClusterLabels(null);
});

test('supervised: the cluster gate learns the labels by cross-entropy and routes alone in eval', () => {
  withBackend('js', () => {
    const [T, d, G] = [48, 4, 3];
    const r = new moe.HierarchicalRouter(d, 6, { groups: G, k: 1, supervised: true, seed: 2 }).to('float64');
    // three well separated clusters of inputs, labelled by which one they come from
    const rng = new Rng(4);
    const x = Tensor.empty([T, d], 'float64');
    const labels = new Int32Array(T);
    for (let t = 0; t < T; t++) {
      labels[t] = t % G;
      for (let j = 0; j < d; j++) x.data[t * d + j] = (j === labels[t] ? 3 : 0) + 0.3 * (rng.next() - 0.5);
    }
    const agree = (): number => {
      const out = noGrad(() => r.eval().route(x));
      return [...Array(T).keys()].filter((t) => Math.floor(out.expert[t]! / 2) === labels[t]).length / T;
    };
    const before = agree();
    let ce0 = 0;
    for (let step = 0; step < 60; step++) {
      r.train();
      r.zeroGrad();
      const ce = r.route(x, { clusterIds: labels }).aux['clusterCE']!;
      if (step === 0) ce0 = ce.item();
      ce.backward();
      const w = r.clusterWeight;
      for (let i = 0; i < w.size; i++) w.data[i]! -= 0.5 * w.grad!.data[i]!;
    }
    const ceEnd = noGrad(() => r.route(x, { clusterIds: labels })).aux['clusterCE']!.item();
    assert.ok(ceEnd < ce0 / 4, `cross-entropy ${ce0} -> ${ceEnd}`);
    assert.equal(agree(), 1, `eval routing agrees with the labels (before training: ${before})`);
  });
});

test('hierarchical configuration errors name the key', () => {
  assert.throws(() => moe.createRouter({ type: 'hierarchical', groups: 3 }, 4, 8), /HierarchicalRouter: groups = 3 must divide numExperts = 8/);
  assert.throws(() => moe.createRouter({ type: 'hierarchical', groups: 4, k: 3 }, 4, 8), /HierarchicalRouter: k = 3 must be an integer in \[1, 2\]/);
  assert.throws(() => moe.createRouter({ type: 'hierarchical', groups: 16 }, 4, 8), /groups = 16 must be an integer in \[1, 8\]/);
  assert.throws(() => moe.createRouter({ type: 'hierarchical', group: 2 }, 4, 8), /router \(hierarchical\): unknown key 'group'/);
  assert.throws(() => moe.createRouter({ type: 'hierarchical', supervised: 'yes' }, 4, 8), /supervised = yes must be a boolean/);
  const x = randTensor(new Rng(1), [3, 4]);
  const sup = new moe.HierarchicalRouter(4, 8, { groups: 2, supervised: true });
  assert.throws(() => sup.route(x), /supervised = true needs clusterIds/);
  assert.throws(() => sup.route(x, { clusterIds: Int32Array.of(0, 1) }), /2 clusterIds for 3 tokens/);
  assert.throws(() => sup.route(x, { clusterIds: Int32Array.of(0, 2, 1) }), /clusterIds\[1\] = 2 must be in \[0, 2\)/);
  assert.doesNotThrow(() => noGrad(() => sup.eval().route(x)), 'eval without labels routes by the learned gate');
  assert.throws(() => new moe.HierarchicalRouter(4, 8, { groups: 2 }).route(x, { clusterIds: Int32Array.of(0, 1, 0) }), /clusterIds were given but supervised = false/);
  assert.throws(() => new moe.HierarchicalRouter(4, 8, { groups: 2 }).route(randTensor(new Rng(1), [3, 5])), /HierarchicalRouter: input must be \[T, 4\]/);
});

test('a byte LM trains with the hierarchical router, learned and supervised by sequence labels', () => {
  const text = Buffer.from('the cat sat on the mat. le chat est sur le tapis. ');
  const B = 2;
  const T = 16;
  const ids = Tensor.empty([B, T + 1], 'int32');
  for (let b = 0; b < B; b++) for (let t = 0; t <= T; t++) ids.data[b * (T + 1) + t] = text[(b * 25 + t) % text.length]!;
  const inputs = ops.narrow(ids, 1, 0, T);
  const targets = Int32Array.from(ops.narrow(ids, 1, 1, T).data as Int32Array);
  for (const supervised of [false, true]) {
    const lm = new models.ByteLM({
      dModel: 16, layers: 1, heads: 2, maxSeqLen: 32, numExperts: 8, k: 2, dFF: 16,
      router: { type: 'hierarchical', groups: 2, k: 2, supervised },
    }, 3);
    const routers = lm.namedModules().map(([, m]) => m).filter((m): m is moe.HierarchicalRouter => m instanceof moe.HierarchicalRouter);
    assert.equal(routers.length, 1);
    // supervised: sequence b's tokens belong to cluster b (the "language" of the sequence)
    if (supervised) for (const r of routers) r.setClusterLabels(Int32Array.from({ length: B * T }, (_, i) => Math.floor(i / T)));
    const step = (): number => {
      lm.zeroGrad();
      const out = lm.forward(inputs);
      const task = ops.crossEntropy(ops.reshape(out.logits, [B * T, 256]), targets);
      const loss = out.auxLoss ? ops.add(task, out.auxLoss) : task;
      loss.backward();
      for (const p of lm.parameters()) if (p.grad) for (let i = 0; i < p.size; i++) p.data[i]! -= 0.05 * p.grad.data[i]!;
      return task.item();
    };
    const first = step();
    let last = first;
    for (let i = 0; i < 30; i++) last = step();
    assert.ok(last < first - 0.5, `supervised=${supervised}: task loss ${first} -> ${last}`);
    assert.ok(routers[0]!.clusterWeight.grad!.data.some((v) => v !== 0), 'the cluster gate is trained');
    if (supervised) {
      const out = noGrad(() => routers[0]!.route(randTensor(new Rng(1), [B * T, 16])));
      assert.deepEqual(out.stats['clusterTokens'], [T, T], 'labels route each sequence to its cluster');
    }
  }
});
