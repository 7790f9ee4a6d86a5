// In-memory datasets (ImageSet), seeded train/val/test splits, epoch batching and language-model windows.

import { Tensor } from '../tensor/tensor.js';
import { Rng, deriveSeed } from '../tensor/rng.js';

/** Images of one split, every example `channels * rows * cols` floats (CHW), labels in [0, classes). */
export interface ImageSet {
  /** n * channels * rows * cols values, scaled to [0, 1] (then normalised, if asked). */
  images: Float32Array;
  labels: Int32Array;
  n: number;
  rows: number;
  cols: number;
  /** 1 for grayscale (MNIST family), 3 for CIFAR. */
  channels: number;
  classes: number;
  /** Human-readable class names, where the dataset defines them. */
  labelNames?: readonly string[];
}

/** (x - mean) / std after scaling to [0, 1]; arrays give one value per channel. */
export interface Normalize {
  mean: number | readonly number[];
  std: number | readonly number[];
}

function perChannel(v: number | readonly number[], channels: number, what: string): number[] {
  const arr = typeof v === 'number' ? new Array<number>(channels).fill(v) : [...v];
  if (arr.length !== channels) throw new Error(`normalize: ${what} has ${arr.length} values but the images have ${channels} channels`);
  for (const x of arr) if (!Number.isFinite(x)) throw new Error(`normalize: ${what} must be finite, got ${x}`);
  return arr;
}

/**
 * Bytes 0..255 to floats in [0, 1], optionally normalised per channel. `planeSize` is the pixel
 * count of one channel of one image (CHW layout), so channel = floor(i / planeSize) % channels.
 */
export function bytesToImages(bytes: Uint8Array, channels: number, planeSize: number, normalize?: Normalize): Float32Array {
  const out = new Float32Array(bytes.length);
  if (!normalize) {
    for (let i = 0; i < bytes.length; i++) out[i] = bytes[i]! / 255;
    return out;
  }
  const mean = perChannel(normalize.mean, channels, 'mean');
  const std = perChannel(normalize.std, channels, 'std');
  for (const s of std) if (!(s > 0)) throw new Error(`normalize: std must be positive, got ${s}`);
  for (let start = 0, plane = 0; start < bytes.length; start += planeSize, plane++) {
    const c = plane % channels;
    const m = mean[c]!;
    const inv = 1 / std[c]!;
    const end = Math.min(start + planeSize, bytes.length);
    for (let i = start; i < end; i++) out[i] = (bytes[i]! / 255 - m) * inv;
  }
  return out;
}

/** The examples at `indices`, copied, in that order (e.g. a validation split cut from train). */
export function subsetImages(set: ImageSet, indices: ArrayLike<number>): ImageSet {
  const d = set.channels * set.rows * set.cols;
  const images = new Float32Array(indices.length * d);
  const labels = new Int32Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k]!;
    if (!(Number.isInteger(i) && i >= 0 && i < set.n)) throw new Error(`subsetImages: index ${i} at position ${k} is out of range [0, ${set.n})`);
    images.set(set.images.subarray(i * d, (i + 1) * d), k * d);
    labels[k] = set.labels[i]!;
  }
  const out: ImageSet = { images, labels, n: indices.length, rows: set.rows, cols: set.cols, channels: set.channels, classes: set.classes };
  if (set.labelNames) out.labelNames = set.labelNames;
  return out;
}

export { deriveSeed } from '../tensor/rng.js';

export interface SplitOptions {
  valFraction: number;
  testFraction?: number;
  seed: number;
}

/**
 * A seeded random split of 0..n-1 into train/val/test. Which indices land where is random; each
 * part is sorted ascending so that a subset keeps the data's order (batching shuffles anyway).
 */
export function splitIndices(n: number, opts: SplitOptions): { train: Int32Array; val: Int32Array; test: Int32Array } {
  const valFraction = opts.valFraction;
  const testFraction = opts.testFraction ?? 0;
  if (!(Number.isInteger(n) && n >= 0)) throw new Error(`splitIndices: n must be a non-negative integer, got ${n}`);
  for (const [name, f] of [['valFraction', valFraction], ['testFraction', testFraction]] as const) {
    if (!(f >= 0 && f < 1)) throw new Error(`splitIndices: ${name} must be in [0, 1), got ${f}`);
  }
  if (valFraction + testFraction >= 1) throw new Error(`splitIndices: valFraction + testFraction must be < 1, got ${valFraction} + ${testFraction}`);
  const perm = new Rng(deriveSeed(opts.seed)).permutation(n);
  const nVal = Math.round(n * valFraction);
  const nTest = Math.round(n * testFraction);
  const nTrain = n - nVal - nTest;
  return {
    train: perm.slice(0, nTrain).sort(),
    val: perm.slice(nTrain, nTrain + nVal).sort(),
    test: perm.slice(nTrain + nVal).sort(),
  };
}

export interface BatchOptions {
  batchSize: number;
  /** Reorder every epoch (default true); false keeps 0..n-1. */
  shuffle?: boolean;
  /** Epoch e's order comes from a generator seeded by deriveSeed(seed, e) (default 0). */
  seed?: number;
  /** Drop the last, smaller batch so every step sees batchSize examples (default false). */
  dropLast?: boolean;
}

/** Seeded epoch orders over n examples, as batches of indices; BatchIterator adds the data. */
export class IndexBatches {
  readonly n: number;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  private nextEpoch = 0;

  constructor(n: number, opts: BatchOptions) {
    if (!(Number.isInteger(n) && n >= 0)) throw new Error(`IndexBatches: example count must be a non-negative integer, got ${n}`);
    if (!(Number.isInteger(opts.batchSize) && opts.batchSize > 0)) throw new Error(`IndexBatches: batchSize must be a positive integer, got ${opts.batchSize}`);
    this.n = n;
    this.batchSize = opts.batchSize;
    this.shuffle = opts.shuffle ?? true;
    this.seed = opts.seed ?? 0;
    this.dropLast = opts.dropLast ?? false;
  }

  get batchesPerEpoch(): number {
    return this.dropLast ? Math.floor(this.n / this.batchSize) : Math.ceil(this.n / this.batchSize);
  }

  /** The example order of epoch `e`: a pure function of (seed, e), so a resumed run replays it. */
  order(e: number): Int32Array {
    if (!this.shuffle) {
      const p = new Int32Array(this.n);
      for (let i = 0; i < this.n; i++) p[i] = i;
      return p;
    }
    return new Rng(deriveSeed(this.seed, e)).permutation(this.n);
  }

  *epochIndices(e: number): Generator<Int32Array> {
    const order = this.order(e);
    const steps = this.batchesPerEpoch;
    for (let s = 0; s < steps; s++) yield order.subarray(s * this.batchSize, Math.min((s + 1) * this.batchSize, this.n));
  }

  /** Each call starts the next epoch (0, 1, 2, ...), so `for (const b of it)` once per epoch works. */
  [Symbol.iterator](): Generator<Int32Array> {
    return this.epochIndices(this.nextEpoch++);
  }
}

/** Examples as flat arrays: `x` holds n * prod(exampleShape) floats, `y` n labels. */
export interface ArrayDataset {
  n: number;
  x: Float32Array;
  y: Int32Array;
  exampleShape: readonly number[];
}

export interface Batch {
  /** float32 [B, ...exampleShape] */
  x: Tensor;
  /** int32 [B] */
  y: Tensor;
  /** Which examples (positions in the source) make up this batch. */
  indices: Int32Array;
  epoch: number;
  /** Batch number within the epoch. */
  step: number;
}

export interface BatchIteratorOptions extends BatchOptions {
  /**
   * Shape of one example in x. Default for an ImageSet: [channels * rows * cols], flat for MLPs;
   * pass [channels, rows, cols] for convolutions. Must have the same element count.
   */
  exampleShape?: readonly number[];
}

function isImageSet(s: ImageSet | ArrayDataset): s is ImageSet {
  return (s as ImageSet).images !== undefined;
}

/** Seeded, per-epoch reshuffled batches of (x, y) tensors over an ImageSet or ArrayDataset. */
export class BatchIterator {
  readonly indexBatches: IndexBatches;
  readonly exampleShape: readonly number[];
  private readonly x: Float32Array;
  private readonly y: Int32Array;
  private readonly exampleSize: number;
  private nextEpoch = 0;

  constructor(source: ImageSet | ArrayDataset, opts: BatchIteratorOptions) {
    const n = source.n;
    const x = isImageSet(source) ? source.images : source.x;
    const y = isImageSet(source) ? source.labels : source.y;
    const natural = isImageSet(source) ? [source.channels * source.rows * source.cols] : [...source.exampleShape];
    const naturalSize = natural.reduce((a, b) => a * b, 1);
    const shape = opts.exampleShape ? [...opts.exampleShape] : natural;
    const size = shape.reduce((a, b) => a * b, 1);
    if (size !== naturalSize) throw new Error(`BatchIterator: exampleShape [${shape.join(', ')}] has ${size} elements but each example has ${naturalSize}`);
    if (x.length !== n * size) throw new Error(`BatchIterator: x has ${x.length} values, expected n * ${size} = ${n * size}`);
    if (y.length !== n) throw new Error(`BatchIterator: ${y.length} labels for ${n} examples`);
    this.indexBatches = new IndexBatches(n, opts);
    this.exampleShape = Object.freeze(shape);
    this.exampleSize = size;
    this.x = x;
    this.y = y;
  }

  get n(): number {
    return this.indexBatches.n;
  }

  get batchesPerEpoch(): number {
    return this.indexBatches.batchesPerEpoch;
  }

  /** The batches of epoch `e` (0-based), independent of any other epoch drawn before. */
  *epoch(e: number): Generator<Batch> {
    let step = 0;
    for (const idx of this.indexBatches.epochIndices(e)) yield this.gather(idx, e, step++);
  }

  /** `count` epochs back to back, starting at epoch `start`. */
  *epochs(count: number, start = 0): Generator<Batch> {
    for (let e = start; e < start + count; e++) yield* this.epoch(e);
  }

  /** Each call starts the next epoch (0, 1, 2, ...). */
  [Symbol.iterator](): Generator<Batch> {
    return this.epoch(this.nextEpoch++);
  }

  private gather(idx: Int32Array, epoch: number, step: number): Batch {
    const d = this.exampleSize;
    const b = idx.length;
    const xb = new Float32Array(b * d);
    const yb = new Int32Array(b);
    for (let k = 0; k < b; k++) {
      const i = idx[k]!;
      xb.set(this.x.subarray(i * d, (i + 1) * d), k * d);
      yb[k] = this.y[i]!;
    }
    return { x: new Tensor(xb, [b, ...this.exampleShape]), y: new Tensor(yb, [b]), indices: idx.slice(), epoch, step };
  }
}

/**
 * A language-model batch: B windows at uniform random starts; y is x shifted by one byte
 * (the next-token targets). Tokens are bytes, so vocabulary 256.
 */
export function randomWindows(bytes: Uint8Array, opts: { batchSize: number; seqLen: number; rng: Rng }): { x: Tensor; y: Tensor; starts: Int32Array } {
  const { batchSize: B, seqLen: T, rng } = opts;
  if (!(Number.isInteger(B) && B > 0)) throw new Error(`randomWindows: batchSize must be a positive integer, got ${B}`);
  if (!(Number.isInteger(T) && T > 0)) throw new Error(`randomWindows: seqLen must be a positive integer, got ${T}`);
  if (bytes.length < T + 1) throw new Error(`randomWindows: need at least seqLen + 1 = ${T + 1} bytes for one window, got ${bytes.length}`);
  const x = new Int32Array(B * T); // [B, T]
  const y = new Int32Array(B * T); // [B, T], y[b, t] = x[b, t + 1]
  const starts = new Int32Array(B);
  const span = bytes.length - T; // starts in [0, len - T - 1], so start + T is still a byte
  for (let b = 0; b < B; b++) {
    const s = rng.int(span);
    starts[b] = s;
    for (let t = 0; t < T; t++) {
      x[b * T + t] = bytes[s + t]!;
      y[b * T + t] = bytes[s + t + 1]!;
    }
  }
  return { x: new Tensor(x, [B, T]), y: new Tensor(y, [B, T]), starts };
}
