// Parts 2 and 3 of the multilingual study: the analytic FLOP count against a hand count and against
// the multiply-adds the kernels do, the power-law fits on synthetic data, and the --quick runs
// writing results with the expected fields (and resuming).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, Tensor, withBackend, getBackend, registerBackend, noGrad, type Backend, type KernelImpls } from '../src/index.js';
import { ByteLM } from '../src/models/lm.js';
import { lmLoss } from '../src/train/lm-task.js';
import { inferenceFlopsPerToken, lmCompute, routerShareOfMoELayer, trainingFlops, activeNonEmbeddingParameters } from '../src/experiments/multilingual/flops.js';
import { bootstrapAlphaOverLanguages, fitPowerLaw, fitPowerLawWithFloor } from '../src/experiments/multilingual/power-law.js';
import { runPareto } from '../src/experiments/multilingual/pareto.js';
import { bestGroups, runHierarchical } from '../src/experiments/multilingual/hierarchical.js';

test('FLOP count of a small MoE byte LM equals a hand count', () => {
  // d = 16, 2 blocks, E = 4, k = 2, expert width 8, gelu (2 matrices), context T = 10, per token:
  //   attention projections 4 d^2 = 1024 per block          -> 2048
  //   attention products    2 T d = 2 * 10 * 16 = 320        ->  640
  //   experts  k * 2 * d * dFF = 2 * 2 * 16 * 8 = 512          -> 1024
  //   router   d E = 64                                       ->  128
  //   head     256 d = 4096                                   -> 4096
  //   total                                                      7936 multiply-adds = 15872 FLOPs
  const cfg = { dModel: 16, layers: 2, heads: 2, numExperts: 4, k: 2, dFF: 8, maxSeqLen: 10 };
  const c = lmCompute(cfg, 10);
  assert.deepEqual(c.macs, { attentionProj: 2048, attentionMix: 640, ffn: 1024, router: 128, head: 4096, total: 7936 });
  assert.equal(c.forwardFlopsPerToken, 15872);
  assert.equal(trainingFlops(cfg, 10, 100), 3 * 15872 * 100);
  // dense counterpart: one MLP of k * dFF = 16, 2 * 16 * 16 = 512 per block, no router
  assert.equal(lmCompute({ ...cfg, ffn: 'dense' }, 10).macs.total, 7936 - 128);
  // hierarchical, E = 64, G = 8: router d (G + E/G) = 16 * 16 = 256 per block instead of d E = 1024
  assert.equal(lmCompute({ ...cfg, numExperts: 64, router: { type: 'hierarchical', groups: 8 } }, 10).macs.router, 2 * 256);
  assert.equal(lmCompute({ ...cfg, numExperts: 64 }, 10).macs.router, 2 * 1024);
  // swiglu: 3 matrices per expert
  assert.equal(lmCompute({ ...cfg, activation: 'swiglu' }, 10).macs.ffn, 2 * 2 * 3 * 16 * 8);
  // inference: mean cached context (10 + 1) / 2 = 5.5 -> attention products 2 * 5.5 * 16 * 2 blocks = 352
  assert.equal(inferenceFlopsPerToken(cfg, 10), 2 * (7936 - 640 + 352));
  // the router's share of an MoE layer: E / (E + k m dFF), independent of d
  assert.equal(routerShareOfMoELayer({ E: 64, d: 16, dFF: 16, k: 2 }), 64 / (64 + 64));
  assert.equal(routerShareOfMoELayer({ E: 64, d: 16, dFF: 16, k: 2, groups: 8 }), 16 / (16 + 64));
  assert.throws(() => lmCompute({ ...cfg, router: { type: 'hierarchical', groups: 3 } }, 10), /groups = 3 must be a positive integer dividing E = 4/);
  assert.throws(() => lmCompute(cfg, 0), /context must be a positive number/);
});

/** js kernels that count the multiply-adds of every matrix product (as test/hierarchical-router.test.ts). */
function countingBackend(): { backend: Backend; macs: { n: number } } {
  const js = withBackend('js', () => getBackend());
  const macs = { n: 0 };
  const k = js.kernels as KernelImpls;
  const sum = (s: Int32Array): number => s.reduce((a, b) => a + b, 0);
  const backend: Backend = {
    name: 'js-count-macs-pareto', float64: true, info: 'js kernels, counting matrix-product multiply-adds',
    kernels: {
      ...js.kernels,
      matmul: (a, b, out, batch, m, n, kk, ...rest) => { macs.n += batch * m * n * kk; k.matmul(a, b, out, batch, m, n, kk, ...rest); },
      groupedMatmul: (x, w, s, out, kk, n, t) => { macs.n += sum(s) * kk * n; k.groupedMatmul(x, w, s, out, kk, n, t); },
      groupedMatmulEpilogue: (x, w, s, out, kk, n, t, ...rest) => { macs.n += sum(s) * kk * n; k.groupedMatmulEpilogue(x, w, s, out, kk, n, t, ...rest); },
      groupedMatmulWeightGrad: (x, dy, s, out, kk, n) => { macs.n += sum(s) * kk * n; k.groupedMatmulWeightGrad(x, dy, s, out, kk, n); },
    },
  };
  return { backend, macs };
}

test('the FLOP count equals the multiply-adds the kernels do: forward, and 3x forward for a training step', () => {
  const { backend, macs } = countingBackend();
  registerBackend(backend);
  const [B, T] = [3, 12];
  const ids = new Int32Array(B * T);
  const rng = new Rng(2);
  for (let i = 0; i < ids.length; i++) ids[i] = rng.int(256);
  const x = new Tensor(ids, [B, T]);
  const y = new Tensor(ids.map((v) => (v + 1) % 256), [B, T]);
  withBackend(backend.name, () => {
    for (const cfg of [
      { dModel: 16, layers: 2, heads: 2, numExperts: 4, k: 2, dFF: 8, maxSeqLen: T },
      { dModel: 16, layers: 2, heads: 2, numExperts: 4, k: 2, dFF: 8, maxSeqLen: T, ffn: 'dense' as const },
      { dModel: 16, layers: 1, heads: 2, numExperts: 16, k: 2, dFF: 8, maxSeqLen: T, router: { type: 'hierarchical', groups: 4 } as const },
    ]) {
      const model = new ByteLM(cfg, 1);
      const perToken = lmCompute(cfg, T).macs.total;
      macs.n = 0;
      noGrad(() => model.forward(x));
      assert.equal(macs.n, B * T * perToken, `forward ${JSON.stringify(cfg)}`);
      macs.n = 0;
      lmLoss(model.forward(x).logits, y).backward();
      assert.equal(macs.n, 3 * B * T * perToken, `training step ${JSON.stringify(cfg)}`);
    }
  });
});

test('activeNonEmbeddingParameters leaves out the byte embedding and the head', () => {
  const m = new ByteLM({ dModel: 16, layers: 1, heads: 2, numExperts: 4, k: 2, dFF: 8, maxSeqLen: 8 }, 0);
  assert.equal(activeNonEmbeddingParameters(m), m.activeParameters() - 2 * 256 * 16);
  const tied = new ByteLM({ dModel: 16, layers: 1, heads: 2, numExperts: 4, k: 2, dFF: 8, maxSeqLen: 8, tieEmbeddings: true, positions: 'learned' }, 0);
  assert.equal(activeNonEmbeddingParameters(tied), tied.activeParameters() - 256 * 16 - 8 * 16);
});

test('power-law fit recovers alpha from synthetic data, with a standard error that covers it', () => {
  const rng = new Rng(5);
  const ns: number[] = [];
  const ls: number[] = [];
  for (const n of [1e4, 3e4, 1e5, 3e5]) {
    for (let s = 0; s < 2; s++) {
      ns.push(n);
      ls.push(4 * n ** -0.3 * Math.exp(0.01 * (2 * rng.next() - 1)));
    }
  }
  const f = fitPowerLaw(ns, ls);
  assert.ok(Math.abs(f.alpha - 0.3) < 0.01, `alpha ${f.alpha}`);
  assert.ok(f.alphaSE > 0 && f.alphaSE < 0.01, `SE ${f.alphaSE}`);
  assert.ok(Math.abs(f.alpha - 0.3) < 4 * f.alphaSE, `alpha ${f.alpha} +- ${f.alphaSE}`);
  assert.ok(Math.abs(Math.log(f.a / 4)) < 0.1, `a ${f.a}`);
  // exact data: zero error
  const exact = fitPowerLaw([10, 100, 1000], [2 * 10 ** -0.5, 2 * 100 ** -0.5, 2 * 1000 ** -0.5]);
  assert.ok(Math.abs(exact.alpha - 0.5) < 1e-12 && Math.abs(exact.a - 2) < 1e-9 && exact.alphaSE < 1e-9);
  // with an irreducible term: a pure power law misreads it, the floor fit finds it
  const nf = [1e3, 1e4, 1e5, 1e6];
  const lf = nf.map((n) => 1.5 + 6 * n ** -0.5);
  const floor = fitPowerLawWithFloor(nf, lf, 3000);
  assert.ok(Math.abs(floor.c - 1.5) < 0.01, `c ${floor.c}`);
  assert.ok(Math.abs(floor.alpha - 0.5) < 0.02, `alpha ${floor.alpha}`);
  assert.ok(fitPowerLaw(nf, lf).alpha < 0.2, 'ignoring the floor flattens the slope');
  assert.throws(() => fitPowerLaw([1, 2], [1]), /2 sizes for 1 losses/);
  assert.throws(() => fitPowerLaw([5, 5], [1, 2]), /2 distinct sizes/);
  assert.throws(() => fitPowerLaw([1, 2], [1, -1]), /loss 1 = -1 must be a positive number/);
  assert.throws(() => fitPowerLawWithFloor([1, 2, 2], [3, 2, 2]), /at least 3 distinct sizes/);
});

test('bootstrap over languages: no spread when every language follows one law, a spread that covers the mean slope otherwise', () => {
  const ns = [1e3, 1e4, 1e5];
  const same = ns.map((n) => [0, 1, 2, 3].map(() => 3 * n ** -0.2));
  const b0 = bootstrapAlphaOverLanguages(ns, same, { resamples: 200 });
  assert.ok(Math.abs(b0.alpha - 0.2) < 1e-12 && b0.std < 1e-12);
  const slopes = [0.1, 0.2, 0.3, 0.4, 0.15, 0.35];
  const mixed = ns.map((n) => slopes.map((a) => 3 * n ** -a));
  const b = bootstrapAlphaOverLanguages(ns, mixed, { resamples: 500, seed: 3 });
  assert.ok(b.std > 0.01, `std ${b.std}`);
  assert.ok(b.ci95[0] < b.alpha && b.alpha < b.ci95[1], `${b.ci95} around ${b.alpha}`);
  assert.ok(b.ci95[0] > 0.1 && b.ci95[1] < 0.4);
  assert.throws(() => bootstrapAlphaOverLanguages(ns, mixed.slice(1)), /3 sizes for 2 rows/);
});

test('pareto --quick writes results.json with seeds, per-language losses, fits and plots, and resumes', async () => {
  const out = mkdtempSync(join(tmpdir(), 'moe-pareto-'));
  try {
    const r = await runPareto({ quick: true, out, command: 'moe experiment multilingual pareto --quick' });
    const saved = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as typeof r;
    assert.equal(saved.cells.length, saved.config.sizes.length * saved.config.seeds.length * 2);
    for (const c of saved.cells) {
      assert.ok(typeof c.seed === 'number' && /^(moe|dense)-d\d+$/.test(c.name));
      assert.deepEqual(Object.keys(c.val).sort(), [...saved.config.languages].sort());
      for (const v of Object.values(c.val)) assert.ok(v > 0 && v < 10, `loss ${v}`);
      assert.ok(c.trainFlops > 0 && c.inferenceFlopsPerToken > 0 && c.activeNonEmbedding > 0 && c.trainSeconds >= 0);
      assert.equal(c.routerMacsPerToken, c.name.startsWith('moe') ? c.model.dModel! * 8 * 2 : 0);
    }
    // matched active parameters: MoE = dense + the routers' d E per block
    for (const d of saved.config.sizes) {
      const m = saved.cells.find((c) => c.name === `moe-d${d}`)!;
      const de = saved.cells.find((c) => c.name === `dense-d${d}`)!;
      assert.equal(m.activeParams - de.activeParams, 2 * d * 8);
      assert.ok(m.totalParams > de.totalParams);
    }
    assert.equal(saved.fits.length, 4);
    for (const f of saved.fits) assert.ok(Number.isFinite(f.fit.alpha) && Number.isFinite(f.bootstrap.ci95[0]) && f.bootstrap.resamples === 1000);
    assert.equal(saved.gaps.length, saved.config.sizes.length * saved.config.languages.length);
    assert.ok(saved.gaps.every((g) => ['moe', 'dense', 'overlap'].includes(g.verdict) && g.moe.length === saved.config.seeds.length));
    const md = readFileSync(join(out, 'results.md'), 'utf8');
    assert.match(md, /Command: `moe experiment multilingual pareto --quick`/);
    assert.match(md, /## Scaling law/);
    for (const p of ['frontier-train-flops', 'frontier-inference-flops', 'gap-by-resource']) {
      const png = readFileSync(join(out, `${p}.png`));
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], p);
    }
    // a rerun trains nothing and gives the same records
    const again = await runPareto({ quick: true, out, command: 'x' });
    assert.deepEqual(again.cells, r.cells);
    // a different configuration in the same directory is an error naming the key
    await assert.rejects(runPareto({ quick: true, out, steps: 7 }), /different configuration \(train:/);
    assert.ok(existsSync(join(out, 'results.partial.json')));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('hierarchical --quick trains flat, hierarchical and family-supervised cells, times them under flock, and writes results', async () => {
  const out = mkdtempSync(join(tmpdir(), 'moe-hier-'));
  try {
    const r = await runHierarchical({ quick: true, out, command: 'moe experiment multilingual hierarchical --quick', benchLock: join(out, 'bench.lock') });
    const saved = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as typeof r;
    assert.deepEqual(saved.cells.map((c) => c.name).sort(), ['flat', 'hierarchical', 'hierarchical-family']);
    for (const c of saved.cells) {
      assert.equal(c.seed, 0);
      assert.deepEqual(Object.keys(c.val).sort(), [...saved.config.languages].sort());
    }
    // equal experts; the hierarchical router adds only its cluster gate, G x d per block
    const flat = saved.cells.find((c) => c.name === 'flat')!;
    const hier = saved.cells.find((c) => c.name === 'hierarchical')!;
    const { dModel: d, numExperts: E, groups: G, layers } = saved.config;
    assert.equal(hier.totalParams - flat.totalParams, layers * G * d);
    assert.equal(flat.routerMacsPerToken, layers * d * E);
    assert.equal(hier.routerMacsPerToken, layers * d * (G + E / G));
    assert.equal(saved.macs['flat']!.total - saved.macs['hierarchical']!.total, layers * d * (E - G - E / G));
    assert.equal(saved.gaps.length, 2 * saved.config.languages.length);
    // timing: every case for both variants, positive medians, the load average recorded
    for (const v of ['flat', 'hierarchical']) {
      for (const c of ['routerBatch', 'routerDecode', 'modelBatch', 'modelDecode']) {
        const t = saved.timing!.timings[v]![c]!;
        assert.ok(t.median > 0 && t.min <= t.median && t.samples.length === saved.config.timing.rounds, `${v} ${c}`);
      }
    }
    assert.equal(saved.timing!.loadavgBefore.length, 3);
    assert.equal(saved.timingLocked, join(out, 'bench.lock'));
    // the FLOP bound grows with E and falls with the expert width
    const g = (E: number, dFF: number) => saved.shareGrid.find((x) => x.E === E && x.dFF === dFF)!.maxLayerSpeedup;
    assert.ok(g(4096, 16) > g(64, 16) && g(64, 16) > g(64, 4096) && g(8, 4096) < 1.001);
    const md = readFileSync(join(out, 'results.md'), 'utf8');
    assert.match(md, /## Measured inference time/);
    assert.match(md, /40% faster/);
    for (const p of ['speedup-bound', 'gap-by-family']) assert.deepEqual([...readFileSync(join(out, `${p}.png`)).subarray(1, 4)], [0x50, 0x4e, 0x47], p);
    // a rerun reuses the cells and the saved timing
    const again = await runHierarchical({ quick: true, out, command: 'x', benchLock: null });
    assert.deepEqual(again.cells, r.cells);
    assert.deepEqual(again.timing, saved.timing);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('bestGroups: the divisor of E nearest sqrt(E) from below', () => {
  assert.deepEqual([1, 8, 12, 64, 256, 96].map(bestGroups), [1, 2, 3, 8, 16, 8]);
});
