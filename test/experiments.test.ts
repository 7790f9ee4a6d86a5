// The seed paper's experiments at tiny sizes: well-formed results, resuming, Algorithm 1 at k = n, option errors.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runImplicitBias, kGrid, type ImplicitBiasOptions, type ImplicitBiasResult } from '../src/experiments/implicit-bias.js';
import { runL2Norm } from '../src/experiments/l2-norm.js';
import { expertLogitTerms, loadSavedClassifier, runContributions } from '../src/experiments/contributions.js';
import { runInferenceCost } from '../src/experiments/inference-cost.js';
import { experimentCommand } from '../src/cli/experiment-commands.js';
import { getBackend } from '../src/kernels/registry.js';
import { parseArgs } from '../src/cli/args.js';
import { SoftMoEClassifier } from '../src/models/softmoe-classifier.js';
import { Rng, Tensor, noGrad } from '../src/index.js';
import { assertClose } from './helpers.js';
import { readSafetensorsFile } from '../src/io/safetensors.js';
import { loadModelWeights } from '../src/models/checkpoint.js';
import { loadMnistDigits } from '../src/data/mnist.js';
import { accuracyOf } from '../src/train/tasks.js';

let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'moe-experiments-')); });
after(() => { rmSync(dir, { recursive: true, force: true }); });

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47];
function assertPng(path: string): void {
  assert.ok(existsSync(path), `${path} exists`);
  assert.deepEqual([...readFileSync(path).subarray(0, 4)], PNG_MAGIC, `${path} is a PNG`);
}

const tiny = (out: string, extra: Partial<ImplicitBiasOptions> = {}): ImplicitBiasOptions => ({
  dataset: 'mnist', ns: [2, 4], epochs: 1, limitTrain: 512, limitTest: 200, randomSeeds: 2, out, progress: false, log: () => {}, command: 'moe experiment implicit-bias --dataset mnist (test)', ...extra,
});

test('kGrid: every k below n for n <= 16; n/2, n/4, n/8, n/16 and 1..4 above', () => {
  assert.deepEqual(kGrid(2), [1]);
  assert.deepEqual(kGrid(4), [1, 2, 3]);
  assert.deepEqual(kGrid(16), Array.from({ length: 15 }, (_, i) => i + 1));
  assert.deepEqual(kGrid(32), [1, 2, 3, 4, 8, 16]);
  assert.deepEqual(kGrid(512), [1, 2, 3, 4, 32, 64, 128, 256]);
});

let first: ImplicitBiasResult;

test('implicit-bias: results.json has the issue records, results.md the table and command, and the plot exists', async () => {
  const out = join(dir, 'ib');
  first = await runImplicitBias(tiny(out));
  const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as ImplicitBiasResult;
  assert.equal(json.dataset, 'mnist');
  assert.deepEqual(json.config.ns, [2, 4]);
  assert.equal(json.models.length, 2);
  for (const m of json.models) assert.ok(m.trainSeconds > 0 && m.steps === 2, `model n=${m.n} has its training time and steps`);
  // what besides the seeds decides the bits: backend, threads, GEMM library, formulation
  for (const m of json.models) {
    const b = m.build!;
    assert.equal(b.backend, getBackend().name);
    assert.ok(b.formulation === 'slots' || b.formulation === 'tokens');
    if (b.backend === 'native') assert.ok(b.poolThreads! >= 1 && b.blasThreads! >= 1 && typeof b.gemm === 'string', JSON.stringify(b));
    else assert.deepEqual([b.poolThreads, b.blasThreads, b.gemm], [null, null, null]);
  }
  for (const r of json.records) {
    assert.deepEqual(Object.keys(r).sort(), ['accuracy', 'accuracyStd', 'k', 'method', 'n', 'recipe', 'runs', 'seeds', 'trainingSeeds', 'trainingStd', ...(r.method === 'all' ? [] : ['keptShare'])].sort());
    assert.equal(r.recipe, 'moe-ts');
    assert.equal(r.trainingSeeds, 1);
    assert.ok(['algorithm1', 'algorithm1-renormalized', 'random', 'all'].includes(r.method));
    if (r.keptShare !== undefined) assert.ok(r.keptShare > 0 && r.keptShare <= 1 + 1e-9, `keptShare ${r.keptShare}`);
    assert.ok(r.accuracy >= 0 && r.accuracy <= 1 && r.accuracyStd >= 0);
    assert.equal(r.seeds, r.method === 'random' ? 2 : 1);
  }
  for (const n of [2, 4]) {
    const ks = (method: string) => json.records.filter((r) => r.n === n && r.method === method).map((r) => r.k);
    assert.deepEqual(ks('algorithm1'), [...kGrid(n), n]);
    assert.deepEqual(ks('random'), kGrid(n));
    assert.deepEqual(ks('algorithm1-renormalized'), kGrid(n));
    assert.deepEqual(ks('all'), [n]);
    // the top-k by Csum hold at least k/n of C, more than a random subset can on average
    for (const k of kGrid(n)) {
      const share = (method: string) => json.records.find((r) => r.n === n && r.k === k && r.method === method)!.keptShare!;
      assert.ok(share('algorithm1') >= k / n - 1e-9, `n=${n} k=${k}: Algorithm 1 keeps ${share('algorithm1')} of C`);
      assert.ok(share('algorithm1') >= share('random') - 1e-9);
    }
    // Algorithm 1 keeping every expert is the full layer
    const all = json.records.find((r) => r.n === n && r.method === 'all')!;
    const alg = json.records.find((r) => r.n === n && r.k === n && r.method === 'algorithm1')!;
    assert.equal(alg.accuracy, all.accuracy);
    assert.ok(Math.abs(alg.keptShare! - 1) < 1e-6);
    // the trained weights are saved, and loading them reproduces the full model's accuracy inputs
    const file = readSafetensorsFile(join(out, 'models', `n${n}.safetensors`));
    const cfg = JSON.parse(file.metadata['config']!) as { numExperts: number };
    assert.equal(cfg.numExperts, n);
    const fresh = new SoftMoEClassifier(cfg as ConstructorParameters<typeof SoftMoEClassifier>[0], 123);
    loadModelWeights(fresh, file.tensors);
    // the saved weights are the evaluated ones: they reproduce the all-experts accuracy on the same 200 test digits
    const test200 = loadMnistDigits().test;
    const x = new Tensor(test200.images.slice(0, 200 * 784), [200, 784]);
    const y = new Tensor(Float32Array.from(test200.labels.subarray(0, 200)), [200]);
    fresh.eval();
    assert.equal(accuracyOf(noGrad(() => fresh.forward(x).logits), y), all.accuracy);
  }
  const md = readFileSync(join(out, 'results.md'), 'utf8');
  assert.match(md, /moe experiment implicit-bias --dataset mnist \(test\)/);
  assert.match(md, /\| +n \| +k \| +k\/n \| Algorithm 1 \|/);
  assert.match(md, /8000 train \/ 2000 test/);
  assertPng(join(out, 'accuracy-vs-k.png'));
  assert.ok(existsSync(join(out, 'accuracy-vs-k.svg')));
});

test('implicit-bias: a rerun skips every finished n and refuses a different configuration', async () => {
  const out = join(dir, 'ib');
  const lines: string[] = [];
  const again = await runImplicitBias(tiny(out, { ns: [2, 4], log: (l) => lines.push(l) }));
  assert.ok(lines.some((l) => /n=2: already in/.test(l)) && lines.some((l) => /n=4: already in/.test(l)), lines.join('\n'));
  assert.deepEqual(again.models.map((m) => m.trainSeconds), first.models.map((m) => m.trainSeconds));
  assert.deepEqual(again.records, first.records);
  await assert.rejects(runImplicitBias(tiny(out, { epochs: 2 })), /different configuration.*epochs: 1 there, 2 now/);
});

test('contributions: per-expert logit terms sum to the logits, and the statistics of every saved model', () => {
  const out = join(dir, 'ib');
  const model = loadSavedClassifier(join(out, 'models', 'n4.safetensors'));
  const x = Tensor.empty([3, 784]);
  new Rng(7).fillUniform(x.data as Float32Array);
  const { terms, classes } = expertLogitTerms(model, x);
  const logits = noGrad(() => model.forward(x).logits);
  const summed = new Float32Array(3 * classes);
  for (let b = 0; b < 3; b++) {
    for (let q = 0; q < classes; q++) {
      let s = model.decoder.bias!.data[q]!;
      for (let j = 0; j < 4; j++) s += terms[(b * 4 + j) * classes + q]!;
      summed[b * classes + q] = s;
    }
  }
  assertClose(new Tensor(summed, [3, classes]), logits, 1e-4, 1e-5, 'b + sum_j L_j vs logits');
  const r = runContributions({ run: out, log: () => {} });
  assert.deepEqual(r.models.map((m) => m.n), [2, 4]);
  for (const m of r.models) {
    assert.equal(m.inputs, 200);
    assert.ok(m.cancellation >= 1 - 1e-9 && m.cancellationMedian >= 1 - 1e-9, 'the sum of norms is at least the norm of the sum');
    assert.ok(m.termShareTopTerm >= m.termShareTopCsum - 1e-9, 'no n/4 experts hold more than the n/4 largest terms');
    assert.ok(m.allAccuracy !== null);
  }
  assert.match(readFileSync(join(out, 'contributions.md'), 'utf8'), /\| +n \| all experts \| cancel \(mean\)/);
  assert.throws(() => runContributions({ run: join(dir, 'nothing-here'), log: () => {} }), /has neither results.json nor results.partial.json/);
});

test('Algorithm 1 with k = n gives the full model\'s logits', () => {
  const m = new SoftMoEClassifier({ numExperts: 8, hidden: null, patch: 14, slotsPerExpert: 1, normalize: true, imageSize: 28, classes: 10 }, 3);
  const x = Tensor.empty([5, 784]);
  new Rng(1).fillUniform(x.data as Float32Array);
  const full = noGrad(() => m.forward(x).logits);
  const sel = noGrad(() => m.forwardSelected(x, 8));
  assertClose(sel, full, 1e-5, 1e-5, 'forwardSelected(k = n) vs forward');
});

test('l2-norm: one record per (n, step) with train and test error, table and plot', async () => {
  const out = join(dir, 'l2');
  const r = await runL2Norm({ ns: [1, 2], steps: 20, evalEvery: 10, trainSize: 256, testSize: 128, totalHidden: 16, denseReference: false, out, progress: false, log: () => {} });
  const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as typeof r;
  // the paper's models (one slot per expert), then the one-expert control with as many slots as the largest n
  assert.deepEqual(json.records.map((x) => [x.n, x.slots, x.step]),
    [[1, 1, 0], [1, 1, 10], [1, 1, 20], [2, 1, 0], [2, 1, 10], [2, 1, 20], [1, 2, 0], [1, 2, 10], [1, 2, 20]]);
  // the control has the single expert's parameters plus one more slot embedding
  const [one, , control] = json.models;
  assert.equal(control!.hidden, one!.hidden);
  assert.equal(control!.parameters - one!.parameters, 8);
  for (const x of json.records) {
    assert.ok(Number.isFinite(x.trainError) && x.trainError >= 0 && Number.isFinite(x.testError) && x.testError >= 0);
    assert.ok(Math.abs(x.testRelative - x.testError / json.target.variance) < 1e-9);
  }
  // same expert parameters for every n
  assert.equal(new Set(json.models.map((m) => m.expertParameters)).size, 1);
  assert.match(readFileSync(join(out, 'results.md'), 'utf8'), /Soft MoE n=1 p=2 /);
  assertPng(join(out, 'error-vs-steps.png'));
});

test('inference-cost: records per (n, k) with speedups against all experts', async () => {
  const out = join(dir, 'cost');
  const r = await runInferenceCost({ ns: [8, 16], batchSize: 8, rounds: 1, settings: ['classifier'], out, progress: false, log: () => {} });
  assert.deepEqual(r.records.map((x) => [x.n, x.k, x.method]), [[8, 8, 'all'], [8, 4, 'algorithm1'], [8, 2, 'algorithm1'], [8, 1, 'algorithm1'],
    [16, 16, 'all'], [16, 8, 'algorithm1'], [16, 4, 'algorithm1'], [16, 2, 'algorithm1']]);
  for (const x of r.records) {
    assert.ok(x.layerMs > 0 && x.classifierMs > 0 && x.expertsMs > 0);
    if (x.method === 'all') assert.equal(x.layerSpeedup, 1);
  }
  assert.ok(existsSync(join(out, 'results.json')) && existsSync(join(out, 'results.md')));
  assertPng(join(out, 'layer-time-vs-k.png'));
});

test('bad options are errors that name the option', async () => {
  await assert.rejects(runImplicitBias({ dataset: 'cifar10' as 'mnist', out: join(dir, 'x') }), /option dataset: must be mnist or fashion-mnist/);
  await assert.rejects(runImplicitBias({ bogus: 1 } as ImplicitBiasOptions), /option bogus: unknown/);
  await assert.rejects(runImplicitBias({ ns: [1024], out: join(dir, 'x') }), /option ns: n = 1024/);
  await assert.rejects(runImplicitBias({ epochs: 0, out: join(dir, 'x') }), /option epochs: must be an integer >= 1/);
  await assert.rejects(runL2Norm({ ns: [3], out: join(dir, 'x') }), /option ns: n = 3 does not divide/);
  await assert.rejects(runL2Norm({ oneExpertSlots: [1], out: join(dir, 'x') }), /option oneExpertSlots: must be an integer >= 2/);
  const cli = (argv: string[]) => experimentCommand(parseArgs(['experiment', ...argv], new Set(['help', 'quick', 'json', 'normalize-pixels'])));
  await assert.rejects(cli(['implicit-bias', '--dataset', 'mnist', '--bogus', '3']), /experiment implicit-bias: unknown option --bogus/);
  await assert.rejects(cli(['implicit-bias']), /--dataset mnist\|fashion-mnist is required/);
  await assert.rejects(cli(['implicit-bias', '--dataset', 'svhn']), /--dataset must be mnist or fashion-mnist, got 'svhn'/);
  await assert.rejects(cli(['implicit-bias', '--dataset', 'mnist', '--epochs', 'x']), /option --epochs: 'x' is not an integer/);
  await assert.rejects(cli(['l2-norm', '--dataset', 'mnist']), /experiment l2-norm: unknown option --dataset/);
  await assert.rejects(cli(['inference-cost', '--ns', '64,abc']), /option --ns: 'abc'/);
  await assert.rejects(cli(['nonesuch']), /unknown experiment 'nonesuch'/);
});
