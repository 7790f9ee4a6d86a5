// The cost model over batch sizes and expert budgets (bench/expert-cache-cost.ts): the fits on exact points, and `moe bench expert-cache --cost-model` end to end on the tiny preset.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM, type LoadedLM } from '../src/models/load-lm.js';
import { nnls, fitCacheCost, cacheCostInputs, formatCacheCost, type CacheCostInput } from '../bench/expert-cache-cost.js';
import { run } from '../bench/cli.js';

let root = '';
let lm: LoadedLM;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'moe-cache-cost-'));
  createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: join(root, 'tiny'), seed: 5 });
  lm = await loadLM(join(root, 'tiny'));
});
after(() => rmSync(root, { recursive: true, force: true }));

test('nnls: exact non-negative coefficients are recovered; a column that would need a negative one is dropped', () => {
  const X = [[1, 2, 0.5], [3, 1, 2], [2, 5, 1], [4, 4, 3], [0.5, 1, 4]];
  const c = [0.7, 0.2, 1.5];
  const y = X.map((r) => r.reduce((s, v, j) => s + v * c[j]!, 0));
  nnls(X, y).forEach((v, j) => assert.ok(Math.abs(v - c[j]!) < 1e-9, `c${j} = ${v}, want ${c[j]}`));
  // y = 2 x0 - 1 x1: the unconstrained fit has a negative coefficient; nnls keeps all >= 0
  const y2 = X.map((r) => 2 * r[0]! - r[1]!);
  const s = nnls(X, y2);
  assert.ok(s.every((v) => v >= 0), `${s}`);
  assert.deepEqual(nnls([[1, 0], [2, 0]], [0, 0]), [0, 0]);
});

test('fitCacheCost: points made from known bandwidths are fitted exactly with file reads apart; the one-bandwidth form shows its error', () => {
  const model = lm.model;
  const moeLayers = model.layers.filter((l) => l.moe).length;
  const k = model.config.topK;
  // two regimes: memory at 20 GB/s, file copies at 2 GB/s, arithmetic at 50 GFLOP/s; shapes from the model
  const base: CacheCostInput[] = [1, 2, 4, 8].flatMap((batch) => [0, 1e5, 4e5].map((file) => ({
    label: `b${batch} f${file}`, batch, stepMs: 0, distinctExpertsPerStep: Math.min(model.config.numExperts, k * batch) * moeLayers, meanContext: 20, fileBytesPerToken: file,
  })));
  const probe = fitCacheCost(model, base.map((p) => ({ ...p, stepMs: 1 })));
  const truth = probe.points.map((p) => p.memoryBytes / 20e6 + p.fileBytes / 2e6 + p.flops / 50e6);
  const f = fitCacheCost(model, base.map((p, i) => ({ ...p, stepMs: truth[i]! })));
  assert.ok(Math.abs(f.split.bandwidthGBs - 20) / 20 < 1e-6, `memory ${f.split.bandwidthGBs}`);
  assert.ok(Math.abs(f.split.fileBandwidthGBs - 2) / 2 < 1e-6, `file ${f.split.fileBandwidthGBs}`);
  assert.ok(Math.abs(f.split.throughputGflops - 50) / 50 < 1e-6, `flops ${f.split.throughputGflops}`);
  assert.ok(f.split.maxAbsRelError < 1e-6);
  assert.ok(f.seed.maxAbsRelError > 0.01, `one bandwidth cannot fit both kinds of bytes: ${f.seed.maxAbsRelError}`);
  // bytes grow with the batch (embedding rows, KV, experts) and FLOPs in proportion to it
  const [p1, p8] = [f.points[0]!, f.points[9]!];
  assert.equal(p8.batch, 8);
  assert.ok(p8.memoryBytes > p1.memoryBytes);
  assert.ok(Math.abs(p8.flops / p1.flops - 8) < 1e-9);
  assert.match(formatCacheCost(f), /\| b8 f400000 \| 8 \|/);
  assert.throws(() => fitCacheCost(model, base.slice(0, 2)), /2 measured point\(s\); the fits need at least 3/);
});

test('moe bench expert-cache --cost-model: a point per cache and per interleaved all-resident run, at every batch; bytes from the routing and the cache', async () => {
  const lines: string[] = [];
  const log = console.log;
  const w = process.stderr.write.bind(process.stderr);
  console.log = (l: string) => { lines.push(l); };
  process.stderr.write = (() => true) as typeof process.stderr.write;
  let code: number;
  try {
    code = await run(['bench', 'expert-cache', '--model', join(root, 'tiny'), '--steps', '3', '--budgets', '1,0.5', '--policies', 'lru', '--loads', 'sync', '--batch', '1,2', '--cost-model', '--json']);
  } finally {
    console.log = log;
    process.stderr.write = w;
  }
  assert.equal(code, 0);
  const out = JSON.parse(lines.at(-1)!) as { rows: Array<Record<string, unknown>>; cost: ReturnType<typeof fitCacheCost> };
  const c = lm.model.config;
  const moeLayers = lm.model.layers.filter((l) => l.moe).length;
  // per batch: 2 budgets x (the interleaved all-resident run + the cache)
  assert.equal(out.cost.points.length, 2 * 2 * 2);
  assert.deepEqual(cacheCostInputs(out.rows).map((p) => p.label), out.cost.points.map((p) => p.label));
  for (const p of out.cost.points) {
    assert.ok(p.stepMs > 0 && Number.isFinite(p.predictedMs) && Number.isFinite(p.splitPredictedMs));
    // batch 1: exactly k distinct experts per layer; batch 2: between k and min(E, 2k)
    if (p.batch === 1) assert.equal(p.distinctExpertsPerStep, c.topK * moeLayers);
    else assert.ok(p.distinctExpertsPerStep >= c.topK * moeLayers && p.distinctExpertsPerStep <= Math.min(c.numExperts, 2 * c.topK) * moeLayers, `${p.distinctExpertsPerStep}`);
    if (p.label.startsWith('all resident')) assert.equal(p.fileBytes, 0);
  }
  // the cache at half the experts reads from the file; its points carry those bytes
  const row = out.rows.find((r) => r['budget'] === 0.5 && r['batch'] === 2)!;
  const pt = out.cost.points.find((p) => p.label === '50.0% lru' && p.batch === 2)!;
  assert.equal(pt.fileBytes, (row['bytesLoadedPerToken'] as number) * 2);
});
