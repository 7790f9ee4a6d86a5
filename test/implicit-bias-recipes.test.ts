// The implicit-bias experiment's recipes and training seeds at tiny sizes: the authors' loop (no step
// in the first epoch), per-seed records merged with their spread, resuming with more seeds, the verdict rule.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runImplicitBias, type AccuracyRecord, type ImplicitBiasOptions } from '../src/experiments/implicit-bias.js';
import { compareSelections, implicitBiasMarkdown } from '../src/experiments/implicit-bias-report.js';
import { experimentCommand } from '../src/cli/experiment-commands.js';
import { parseArgs } from '../src/cli/args.js';

let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'moe-ib-recipes-')); });
after(() => { rmSync(dir, { recursive: true, force: true }); });

const tiny = (out: string, extra: Partial<ImplicitBiasOptions> = {}): ImplicitBiasOptions => ({
  dataset: 'mnist', ns: [2], epochs: 2, limitTrain: 512, limitTest: 100, randomSeeds: 2, out, progress: false, log: () => {}, ...extra,
});

test('authors recipe: no step in the first epoch, records carry the recipe; more training seeds extend a finished run', async () => {
  const out = join(dir, 'authors');
  const one = await runImplicitBias(tiny(out, { recipe: 'authors' }));
  assert.equal(one.models[0]!.steps, 2, 'two batches of 256, one stepping epoch of two');
  assert.equal(one.config.model.slotInputs, 'normalized');
  assert.equal(one.config.model.decoderBias, false);
  for (const r of one.records) assert.ok(r.recipe === 'authors' && r.trainingSeeds === 1 && r.trainingStd === 0 && r.runs!.length === 1);
  const lines: string[] = [];
  const two = await runImplicitBias(tiny(out, { recipe: 'authors', trainingSeeds: 2, log: (l) => lines.push(l) }));
  assert.ok(lines.some((l) => /n=2 \(training seed 0\): already in/.test(l)), lines.join('\n'));
  assert.deepEqual(two.models.map((m) => m.seed), [0, 1]);
  assert.ok(existsSync(join(out, 'models', 'n2-seed1.safetensors')));
  const all = two.records.find((r) => r.method === 'all')!;
  assert.equal(all.trainingSeeds, 2);
  assert.equal(all.runs![0], one.records.find((r) => r.method === 'all')!.accuracy);
  assert.ok(Math.abs(all.accuracy - (all.runs![0]! + all.runs![1]!) / 2) < 1e-12);
  await assert.rejects(runImplicitBias(tiny(out, { recipe: 'moe-ts' })), /different configuration.*recipe/);
  await assert.rejects(runImplicitBias(tiny(join(dir, 'x'), { recipe: 'authors', epochs: 1 })), /option epochs: .*at least 2/);
  await assert.rejects(runImplicitBias(tiny(join(dir, 'x'), { recipe: 'authors', normalizePixels: false })), /option normalizePixels/);
  await assert.rejects(runImplicitBias(tiny(join(dir, 'x'), { recipe: 'paper' as 'authors' })), /option recipe: must be moe-ts or authors/);
});

test('training seeds per n: a list gives each n its own count, and extends a run made with one count', async () => {
  const out = join(dir, 'per-n');
  await runImplicitBias(tiny(out, { ns: [2, 4] }));
  const lines: string[] = [];
  const r = await runImplicitBias(tiny(out, { ns: [2, 4], trainingSeeds: [2, 1], log: (l) => lines.push(l) }));
  assert.ok(lines.some((l) => /n=2 \(training seed 0\): already in/.test(l)) && lines.some((l) => /n=4: already in/.test(l)), lines.join('\n'));
  assert.deepEqual(r.models.map((m) => [m.n, m.seed]), [[2, 0], [2, 1], [4, 0]]);
  assert.deepEqual(r.config.trainingSeeds, [2, 1]);
  for (const rec of r.records) assert.equal(rec.trainingSeeds, rec.n === 2 ? 2 : 1, `n=${rec.n} k=${rec.k} ${rec.method}`);
  assert.equal(compareSelections(r.records).find((c) => c.n === 4)!.trainingStd, null, 'one run: no training spread');
  assert.notEqual(compareSelections(r.records).find((c) => c.n === 2)!.trainingStd, null);
  const md = implicitBiasMarkdown(r);
  assert.match(md, /training seeds 0, 1 for n = 2; 0 for n = 4/);
  assert.match(md, /n = 4 is one training run: its verdict checks the difference only against twice the random spread, so it says nothing/);
  assert.match(md, /\| +2 \| +2 \| +[\d.]+% ± [\d.]+ \|/, 'per-n table: n = 2 has two runs and a training spread');
  assert.match(md, /\| +4 \| +1 \| +[\d.]+% \|/, 'per-n table: n = 4 has one run and no spread');
  await assert.rejects(runImplicitBias(tiny(out, { ns: [2, 4], trainingSeeds: [2] })), /option trainingSeeds: gives 1 counts for the 2 expert counts ns = 2, 4/);
  await assert.rejects(runImplicitBias(tiny(out, { ns: [2, 4], trainingSeeds: [2, 0] })), /option trainingSeeds/);
});

test('moe experiment implicit-bias --training-seeds takes a list, one count per --ns entry', async () => {
  const cli = (...argv: string[]) => experimentCommand(parseArgs(['experiment', 'implicit-bias', '--dataset', 'mnist', '--out', join(dir, 'cli'), ...argv], new Set(['help', 'quick', 'normalize-pixels'])));
  await assert.rejects(cli('--ns', '2,4', '--training-seeds', '3,1,1'), /option trainingSeeds: gives 3 counts for the 2 expert counts ns = 2, 4/);
  await assert.rejects(cli('--ns', '2,4', '--training-seeds', '3,x'), /option --training-seeds: 'x' in '3,x' is not a positive integer/);
});

test('verdict: better or worse only beyond twice both the random and the training-seed spread', () => {
  const rec = (method: AccuracyRecord['method'], runs: number[], accuracyStd = 0): AccuracyRecord => ({
    n: 4, k: 1, method, accuracy: runs.reduce((a, b) => a + b) / runs.length, accuracyStd, seeds: 1, runs, trainingSeeds: runs.length,
  });
  const v = (a: number[], r: number[], rsd: number) => compareSelections([rec('algorithm1', a), rec('random', r, rsd)])[0]!;
  assert.equal(v([0.8, 0.81, 0.79], [0.5, 0.5, 0.5], 0.01).verdict, 'better');
  assert.equal(v([0.5, 0.5, 0.5], [0.8, 0.81, 0.79], 0.01).verdict, 'worse');
  assert.equal(v([0.9, 0.5, 0.7], [0.6, 0.6, 0.6], 0.01).verdict, 'within noise', 'a large mean gap with a larger seed spread');
  assert.equal(v([0.62, 0.62, 0.62], [0.6, 0.6, 0.6], 0.02).verdict, 'within noise', 'within the random spread');
  assert.equal(v([0.62], [0.6], 0.001).trainingStd, null);
});
