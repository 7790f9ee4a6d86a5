// Device-limited routing and the topology loss: the conformance suite, a plain-loop reference of
// the selection rule on every backend, M = N is plain top-k bit for bit, edge cases (E = 1,
// k = E, M = 1), the loss's value and gradients, the placement against src/parallel/layout.ts,
// configuration through the layer, and errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend, moe } from '../src/index.js';
import { evenSplit, ownerOf } from '../src/parallel/layout.js';
import { runRouterSuite } from './router-suite.js';
import { assertClose, backendsUnderTest, checkAccumulatedGradients, randTensor } from './helpers.js';

const DL = moe.DeviceLimitedRouter;

runRouterSuite({
  name: 'device-limited M=1 of 2, topology loss',
  newRouter: (d, E, seed) => new DL(d, E, { k: 1, devices: Math.min(2, E), maxDevices: 1, topologyLoss: true, seed }),
  gateSum: 'le-one', fixedK: () => 1, stochasticInTraining: false,
});
runRouterSuite({
  name: 'device-limited M=2 of 4, k=2, topk-softmax, jitter',
  newRouter: (d, E, seed) => {
    const N = Math.min(4, E);
    return new DL(d, E, { k: Math.min(2, E), devices: N, maxDevices: Math.min(2, N), devicesPerNode: N % 2 === 0 ? 2 : 1, order: 'topk-softmax', jitter: 0.1, topologyLoss: true, seed });
  },
  gateSum: 'one', fixedK: (E) => Math.min(2, E), stochasticInTraining: true,
});

/** The rule in plain float64 loops: softmax, device scores, the M best devices, top-k inside them, gates. */
function naiveRoute(x: Tensor, W: Tensor, o: { k: number; N: number; M: number; topN: number; order: 'softmax-topk' | 'topk-softmax'; normalize: boolean }): { expert: number[]; gates: number[]; devices: number[][] } {
  const [T, d] = x.shape as [number, number];
  const E = W.shape[0]!;
  const first = (r: number): number => Math.floor((r * E) / o.N); // contiguous split, as layout.ts
  const expert: number[] = [];
  const gates: number[] = [];
  const devices: number[][] = [];
  for (let t = 0; t < T; t++) {
    const z = Array.from({ length: E }, (_, e) => { let s = 0; for (let j = 0; j < d; j++) s += x.data[t * d + j]! * W.data[e * d + j]!; return s; });
    const m = Math.max(...z);
    const ez = z.map((v) => Math.exp(v - m));
    const tot = ez.reduce((a, b) => a + b, 0);
    const p = ez.map((v) => v / tot);
    const score = Array.from({ length: o.N }, (_, r) => p.slice(first(r), first(r + 1)).sort((a, b) => b - a).slice(0, o.topN).reduce((a, b) => a + b, 0));
    const devs = [...Array(o.N).keys()].sort((a, b) => score[b]! - score[a]! || a - b).slice(0, o.M);
    devices.push(devs);
    const cand = [...Array(E).keys()].filter((e) => devs.some((r) => e >= first(r) && e < first(r + 1)));
    const key = o.order === 'softmax-topk' ? p : z;
    const chosen = cand.sort((a, b) => key[b]! - key[a]! || a - b).slice(0, o.k);
    expert.push(...chosen);
    if (o.order === 'softmax-topk') {
      const s = o.normalize ? chosen.reduce((a, e) => a + p[e]!, 0) : 1;
      gates.push(...chosen.map((e) => p[e]! / s));
    } else {
      const mz = Math.max(...chosen.map((e) => z[e]!));
      const s = chosen.reduce((a, e) => a + Math.exp(z[e]! - mz), 0);
      gates.push(...chosen.map((e) => Math.exp(z[e]! - mz) / s));
    }
  }
  return { expert, gates, devices };
}

test('device-limited routing matches the plain-loop rule on every backend', () => {
  const cases = [
    { E: 8, N: 4, M: 2, k: 2, order: 'softmax-topk' as const, normalize: true },
    { E: 8, N: 4, M: 1, k: 2, order: 'softmax-topk' as const, normalize: false },
    { E: 12, N: 4, M: 3, k: 4, order: 'topk-softmax' as const, normalize: true },
    { E: 7, N: 3, M: 2, k: 3, order: 'softmax-topk' as const, normalize: true }, // uneven split: 2, 2, 3 experts
    { E: 6, N: 6, M: 2, k: 2, order: 'softmax-topk' as const, normalize: true }, // one expert per device
  ];
  for (const backend of backendsUnderTest()) {
    withBackend(backend, () => {
      for (const c of cases) {
        const d = 6;
        const T = 40;
        const r = new DL(d, c.E, { k: c.k, devices: c.N, maxDevices: c.M, order: c.order, normalize: c.normalize, seed: c.E + c.M });
        const x = randTensor(new Rng(c.E * 10 + c.M), [T, d], 'float32', -2, 2);
        const out = noGrad(() => r.route(x));
        const ref = naiveRoute(x, r.weight, { k: c.k, N: c.N, M: c.M, topN: Math.ceil(c.k / c.M), order: c.order, normalize: c.normalize });
        const what = `${backend} E=${c.E} N=${c.N} M=${c.M} k=${c.k} ${c.order}`;
        assert.deepEqual([...out.expert], ref.expert, `${what}: experts`);
        assertClose(out.gates, ref.gates, 1e-5, 1e-6, `${what}: gates`);
        const chosen = r.chooseDevices(out.probs!.data, T);
        for (let t = 0; t < T; t++) {
          assert.deepEqual([...chosen.subarray(t * c.M, (t + 1) * c.M)], ref.devices[t], `${what}: devices of token ${t}`);
          const used = new Set([...out.expert.subarray(t * c.k, (t + 1) * c.k)].map((e) => r.placement.deviceOfExpert[e]!));
          assert.ok(used.size <= c.M, `${what}: token ${t} uses ${used.size} devices`);
        }
        assert.ok((out.stats['devicesPerToken'] as number) <= c.M);
      }
    });
  }
});

test('maxDevices = devices is plain top-k, bit for bit, both orders, every backend', () => {
  for (const backend of backendsUnderTest()) {
    withBackend(backend, () => {
      for (const order of ['softmax-topk', 'topk-softmax'] as const) {
        for (const [E, N, k] of [[8, 4, 2], [5, 5, 5], [1, 1, 1], [6, 3, 6]] as const) {
          const a = new moe.TopKRouter(4, E, { k, order, seed: 3 });
          const b = new DL(4, E, { k, order, devices: N, maxDevices: N, seed: 3 });
          assert.deepEqual([...a.weight.data], [...b.weight.data], 'same seed, same weights');
          const x = randTensor(new Rng(E), [17, 4]).requireGrad();
          const ra = a.route(x);
          const rb = b.route(x);
          const what = `${backend} ${order} E=${E} N=${N} k=${k}`;
          assert.deepEqual([...rb.expert], [...ra.expert], `${what}: experts`);
          assert.deepEqual([...rb.token], [...ra.token], `${what}: tokens`);
          assert.deepEqual([...rb.gates.data], [...ra.gates.data], `${what}: gates`);
          const w = randTensor(new Rng(9), [rb.gates.size]);
          ops.sum(ops.mul(ra.gates, w)).backward();
          const ga = [...a.weight.grad!.data];
          x.grad = null;
          ops.sum(ops.mul(rb.gates, w)).backward();
          assert.deepEqual([...b.weight.grad!.data], ga, `${what}: router gradient`);
        }
      }
    });
  }
});

test('edge cases: E = 1, k = E, M = 1, T = 0 and T = 1', () => {
  const x = randTensor(new Rng(1), [9, 3]);
  const one = noGrad(() => new DL(3, 1, { k: 1, devices: 1, topologyLoss: true }).route(x));
  assert.deepEqual([...one.expert], new Array(9).fill(0));
  assert.deepEqual([...one.gates.data], new Array(9).fill(1));
  assert.equal(one.aux['topology']!.item(), 0, 'one device: nothing leaves it');
  // k = E: every expert, whatever the device limit allows (only M = N can hold all of them)
  const all = noGrad(() => new DL(3, 4, { k: 4, devices: 2, maxDevices: 2 }).route(x));
  for (let t = 0; t < 9; t++) assert.deepEqual([...all.expert.subarray(t * 4, t * 4 + 4)].sort(), [0, 1, 2, 3]);
  // M = 1: a token's experts all sit on one device, and it is the device with the largest best-2 sum
  const r = new DL(3, 8, { k: 2, devices: 4, maxDevices: 1 });
  const m1 = noGrad(() => r.route(x));
  for (let t = 0; t < 9; t++) {
    const [e0, e1] = [m1.expert[2 * t]!, m1.expert[2 * t + 1]!];
    assert.equal(Math.floor(e0 / 2), Math.floor(e1 / 2), `token ${t}: experts ${e0}, ${e1} on two devices`);
    const p = m1.probs!.data.subarray(t * 8, t * 8 + 8);
    const best = [0, 1, 2, 3].map((dv) => p[2 * dv]! + p[2 * dv + 1]!);
    assert.equal(Math.floor(e0 / 2), best.indexOf(Math.max(...best)));
  }
  assert.equal(m1.stats['devicesPerToken'], 1);
  for (const T of [0, 1]) {
    const o = noGrad(() => new DL(3, 8, { k: 2, devices: 4, maxDevices: 1, topologyLoss: true }).route(randTensor(new Rng(2), [T, 3])));
    assert.equal(o.expert.length, 2 * T);
    assert.ok(Number.isFinite(o.aux['topology']!.item()), `T=${T}: topology loss ${o.aux['topology']!.item()}`);
  }
});

test('topology loss: value against a plain loop, gradients against float64 finite differences', () => {
  // 8 experts on 4 devices, 2 per node: from device 0, experts 0-1 cost 0, 2-3 intra, 4-7 inter
  const opts = { k: 2, devices: 4, devicesPerNode: 2, intraNodeCost: 0.25, interNodeCost: 1.5, topologyLoss: true };
  const T = 10;
  for (const backend of backendsUnderTest()) {
    withBackend(backend, () => {
      const r = new DL(5, 8, { ...opts, seed: 4 });
      const x = randTensor(new Rng(5), [T, 5]);
      const out = noGrad(() => r.route(x));
      let ref = 0;
      for (let t = 0; t < T; t++) {
        const src = ownerOf(evenSplit(T, 4), t);
        for (let e = 0; e < 8; e++) {
          const dev = Math.floor(e / 2);
          const c = dev === src ? 0 : Math.floor(dev / 2) === Math.floor(src / 2) ? 0.25 : 1.5;
          ref += out.probs!.data[t * 8 + e]! * c;
        }
      }
      assertClose([out.aux['topology']!.item()], [ref / T], 1e-5, 1e-7, `${backend}: topology loss`);
    });
  }
  withBackend('js', () => {
    const r = new DL(5, 8, { ...opts, maxDevices: 2, seed: 4 }).to('float64');
    const x = randTensor(new Rng(6), [T, 5], 'float64', -2, 2).requireGrad();
    const loss = (): Tensor => r.route(x).aux['topology']!;
    loss().backward();
    checkAccumulatedGradients([...r.namedParameters(), ['x', x]], loss, { samples: 16, rtol: 1e-5 });
  });
});

test('placement matches the expert-parallel layout (src/parallel/layout.ts)', () => {
  for (const [E, N, T] of [[8, 4, 10], [7, 3, 5], [16, 16, 3], [5, 1, 0]] as const) {
    const p = new moe.DevicePlacement('test', E, { devices: N });
    assert.deepEqual([...p.expertStart], [...evenSplit(E, N)]);
    assert.deepEqual([...p.sourceDevices(T)], Array.from({ length: T }, (_, t) => ownerOf(evenSplit(T, N), t)));
    for (let e = 0; e < E; e++) assert.equal(p.deviceOfExpert[e], ownerOf(evenSplit(E, N), e));
  }
});

test('through a layer config: the loss is weighted by routerLossCoefs.topology; statistics in metrics', () => {
  const base = { dModel: 6, dFF: 5, numExperts: 8, loadBalanceCoef: 0, zLossCoef: 0, seed: 2 };
  const router = { type: 'device-limited' as const, k: 2, devices: 4, maxDevices: 1, devicesPerNode: 2, topologyLoss: true };
  const x = randTensor(new Rng(3), [12, 6]);
  const a = new moe.MoELayer({ ...base, router, routerLossCoefs: { topology: 0.5 } });
  const oa = noGrad(() => a.forward(x));
  assert.ok(oa.losses['topology']!.item() > 0);
  assertClose([oa.auxLoss!.item()], [0.5 * oa.losses['topology']!.item()], 1e-6, 0, 'auxLoss');
  const b = new moe.MoELayer({ ...base, router: { ...router, topologyLoss: false } });
  const ob = noGrad(() => b.forward(x));
  assert.equal(ob.losses['topology'], undefined);
  assertClose(ob.y, oa.y, 0, 0, 'the loss does not change the forward');
});

test('bad options name the field', () => {
  assert.throws(() => new DL(4, 8, { k: 3, devices: 4, maxDevices: 1 }), /k = 3 experts cannot always fit on maxDevices = 1 of 4 devices/);
  assert.throws(() => new DL(4, 8, { devices: 9 }), /devices = 9 must be an integer in \[1, 8\]/);
  assert.throws(() => new DL(4, 8, { devices: 4, maxDevices: 5 }), /maxDevices = 5 must be an integer in \[1, 4\]/);
  assert.throws(() => new DL(4, 8, { devices: 4, devicesPerNode: 3 }), /devicesPerNode = 3 must divide devices = 4/);
  assert.throws(() => new DL(4, 8, { devices: 4, interNodeCost: -1 }), /interNodeCost = -1/);
  assert.throws(() => new DL(4, 8, { devices: 4, topologyLoss: 'yes' as unknown as boolean }), /topologyLoss must be a boolean/);
  assert.throws(() => moe.createRouter({ type: 'device-limited', maxNodes: 2 }, 4, 8), /router \(device-limited\): unknown key 'maxNodes'/);
});

test('moe experiment topology-routing runs end to end (2 steps): every setting and variant, the simulator columns, results files', async () => {
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { runTopologyRouting } = await import('../src/experiments/topology-routing.js');
  const out = mkdtempSync(join(tmpdir(), 'moe-topology-routing-test-'));
  try {
    const r = await runTopologyRouting({ steps: 2, evalWindows: 2, out, log: () => {} });
    assert.deepEqual(r.runs.map((x) => `${x.setting} ${x.variant}`), [
      'mixed top-k', 'mixed M=2', 'mixed M=1', 'mixed loss 1',
      'sharded top-k', 'sharded M=2', 'sharded M=1', 'sharded loss 0.1', 'sharded loss 1', 'sharded M=2 + loss 1',
    ]);
    for (const x of r.runs) {
      assert.ok(Number.isFinite(x.valBitsPerByte) && x.valBitsPerByte > 0, `${x.variant}: val ${x.valBitsPerByte}`);
      // sending a token once per device can only cut the rows of one per assignment
      assert.ok(x.interNodeMBDedup <= x.interNodeMB + 1e-9, `${x.setting} ${x.variant}: dedup ${x.interNodeMBDedup} > ${x.interNodeMB}`);
      assert.ok(x.offNodeShare >= 0 && x.offNodeShare <= x.offDeviceShare + 1e-12, `${x.variant}: off-node share above off-device share`);
      assert.ok(x.pairwiseMsProjected > 0 && x.hierarchicalMsProjectedDedup > 0);
    }
    // M = 1 sends each token to one device: its deduplicated inter-node rows are at most a quarter of k = 4 rows per token
    for (const x of r.runs.filter((y) => y.variant === 'M=1')) assert.ok(x.interNodeMBDedup <= x.interNodeMB / 4 + 1e-9, `${x.setting} M=1: ${x.interNodeMBDedup} vs ${x.interNodeMB}`);
    const md = readFileSync(join(out, 'results.md'), 'utf8');
    assert.match(md, /\| sharded +\| M=2 \+ loss 1 /);
    assert.equal(JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')).runs.length, 10);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
