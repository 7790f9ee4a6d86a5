// loadModel and `moe predict` on a tiny Fashion-MNIST run trained here: the training preprocessing
// is reapplied bit for bit, IDX / PNG / JSON inputs agree, and bad input is refused by name.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PNG } from 'pngjs';
import { loadModel, ops } from '../src/index.js';
import { validateRun } from '../src/config/run.js';
import { loadImageData, runTraining } from '../src/train/run.js';
import { saveCheckpoint } from '../src/models/checkpoint.js';
import { buildModel } from '../src/models/registry.js';
import { readImageFile } from '../src/data/image-files.js';
import { bytesToImages } from '../src/data/batches.js';
import { CIFAR10_CLASSES, CIFAR10_STATS } from '../src/data/cifar.js';
import { readIdx, encodeIdx } from '../src/data/idx.js';
import { FASHION_MNIST_CLASSES, FASHION_MNIST_STATS } from '../src/data/mnist.js';
import { run as cli } from '../src/cli/cli.js';

const FASHION = '/usr/share/datasets/fashion-mnist';
const skip = !existsSync(FASHION) && 'Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)';
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

let dir = '';
let runDir = '';
/** The first 8 test images as bytes [8, 28, 28] and their labels. */
let images: Uint8Array;

function config(normalize: boolean) {
  return validateRun({
    name: 'predict-tiny',
    model: { type: 'softmoe-classifier', numExperts: 4 },
    data: { dataset: 'fashion-mnist', limitTrain: 256, valFraction: 0, normalize },
    optim: { optimizer: 'adam', lr: 0.003 },
    train: { epochs: 1, batchSize: 64, seed: 11, evalEvery: 0 },
  });
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'moe-predict-'));
  runDir = join(dir, 'run');
  await runTraining(config(true), { out: runDir, progress: null });
  images = readIdx(join(FASHION, 't10k-images-idx3-ubyte.gz')).data.slice(0, 8 * 784);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs the CLI in this process, capturing what it prints. */
async function moe(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const write = process.stderr.write.bind(process.stderr);
  console.log = (...a: unknown[]) => { out.push(a.join(' ')); };
  process.stderr.write = ((s: string) => { err.push(String(s)); return true; }) as typeof process.stderr.write;
  try {
    const code = await cli(args);
    return { code, out: out.join('\n'), err: err.join('') };
  } finally {
    console.log = log;
    process.stderr.write = write;
  }
}

interface Prediction { image: number; heads: Array<{ head: string; top: Array<{ class: number; label: string | null; probability: number }> }> }

async function predictJson(input: string, ...extra: string[]): Promise<Prediction[]> {
  const r = await moe('predict', '--checkpoint', runDir, '--input', input, '--json', ...extra);
  assert.equal(r.code, 0, r.err);
  return (JSON.parse(r.out) as { predictions: Prediction[] }).predictions;
}

test('loadModel: run or checkpoint directory, eval mode, the dataset statistics and class names', { skip }, () => {
  for (const d of [runDir, join(runDir, 'checkpoint')]) {
    const m = loadModel(d);
    assert.equal(m.model.training, false, 'eval mode');
    assert.deepEqual(m.input, { channels: 1, height: 28, width: 28 });
    assert.deepEqual(m.normalize, FASHION_MNIST_STATS);
    assert.deepEqual(m.classes, FASHION_MNIST_CLASSES);
    assert.equal(m.dir, join(runDir, 'checkpoint'));
    assert.equal(m.step, 4);
  }
});

test('preprocess reapplies the training preprocessing bit for bit (normalised and plain runs)', { skip }, () => {
  for (const normalize of [true, false]) {
    const data = loadImageData(config(normalize).data, 0);
    const m = loadModel(runDir);
    // a checkpoint whose config differs only in data.normalize
    const other = join(dir, `norm-${normalize}`);
    saveCheckpoint(other, { model: m.model, config: config(normalize) });
    const x = loadModel(other).preprocess(images);
    assert.deepEqual([...x.shape], [8, 784]);
    assert.deepEqual(Array.from(x.data), Array.from(data.test.images.subarray(0, 8 * 784)), `normalize ${normalize}`);
    // the same values given as numbers in [0, 1] agree to float rounding
    const unit = loadModel(other).preprocess(Array.from(images, (v) => v / 255), { scale: 1 });
    for (let i = 0; i < unit.size; i++) assert.ok(Math.abs(unit.data[i]! - x.data[i]!) < 1e-5);
  }
});

test('loadModel works without optimizer.safetensors; a missing or empty directory is named', { skip }, () => {
  const shared = join(dir, 'shared');
  cpSync(runDir, shared, { recursive: true });
  unlinkSync(join(shared, 'checkpoint', 'optimizer.safetensors'));
  const m = loadModel(shared);
  const ref = loadModel(runDir);
  assert.deepEqual(m.logits(m.preprocess(images))[0]!.toFlatList(), ref.logits(ref.preprocess(images))[0]!.toFlatList());

  assert.throws(() => loadModel(join(dir, 'missing')), /loadModel: .*missing does not exist/);
  assert.throws(() => loadModel(dir), /holds no checkpoint/);
});

test('moe predict on IDX: top classes by name with probabilities, top-1 = argmax of the loaded model', { skip }, async () => {
  const idx = join(dir, 'eight.idx');
  writeFileSync(idx, encodeIdx({ shape: [8, 28, 28], data: images }));
  const preds = await predictJson(idx);
  assert.equal(preds.length, 8);
  const m = loadModel(runDir);
  const expected = ops.argmax(m.logits(m.preprocess(images))[0]!, 1).toList() as number[];
  preds.forEach((p, i) => {
    const top = p.heads[0]!.top;
    assert.equal(top.length, 5);
    assert.equal(top[0]!.class, expected[i]);
    for (const t of top) assert.equal(t.label, FASHION_MNIST_CLASSES[t.class]);
    for (let j = 1; j < top.length; j++) assert.ok(top[j - 1]!.probability >= top[j]!.probability);
    const sum = top.reduce((s, t) => s + t.probability, 0);
    assert.ok(sum > 0 && sum <= 1 + 1e-5);
  });
  const text = await moe('predict', '--checkpoint', runDir, '--input', idx, '--top', '2');
  assert.equal(text.code, 0, text.err);
  const lines = text.out.split('\n');
  assert.equal(lines.length, 8);
  assert.match(lines[0]!, new RegExp(`^image 0: ${FASHION_MNIST_CLASSES[expected[0]!]!.replace('/', '\\/')} \\d+\\.\\d\\d%, [^,]+ \\d+\\.\\d\\d%$`));
});

test('moe predict on the whole Fashion-MNIST test file reaches exactly the accuracy moe eval reports', { skip }, async () => {
  const preds = await predictJson(join(FASHION, 't10k-images-idx3-ubyte.gz'), '--top', '1');
  const labels = readIdx(join(FASHION, 't10k-labels-idx1-ubyte.gz')).data;
  assert.equal(preds.length, labels.length);
  const correct = preds.filter((p, i) => p.heads[0]!.top[0]!.class === labels[i]).length;
  const ev = await moe('eval', '--checkpoint', runDir, '--json');
  assert.equal(ev.code, 0, ev.err);
  const { accuracy } = JSON.parse(ev.out) as { accuracy: number };
  assert.ok(Math.abs(correct / labels.length - accuracy) < 1e-9, `predict ${correct / labels.length} vs eval ${accuracy}`);
  assert.ok(accuracy > 0.2, `the tiny run learned something (${accuracy})`);
});

test('moe predict: PNG (gray, RGB, RGBA) and JSON (flat, nested, lists, --scale 1) agree with IDX', { skip }, async () => {
  const one = images.subarray(0, 784);
  const idx = join(dir, 'one.idx');
  writeFileSync(idx, encodeIdx({ shape: [28, 28], data: new Uint8Array(one) }));
  const ref = (await predictJson(idx))[0]!.heads[0]!.top;
  const same = (p: Prediction[], what: string, exact = true): void => {
    assert.equal(p.length, 1, what);
    const top = p[0]!.heads[0]!.top;
    assert.deepEqual(top.map((t) => t.class), ref.map((t) => t.class), what);
    for (let j = 0; j < top.length; j++) {
      if (exact) assert.equal(top[j]!.probability, ref[j]!.probability, what);
      else assert.ok(Math.abs(top[j]!.probability - ref[j]!.probability) < 1e-4, what);
    }
  };
  for (const colorType of [0, 2, 6] as const) {
    const png = new PNG({ width: 28, height: 28 });
    for (let i = 0; i < 784; i++) png.data.set([one[i]!, one[i]!, one[i]!, 255], 4 * i);
    const file = join(dir, `one-${colorType}.png`);
    writeFileSync(file, PNG.sync.write(png, { colorType, inputColorType: 6, inputHasAlpha: true }));
    assert.equal(PNG.sync.read(readFileSync(file)).colorType, colorType, 'the PNG was written in the color type under test');
    same(await predictJson(file), `PNG color type ${colorType}`);
  }
  const nested = Array.from({ length: 28 }, (_, r) => Array.from(one.subarray(r * 28, (r + 1) * 28)));
  const cases: Array<[string, unknown]> = [['flat', Array.from(one)], ['[28][28]', nested], ['[1][28][28]', [nested]], ['[1][784]', [Array.from(one)]]];
  for (const [name, value] of cases) {
    const file = join(dir, `one-${name}.json`);
    writeFileSync(file, JSON.stringify(value));
    same(await predictJson(file), `JSON ${name}`);
  }
  const two = join(dir, 'two.json');
  writeFileSync(two, JSON.stringify([nested, nested]));
  assert.equal((await predictJson(two)).length, 2);
  const unit = join(dir, 'unit.json');
  writeFileSync(unit, JSON.stringify(Array.from(one, (v) => v / 255)));
  same(await predictJson(unit, '--scale', '1'), 'JSON in [0, 1]', false);
});

test('moe predict refuses wrong sizes, shapes, values and files, naming what is wrong', { skip }, async () => {
  const big = new PNG({ width: 32, height: 30 });
  big.data.fill(255);
  const bigFile = join(dir, 'big.png');
  writeFileSync(bigFile, PNG.sync.write(big));
  const bigIdx = join(dir, 'big.idx');
  writeFileSync(bigIdx, encodeIdx({ shape: [2, 32, 32], data: new Uint8Array(2 * 1024) }));
  const write = (name: string, text: string): string => { const p = join(dir, name); writeFileSync(p, text); return p; };
  const cases: Array<[string[], RegExp]> = [
    [['--input', bigFile], /big\.png: holds 30x32 \(1 channel\) images but the model takes 28x28 \(1 channel\); resize/],
    [['--input', bigIdx], /big\.idx: holds 32x32 \(1 channel\) images but the model takes 28x28/],
    [['--input', write('shape.json', JSON.stringify([[1, 2, 3]]))], /shape\.json: holds an array of shape \[1, 3\], but the model takes 28x28 \(1 channel\) images/],
    [['--input', write('ragged.json', JSON.stringify([[1, 2], [3]]))], /ragged\.json: expected a rectangular array \(shape \[2, 2\]\), found a ragged one at \[1\]\[0\]/],
    [['--input', write('text.json', JSON.stringify([1, 'a']))], /text\.json: expected a finite number at \[1\], found "a"/],
    [['--input', write('range.json', JSON.stringify(Array(784).fill(300)))], /pixel 0 \(image 0\) is 300, outside \[0, 255\]/],
    [['--input', write('unit.json', JSON.stringify(Array(784).fill(0.5))), '--scale', '1'], /^$/],
    [['--input', write('notes.txt', 'hello')], /notes\.txt: expected a PNG image, an IDX file \(MNIST format\) or a JSON array of pixel values, found none/],
    [['--input', join(dir, 'absent.png')], /absent\.png: expected an image file .*, found no such file/],
    [['--input', bigFile, '--top', '0'], /--top must be a positive integer, got '0'/],
    [['--input', bigFile, '--scale', '10'], /--scale must be 255 .* or 1 .*, got '10'/],
    [[], /predict: --input FILE is required/],
    [['--input', bigFile, '--frob', '1'], /predict: unknown option --frob/],
  ];
  for (const [args, re] of cases) {
    const r = await moe('predict', '--checkpoint', runDir, ...args);
    if (re.source === '^$') { assert.equal(r.code, 0, r.err); continue; }
    assert.notEqual(r.code, 0, `${args.join(' ')} was accepted`);
    assert.match(r.err, re, args.join(' '));
  }
  const noCkpt = await moe('predict', '--input', bigFile);
  assert.match(noCkpt.err, /predict: --checkpoint DIR is required/);
});

test('moe predict end to end in a child process (the launcher, pngjs at run time)', { skip }, () => {
  const png = new PNG({ width: 28, height: 28 });
  const one = images.subarray(784, 2 * 784);
  for (let i = 0; i < 784; i++) png.data.set([one[i]!, one[i]!, one[i]!, 255], 4 * i);
  const file = join(dir, 'child.png');
  writeFileSync(file, PNG.sync.write(png));
  const r = spawnSync(process.execPath, [MAIN, 'predict', '--checkpoint', runDir, '--input', file, '--top', '3'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const m = loadModel(runDir);
  const best = ops.argmax(m.logits(m.preprocess(one))[0]!, 1).toList() as number[];
  assert.match(r.stdout, new RegExp(`^image 0: ${FASHION_MNIST_CLASSES[best[0]!]!.replace('/', '\\/')} \\d+\\.\\d\\d%, .+, .+\\n$`));
});

test('readImageFile: RGB PNG planes and luma for 1 channel; CHW JSON and IDX for 3 channels', () => {
  const d = mkdtempSync(join(tmpdir(), 'moe-imgfile-'));
  try {
    const png = new PNG({ width: 2, height: 1 });
    png.data.set([10, 20, 30, 255, 200, 100, 0, 128]);
    const file = join(d, 'rgb.png');
    writeFileSync(file, PNG.sync.write(png));
    const rgb = readImageFile(file, { channels: 3, height: 1, width: 2 });
    assert.deepEqual(Array.from(rgb.pixels), [10, 200, 20, 100, 30, 0], 'CHW planes: R R G G B B; alpha ignored');
    const gray = readImageFile(file, { channels: 1, height: 1, width: 2 });
    assert.deepEqual(Array.from(gray.pixels), [0.299 * 10 + 0.587 * 20 + 0.114 * 30, 0.299 * 200 + 0.587 * 100]);
    const chw = Array.from({ length: 3 }, (_, c) => [[c, c + 10]]);
    writeFileSync(join(d, 'c.json'), JSON.stringify([chw, chw]));
    const j = readImageFile(join(d, 'c.json'), { channels: 3, height: 1, width: 2 });
    assert.equal(j.n, 2);
    assert.deepEqual(Array.from(j.pixels).slice(0, 6), [0, 10, 1, 11, 2, 12]);
    writeFileSync(join(d, 'c.idx'), encodeIdx({ shape: [1, 3, 1, 2], data: Uint8Array.from([0, 10, 1, 11, 2, 12]) }));
    assert.deepEqual(Array.from(readImageFile(join(d, 'c.idx'), { channels: 3, height: 1, width: 2 }).pixels), [0, 10, 1, 11, 2, 12]);
    assert.throws(() => readImageFile(join(d, 'c.idx'), { channels: 1, height: 1, width: 2 }), /holds 1x2 \(3 channels\) images but the model takes 1x2 \(1 channel\)/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('loadModel of a 3-channel CIFAR-10 model: per-channel statistics, exactly as bytesToImages applies them', () => {
  const d = mkdtempSync(join(tmpdir(), 'moe-cifar-'));
  try {
    const cfg = validateRun({
      name: 'cifar-tiny',
      model: { type: 'vit-moe', imageSize: 32, channels: 3, patch: 8, dModel: 16, layers: 1, heads: 2, numExperts: 2, dFF: 8, classes: 10 },
      data: { dataset: 'cifar10', path: '/nonexistent', normalize: true },
    });
    saveCheckpoint(d, { model: buildModel(cfg.model, 0).model, config: cfg });
    const m = loadModel(d);
    assert.deepEqual(m.input, { channels: 3, height: 32, width: 32 });
    assert.deepEqual(m.normalize, CIFAR10_STATS);
    assert.deepEqual(m.classes, CIFAR10_CLASSES);
    const px = Uint8Array.from({ length: 2 * 3 * 1024 }, (_, i) => (i * 37) % 256);
    assert.deepEqual(Array.from(m.preprocess(px).data), Array.from(bytesToImages(px, 3, 1024, CIFAR10_STATS)));
    assert.equal(m.logits(m.preprocess(px))[0]!.shape.join('x'), '2x10');
    assert.throws(() => m.preprocess(new Uint8Array(100)), /100 values are not a whole number of 3x32x32 images \(3072 values each\)/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
