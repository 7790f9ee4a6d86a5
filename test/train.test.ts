// Training runs: config validation, resuming equals an uninterrupted run, the CLI end to end.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { validateRun, applySets } from '../src/config/run.js';
import { runTraining } from '../src/train/run.js';

const haveFashion = existsSync('/usr/share/datasets/fashion-mnist');
const skipData = !haveFashion && 'Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)';

function tinyConfig(extra: Record<string, unknown> = {}) {
  return validateRun({
    name: 'tiny',
    model: { type: 'softmoe-classifier', numExperts: 4 },
    data: { dataset: 'fashion-mnist', limitTrain: 384, valFraction: 0.25 },
    optim: { optimizer: 'adam', lr: 0.002, schedule: 'warmup-cosine', warmupSteps: 2 },
    train: { epochs: 3, batchSize: 64, seed: 3 },
    ...extra,
  });
}

test('run config: defaults are filled; unknown keys and wrong types name the key', () => {
  const c = validateRun({ model: { type: 'softmoe-classifier' } });
  assert.equal(c.train.epochs, 15);
  assert.equal(c.optim.lr, 1e-3);
  assert.equal(c.model['numExperts'], 16);
  assert.throws(() => validateRun({ model: { type: 'softmoe-classifier' }, optim: { learningRate: 1 } }), /config.optim.learningRate: unknown key/);
  assert.throws(() => validateRun({ model: { type: 'softmoe-classifier' }, train: { epochs: 'ten' } }), /config.train.epochs: expected integer, got "ten"/);
  assert.throws(() => validateRun({ model: { type: 'softmoe-classifier', experts: 4 } }), /config.model \(softmoe-classifier\).experts: unknown key/);
  assert.throws(() => validateRun({ model: { type: 'nope' } }), /model.type = 'nope' is unknown/);
  assert.throws(() => validateRun({ model: { type: 'softmoe-classifier' }, data: { dataset: 'imagenet' } }), /config.data.dataset: 'imagenet' is not one of/);
  assert.throws(() => validateRun({ model: { type: 'softmoe-classifier' }, extra: 1 }), /config.extra: unknown key/);
  const raw: Record<string, unknown> = { model: { type: 'softmoe-classifier' } };
  applySets(raw, ['optim.lr=0.01', 'model.numExperts=8', 'optim.clipNorm=null', 'train.seed=4']);
  const s = validateRun(raw);
  assert.equal(s.optim.lr, 0.01);
  assert.equal(s.model['numExperts'], 8);
  assert.equal(s.optim.clipNorm, null);
  assert.throws(() => applySets({ model: { type: 'softmoe-classifier' } }, ['optim.lr=fast']), /--set optim.lr=fast: expected a number/);
  assert.throws(() => applySets({ model: { type: 'softmoe-classifier' } }, ['optim.rate=1']), /--set optim.rate: unknown key 'rate' in optim/);
  assert.throws(() => applySets({}, ['model.numExperts=3']), /set model.type first/);
});

test('resuming from a checkpoint gives the same losses as an uninterrupted run', { skip: skipData }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-resume-'));
  try {
    const config = tinyConfig();
    const straight: number[] = [];
    await runTraining(config, { out: join(dir, 'a'), progress: null, onStep: (v) => straight.push(v['loss']!) });
    const split: number[] = [];
    // 384 examples, 25% held out: 288 = 5 batches of 64 per epoch; stop after the first epoch, whose checkpoint is the resume point
    await runTraining(config, { out: join(dir, "b"), progress: null, maxSteps: 5, onStep: (v) => split.push(v['loss']!) });
    assert.equal(split.length, 5);
    await runTraining(config, { out: join(dir, 'b'), resume: join(dir, 'b'), progress: null, onStep: (v) => split.push(v['loss']!) });
    assert.equal(straight.length, 15);
    assert.deepEqual(split, straight);
    const lines = readFileSync(join(dir, 'a', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.filter((l) => l["type"] === "step").length, 15);
    assert.ok(lines.some((l) => l['type'] === 'eval' && l['split'] === 'val'));
    assert.ok(lines.some((l) => l['type'] === 'eval' && l['split'] === 'test'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the same config and seed give the same losses', { skip: skipData }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-repro-'));
  try {
    const config = validateRun({ ...tinyConfig(), train: { epochs: 1, batchSize: 64, seed: 5, evalEvery: 0 } });
    const a: number[] = [];
    const b: number[] = [];
    await runTraining(config, { out: join(dir, 'a'), progress: null, onStep: (v) => a.push(v['loss']!) });
    await runTraining(config, { out: join(dir, 'b'), progress: null, onStep: (v) => b.push(v['loss']!) });
    assert.deepEqual(a, b);
    assert.ok(a[a.length - 1]! < a[0]!, 'the loss goes down');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('moe train / eval / inspect from the command line', { skip: skipData }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-cli-'));
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const cfg = fileURLToPath(new URL('../../configs/fashion-mnist-softmoe.json', import.meta.url));
  try {
    const out = join(dir, 'run');
    const r = spawnSync(process.execPath, [main, 'train', '--config', cfg, '--set', 'train.epochs=1', '--set', 'data.limitTrain=512', '--set', 'optim.warmupSteps=0', '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /test loss [\d.]+, accuracy [\d.]+%/);
    assert.match(r.stderr, /train 2\/2 100\.0%/, 'plain progress lines when not a terminal');
    const e = spawnSync(process.execPath, [main, 'eval', '--checkpoint', out, '--json'], { encoding: 'utf8' });
    assert.equal(e.status, 0, e.stderr);
    assert.equal(JSON.parse(e.stdout).split, 'test');
    const i = spawnSync(process.execPath, [main, 'inspect', out], { encoding: 'utf8' });
    assert.equal(i.status, 0, i.stderr);
    assert.match(i.stdout, /total parameters: \d+/);
    const bad = spawnSync(process.execPath, [main, 'train', '--config', cfg, '--set', 'optim.lr=x'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--set optim.lr=x: expected a number/);
    const missing = spawnSync(process.execPath, [main, 'train', '--config', join(dir, 'nope.json')], { encoding: 'utf8' });
    assert.match(missing.stderr, /config .*nope.json: cannot read \(ENOENT\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a byte-level language model trains on UDHR text, samples and plots from the command line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-lm-'));
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const cfg = fileURLToPath(new URL('../../configs/udhr-lm-moe.json', import.meta.url));
  try {
    const out = join(dir, 'lm');
    const small = ['--set', 'model.dModel=16', '--set', 'model.layers=1', '--set', 'model.heads=2', '--set', 'model.dFF=16', '--set', 'data.maxLanguages=2',
      '--set', 'data.seqLen=16', '--set', 'data.stepsPerEpoch=3', '--set', 'data.evalWindows=4', '--set', 'train.epochs=2', '--set', 'optim.warmupSteps=1'];
    const r = spawnSync(process.execPath, [main, 'train', '--config', cfg, ...small, '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /test loss [\d.]+, bitsPerByte [\d.]+/);
    const g = spawnSync(process.execPath, [main, 'generate', '--checkpoint', out, '--prompt', 'All human', '--tokens', '20', '--seed', '1'], { encoding: 'utf8' });
    assert.equal(g.status, 0, g.stderr);
    assert.ok(g.stdout.startsWith('All human'));
    const g2 = spawnSync(process.execPath, [main, 'generate', '--checkpoint', out, '--prompt', 'All human', '--tokens', '20', '--seed', '1'], { encoding: 'utf8' });
    assert.equal(g2.stdout, g.stdout, 'the same seed samples the same bytes');
    const i = spawnSync(process.execPath, [main, 'inspect', out], { encoding: 'utf8' });
    assert.equal(i.status, 0, i.stderr);
    assert.match(i.stdout, /active parameters per token: \d+/);
    assert.match(i.stdout, /blocks\.0\.moe: tokens per expert [\d ]+; mean prob/);
    const p = spawnSync(process.execPath, [main, 'plot', out, '--metric', 'loss', '--split', 'val', '--out', join(dir, 'curve')], { encoding: 'utf8' });
    assert.equal(p.status, 0, p.stderr);
    assert.ok(existsSync(join(dir, 'curve.png')) && existsSync(join(dir, 'curve.svg')));
    const bad = spawnSync(process.execPath, [main, 'generate', '--checkpoint', out, '--temperature', '-1'], { encoding: 'utf8' });
    assert.match(bad.stderr, /--temperature -1: expected a number >= 0/);
    const wrong = spawnSync(process.execPath, [main, 'train', '--config', cfg, '--set', 'data.dataset=fashion-mnist'], { encoding: 'utf8' });
    assert.match(wrong.stderr, /config.data.dataset: 'fashion-mnist' does not fit model byte-lm \(language-model\); use udhr, text or jsonl/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
