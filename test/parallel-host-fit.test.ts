// The simulator against this host, on synthetic data (no timing): the host fit recovers a known
// topology from exchange times the simulator itself produced, keeps coefficients non-negative,
// the comparison reports the errors it should; the scaling table has the shapes of the closed
// forms; overlap chunks cover every expert once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/index.js';
import { checkHost, exchangeFeatures, fitHost, hostTopology, EXCHANGES_PER_STEP, type HostPoint } from '../src/parallel/host-fit.js';
import { parseShapes } from '../src/parallel/host-check.js';
import { exchangeCost, validateTopology, type Topology } from '../src/parallel/simulator.js';
import { scalingTable } from '../src/parallel/scaling.js';
import { chunkExperts, evenSplit, type ExchangeLayout } from '../src/parallel/layout.js';

const KNOWN: Topology = {
  name: 'known', source: 'test', devices: 4, devicesPerNode: 4,
  intra: { bandwidthGBs: 3, latencyUs: 40 }, inter: { bandwidthGBs: 3, latencyUs: 40 }, localCopyGBs: 7, overheadUs: 250,
};

/** Random non-uniform row matrices at N = 1, 2, 4 for a few (T, d), timed by `topo` exactly (plus a one-process step). */
function synthetic(topo: Topology, noise = 0): HostPoint[] {
  const rng = new Rng(5);
  const points: HostPoint[] = [];
  for (const [T, d] of [[512, 64], [2048, 128], [1024, 256], [4096, 32]] as const) {
    for (const N of [1, 2, 4]) {
      const rows = Array.from({ length: N }, () => Array.from({ length: N }, () => Math.round((2 * T / (N * N)) * (0.5 + rng.next()))));
      const bytes = rows.map((r) => r.map((n) => n * d * 4));
      const per = exchangeCost(bytes, { ...topo, devices: N, devicesPerNode: N }, 'pairwise').seconds * 1e3;
      const exchangeMs = EXCHANGES_PER_STEP * per * (1 + noise * (rng.next() - 0.5));
      points.push({ tokens: T, dModel: d, workers: N, rows, exchangeMs, stepMs: 100 + exchangeMs, oneProcessMs: 100 });
    }
  }
  return points;
}

test('fitHost recovers latency, link and local-copy bandwidth and overhead from the simulator\'s own times', () => {
  const points = synthetic(KNOWN);
  const fit = fitHost(points);
  const rel = (a: number, b: number): number => Math.abs(a / b - 1);
  assert.ok(rel(fit.latencyS, 40e-6) < 1e-6, `latency ${fit.latencyS}`);
  assert.ok(rel(fit.sPerLinkByte, 1 / 3e9) < 1e-6, `link ${fit.sPerLinkByte}`);
  assert.ok(rel(fit.sPerLocalByte, 1 / 7e9) < 1e-6, `local ${fit.sPerLocalByte}`);
  assert.ok(rel(fit.overheadS, 250e-6) < 1e-6, `overhead ${fit.overheadS}`);
  assert.ok(fit.rmsRelError < 1e-9);
  const topo = hostTopology(fit, 4, 'test');
  assert.ok(rel(topo.intra.bandwidthGBs, 3) < 1e-6 && rel(topo.localCopyGBs!, 7) < 1e-6 && rel(topo.overheadUs!, 250) < 1e-6);
  // the fitted topology predicts every point (its own and new ones) exactly
  const rows = checkHost(points, topo, 'pairwise', (p) => p.tokens !== 4096);
  for (const r of rows) {
    assert.ok(Math.abs(r.exchangeError) < 1e-6, `T=${r.tokens} N=${r.workers}: ${r.exchangeError}`);
    assert.ok(Math.abs(r.stepError) < 1e-6);
    assert.equal(r.fitted, r.tokens !== 4096);
  }
});

test('fitHost keeps every coefficient non-negative and tolerates noise', () => {
  // only local copies cost anything: the unconstrained fit could go negative on the other terms
  const localOnly: Topology = { ...KNOWN, intra: { bandwidthGBs: 1e12, latencyUs: 0 }, inter: { bandwidthGBs: 1e12, latencyUs: 0 }, overheadUs: 0 };
  const f = fitHost(synthetic(localOnly, 0.2));
  for (const v of [f.latencyS, f.sPerLinkByte, f.sPerLocalByte, f.overheadS]) assert.ok(v >= 0);
  assert.ok(Math.abs(f.sPerLocalByte * 7e9 - 1) < 0.15, `local ${1 / f.sPerLocalByte / 1e9} GB/s`);
  // 20% uniform noise: the fit's error is of that order, not zero and not wild
  assert.ok(f.rmsRelError > 0.005 && f.rmsRelError < 0.2, `rms ${f.rmsRelError}`);
  assert.throws(() => fitHost([]), /no measured points/);
  assert.throws(() => fitHost([{ ...synthetic(KNOWN)[0]!, exchangeMs: 0 }]), /exchangeMs 0; a fit needs positive times/);
});

test('checkHost reports (predicted - measured) / measured for exchange and step', () => {
  const points = synthetic(KNOWN);
  const slow = { ...KNOWN, intra: { bandwidthGBs: 1.5, latencyUs: 80 }, inter: { bandwidthGBs: 1.5, latencyUs: 80 }, localCopyGBs: 3.5, overheadUs: 500 };
  for (const r of checkHost(points, slow, 'pairwise', () => false)) {
    // every term doubled: the prediction is twice the measurement
    assert.ok(Math.abs(r.exchangeError - 1) < 1e-9, `${r.exchangeError}`);
    assert.ok(Math.abs(r.predictedStepMs - (100 + 2 * r.measuredExchangeMs)) < 1e-9);
    assert.ok(Math.abs(r.stepError - r.measuredExchangeMs / r.measuredStepMs) < 1e-9);
  }
});

test('exchangeFeatures: pairwise has N - 1 rounds and sums each round\'s largest message', () => {
  const f = exchangeFeatures({ rows: [[5, 1, 2], [3, 6, 4], [7, 8, 9]], dModel: 1 }, 'pairwise');
  assert.equal(f.rounds, 2);
  // round 1: 0->1 1, 1->2 4, 2->0 7 -> 7; round 2: 0->2 2, 1->0 3, 2->1 8 -> 8 (4 bytes per value)
  assert.equal(f.linkBytes, 4 * (7 + 8));
  assert.equal(f.localBytes, 4 * 9);
  assert.deepEqual(exchangeFeatures({ rows: [[10]], dModel: 2 }, 'pairwise'), { rounds: 0, linkBytes: 0, localBytes: 80 });
});

test('a topology file may give localCopyGBs and overheadUs, validated', () => {
  const t = validateTopology({ devices: 2, devicesPerNode: 2, intra: { bandwidthGBs: 1, latencyUs: 1 }, inter: { bandwidthGBs: 1, latencyUs: 1 }, localCopyGBs: 2, overheadUs: 0 }, 'h.json');
  assert.equal(t.localCopyGBs, 2);
  assert.equal(t.overheadUs, 0);
  // 1000 bytes kept on device 1: 500 ns of copying on top of the link time
  const bytes = [[0, 0], [0, 1000]];
  assert.ok(Math.abs(exchangeCost(bytes, t, 'pairwise').seconds - (1e-6 + 1000 / 2e9)) < 1e-15);
  assert.throws(() => validateTopology({ ...t, overheadUs: -1 }, 'h.json'), /h.json: overheadUs must be a number >= 0, got -1/);
  assert.throws(() => validateTopology({ ...t, localCopyGBs: 0 }, 'h.json'), /h.json: localCopyGBs must be a positive number, got 0/);
  assert.deepEqual(parseShapes('2048x256, 1x1', '--fit'), [{ tokens: 2048, dModel: 256 }, { tokens: 1, dModel: 1 }]);
  assert.throws(() => parseShapes('2048*256', '--fit'), /--fit 2048\*256: '2048\*256' is not TOKENSxD/);
});

test('scaling table: linear in T; Bruck flat in time / (T/N_d log2 N_d), pairwise in time / (T/N_d (N_d-1)/N_d)', () => {
  const flat = validateTopology({ devices: 64, devicesPerNode: 64, intra: { bandwidthGBs: 1, latencyUs: 1e-9 }, inter: { bandwidthGBs: 1, latencyUs: 1e-9 } }, 'flat');
  const rows = scalingTable(flat, { tokens: [4096, 8192], devices: [4, 16, 64], k: 2, rowBytes: 1024 });
  assert.equal(rows.length, 4 * 3 * 2);
  const get = (a: string, T: number, D: number) => rows.find((r) => r.algorithm === a && r.tokens === T && r.devices === D)!;
  for (const a of ['pairwise', 'ring', 'bruck', 'hierarchical']) {
    for (const D of [4, 16, 64]) assert.ok(Math.abs(get(a, 8192, D).seconds / get(a, 4096, D).seconds - 2) < 1e-6, `${a} D=${D} linear in T`);
  }
  const bruck = [4, 16, 64].map((D) => get('bruck', 4096, D).seconds / ((4096 / D) * Math.log2(D)));
  for (const v of bruck) assert.ok(Math.abs(v / bruck[0]! - 1) < 1e-6, 'bruck ~ T/N_d log N_d');
  const pw = [4, 16, 64].map((D) => get('pairwise', 4096, D).seconds / ((4096 / D) * ((D - 1) / D)));
  for (const v of pw) assert.ok(Math.abs(v / pw[0]! - 1) < 1e-6, 'pairwise ~ T/N_d');
  // a device puts log2 N_d / 2 of its rows on the wire in Bruck, (N_d - 1)/N_d of them in pairwise
  assert.ok(get('bruck', 4096, 64).bytesPerDevice > get('pairwise', 4096, 64).bytesPerDevice * 2.9);
  assert.throws(() => scalingTable(flat, { tokens: [1], devices: [1], k: 1, rowBytes: 1 }), /devices 1 must be an integer >= 2/);
});

test('overlap chunks: every expert of every rank in exactly one chunk, in order; chunks beyond a rank\'s experts are empty', () => {
  for (const [E, N, degree] of [[8, 2, 2], [8, 4, 3], [4, 4, 3], [16, 3, 5], [5, 2, 1]] as const) {
    const l = { ranks: N, experts: E, expertStart: evenSplit(E, N) } as ExchangeLayout;
    for (let j = 0; j < N; j++) {
      let next = l.expertStart[j]!;
      for (let c = 0; c < degree; c++) {
        const [a, b] = chunkExperts(l, j, c, degree);
        assert.equal(a, next, `E=${E} N=${N} D=${degree} rank ${j} chunk ${c} starts where the last ended`);
        assert.ok(b >= a);
        next = b;
      }
      assert.equal(next, l.expertStart[j + 1], 'the chunks end at the rank\'s last expert');
    }
  }
});

test('moe simulate ep scaling prints every algorithm at every (T, N_d); bad modes and options are named', async () => {
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const run = (...a: string[]) => spawnSync(process.execPath, [main, 'simulate', 'ep', ...a], { encoding: 'utf8', timeout: 60_000 });
  const r = run('scaling', '--topology', 'dgx-h100', '--tokens', '1024,2048', '--ranks', '2,8', '--json');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { rows: Array<{ algorithm: string; tokens: number; devices: number; seconds: number }> };
  assert.equal(out.rows.length, 4 * 2 * 2);
  assert.deepEqual([...new Set(out.rows.map((x) => x.algorithm))], ['pairwise', 'ring', 'bruck', 'hierarchical']);
  assert.match(run('nope').stderr, /simulate ep: unknown mode 'nope' \(available: scaling, check-host/);
  assert.match(run('scaling', '--ranks', '1').stderr, /simulate ep: --ranks 1: '1' is not an integer >= 2/);
  assert.match(run('check-host', '--fit', '12').stderr, /--fit 12: '12' is not TOKENSxD/);
  assert.match(run('check-host', '--trace', 'x').stderr, /simulate ep check-host: unknown option --trace/);
  const b = spawnSync(process.execPath, [main, 'bench', 'all-to-all', '--overlap', '0'], { encoding: 'utf8', timeout: 60_000 });
  assert.match(b.stderr, /bench all-to-all: --overlap 0: '0' is not an integer in \[1, 64\]/);
});
