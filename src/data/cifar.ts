// CIFAR-10 / CIFAR-100 binary-version readers: fixed-size records of label byte(s) + 3072 CHW pixel bytes.

import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesToImages, type ImageSet, type Normalize } from './batches.js';
import { DataError, readFileOrThrow } from './errors.js';

const SIDE = 32;
const CHANNELS = 3;
/** One image: 1024 red, then 1024 green, then 1024 blue bytes, each plane row-major. */
export const CIFAR_PIXELS = CHANNELS * SIDE * SIDE;

export const CIFAR10_CLASSES: readonly string[] = Object.freeze([
  'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck',
]);

/** Per-channel training-set statistics (after scaling to [0, 1]), the usual `normalize` values. */
export const CIFAR10_STATS: Normalize = Object.freeze({ mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] });
export const CIFAR100_STATS: Normalize = Object.freeze({ mean: [0.5071, 0.4865, 0.4409], std: [0.2673, 0.2564, 0.2762] });

export interface CifarOptions {
  normalize?: Normalize;
}

export interface Cifar100Options extends CifarOptions {
  /** Which label to return: the 100 fine classes (default) or the 20 coarse superclasses. */
  label?: 'fine' | 'coarse';
}

interface Layout {
  format: string;
  labelBytes: number;
  /** Which of the label bytes is the label returned. */
  labelAt: number;
  classes: number;
}

const CIFAR10: Layout = { format: 'CIFAR-10', labelBytes: 1, labelAt: 0, classes: 10 };
const cifar100 = (label: 'fine' | 'coarse'): Layout => ({
  format: `CIFAR-100 (${label} labels)`, labelBytes: 2, labelAt: label === 'coarse' ? 0 : 1, classes: label === 'coarse' ? 20 : 100,
});

function parseRecords(bytes: Uint8Array, path: string, layout: Layout): { pixels: Uint8Array; labels: Int32Array } {
  const rec = layout.labelBytes + CIFAR_PIXELS;
  const recDesc = `${layout.format.split(' ')[0]} records of ${rec} bytes (${layout.labelBytes} label byte${layout.labelBytes > 1 ? 's' : ''} + ${CIFAR_PIXELS} pixel bytes)`;
  if (bytes.length === 0 || bytes.length % rec !== 0) {
    throw new DataError(path, `expected a whole number of ${recDesc}, found ${bytes.length} bytes (${bytes.length % rec} past the last whole record)`);
  }
  const n = bytes.length / rec;
  const pixels = new Uint8Array(n * CIFAR_PIXELS);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const base = i * rec;
    const label = bytes[base + layout.labelAt]!;
    if (label >= layout.classes) throw new DataError(path, `expected ${layout.format} labels in [0, ${layout.classes}), found ${label} in record ${i}`);
    labels[i] = label;
    pixels.set(bytes.subarray(base + layout.labelBytes, base + rec), i * CIFAR_PIXELS);
  }
  return { pixels, labels };
}

function readRecords(paths: readonly string[], layout: Layout): { pixels: Uint8Array; labels: Int32Array } {
  const parts = paths.map((p) => parseRecords(readFileOrThrow(p, `a ${layout.format} binary batch`), p, layout));
  if (parts.length === 1) return parts[0]!;
  const n = parts.reduce((s, p) => s + p.labels.length, 0);
  const pixels = new Uint8Array(n * CIFAR_PIXELS);
  const labels = new Int32Array(n);
  let at = 0;
  for (const p of parts) {
    pixels.set(p.pixels, at * CIFAR_PIXELS);
    labels.set(p.labels, at);
    at += p.labels.length;
  }
  return { pixels, labels };
}

function toImageSet(r: { pixels: Uint8Array; labels: Int32Array }, classes: number, normalize: Normalize | undefined, labelNames: readonly string[] | undefined): ImageSet {
  const set: ImageSet = {
    images: bytesToImages(r.pixels, CHANNELS, SIDE * SIDE, normalize), labels: r.labels, n: r.labels.length,
    rows: SIDE, cols: SIDE, channels: CHANNELS, classes,
  };
  if (labelNames && labelNames.length === classes) set.labelNames = labelNames;
  return set;
}

/** One CIFAR-10 binary batch file (e.g. data_batch_1.bin) as an ImageSet. */
export function readCifar10(path: string, opts: CifarOptions = {}): ImageSet {
  return toImageSet(readRecords([path], CIFAR10), 10, opts.normalize, CIFAR10_CLASSES);
}

/** One CIFAR-100 binary file (train.bin or test.bin) as an ImageSet. */
export function readCifar100(path: string, opts: Cifar100Options = {}): ImageSet {
  const layout = cifar100(opts.label ?? 'fine');
  return toImageSet(readRecords([path], layout), layout.classes, opts.normalize, undefined);
}

/** The directory holding the batches: `dir` itself or the folder the official archive unpacks to. */
function batchDir(dir: string, first: string, archiveFolder: string, format: string): string {
  if (existsSync(join(dir, first))) return dir;
  const nested = join(dir, archiveFolder);
  if (existsSync(join(nested, first))) return nested;
  const found = !existsSync(dir) ? 'no such directory' : !statSync(dir).isDirectory() ? 'a file' : `no ${first} there or in ${archiveFolder}/`;
  throw new DataError(dir, `expected a directory with the ${format} binary version (${first}, ...), found ${found}`);
}

function readNames(path: string): string[] | undefined {
  if (!existsSync(path)) return undefined;
  return readFileSync(path, 'utf8').split(/\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0);
}

/** CIFAR-10 binary version: data_batch_1..5.bin (50000 train) and test_batch.bin (10000 test). */
export function loadCifar10(dir: string, opts: CifarOptions = {}): { train: ImageSet; test: ImageSet } {
  const root = batchDir(dir, 'data_batch_1.bin', 'cifar-10-batches-bin', 'CIFAR-10');
  const names = readNames(join(root, 'batches.meta.txt')) ?? CIFAR10_CLASSES;
  const train = [1, 2, 3, 4, 5].map((i) => join(root, `data_batch_${i}.bin`));
  return {
    train: toImageSet(readRecords(train, CIFAR10), 10, opts.normalize, names),
    test: toImageSet(readRecords([join(root, 'test_batch.bin')], CIFAR10), 10, opts.normalize, names),
  };
}

/** CIFAR-100 binary version: train.bin (50000) and test.bin (10000); fine labels unless { label: 'coarse' }. */
export function loadCifar100(dir: string, opts: Cifar100Options = {}): { train: ImageSet; test: ImageSet } {
  const root = batchDir(dir, 'train.bin', 'cifar-100-binary', 'CIFAR-100');
  const label = opts.label ?? 'fine';
  const layout = cifar100(label);
  const names = readNames(join(root, label === 'fine' ? 'fine_label_names.txt' : 'coarse_label_names.txt'));
  return {
    train: toImageSet(readRecords([join(root, 'train.bin')], layout), layout.classes, opts.normalize, names),
    test: toImageSet(readRecords([join(root, 'test.bin')], layout), layout.classes, opts.normalize, names),
  };
}

function checkPixels(pixels: Uint8Array, n: number, what: string): void {
  if (pixels.length !== n * CIFAR_PIXELS) throw new Error(`${what}: ${pixels.length} pixel bytes for ${n} records, expected ${n * CIFAR_PIXELS}`);
}

/** CIFAR-10 binary bytes for labels and CHW pixel bytes (tests and synthetic data). */
export function encodeCifar10(labels: ArrayLike<number>, pixels: Uint8Array): Uint8Array {
  checkPixels(pixels, labels.length, 'encodeCifar10');
  const rec = 1 + CIFAR_PIXELS;
  const out = new Uint8Array(labels.length * rec);
  for (let i = 0; i < labels.length; i++) {
    out[i * rec] = labels[i]!;
    out.set(pixels.subarray(i * CIFAR_PIXELS, (i + 1) * CIFAR_PIXELS), i * rec + 1);
  }
  return out;
}

/** CIFAR-100 binary bytes: per record the coarse label, the fine label, then the pixels. */
export function encodeCifar100(coarse: ArrayLike<number>, fine: ArrayLike<number>, pixels: Uint8Array): Uint8Array {
  if (coarse.length !== fine.length) throw new Error(`encodeCifar100: ${coarse.length} coarse labels but ${fine.length} fine labels`);
  checkPixels(pixels, fine.length, 'encodeCifar100');
  const rec = 2 + CIFAR_PIXELS;
  const out = new Uint8Array(fine.length * rec);
  for (let i = 0; i < fine.length; i++) {
    out[i * rec] = coarse[i]!;
    out[i * rec + 1] = fine[i]!;
    out.set(pixels.subarray(i * CIFAR_PIXELS, (i + 1) * CIFAR_PIXELS), i * rec + 2);
  }
  return out;
}

export function writeCifar10(path: string, labels: ArrayLike<number>, pixels: Uint8Array): void {
  writeFileSync(path, encodeCifar10(labels, pixels));
}

export function writeCifar100(path: string, coarse: ArrayLike<number>, fine: ArrayLike<number>, pixels: Uint8Array): void {
  writeFileSync(path, encodeCifar100(coarse, fine, pixels));
}
