// Images for a trained model from a file: IDX (MNIST format), PNG (decoded by pngjs) or a JSON array
// of pixel values; the format is told by the contents. Images are never resized: a size other
// than the model's is an error naming both.

import { PNG } from 'pngjs';
import { DataError, readFileOrThrow } from './errors.js';
import { isGzip, parseIdx } from './idx.js';

/** Channels x height x width of one image, CHW. */
export interface ImageShape {
  channels: number;
  height: number;
  width: number;
}

export interface ImageFile {
  format: 'idx' | 'png' | 'json';
  /** n images back to back, each CHW, values in [0, 255] (JSON: in [0, the caller's scale]). */
  pixels: Uint8Array | Float64Array;
  n: number;
}

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const dims = (s: ImageShape): string => `${s.height}x${s.width}${s.channels === 1 ? ' (1 channel)' : ` (${s.channels} channels)`}`;

/** Reads `path` as the images `want` describes (IDX or PNG pixels 0..255; JSON values as written). */
export function readImageFile(path: string, want: ImageShape): ImageFile {
  const bytes = readFileOrThrow(path, 'an image file (PNG, IDX or a JSON array of pixel values)');
  if (bytes.length >= 8 && PNG_MAGIC.every((b, i) => bytes[i] === b)) return { format: 'png', ...fromPng(bytes, path, want) };
  if (isGzip(bytes) || (bytes.length >= 4 && bytes[0] === 0 && bytes[1] === 0 && bytes[2]! >= 0x08 && bytes[2]! <= 0x0e)) {
    return { format: 'idx', ...fromIdx(bytes, path, want) };
  }
  const text = bytes.toString('utf8').trimStart();
  if (text.startsWith('[')) return { format: 'json', ...fromJson(text, path, want) };
  const head = [...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  throw new DataError(path, `expected a PNG image, an IDX file (MNIST format) or a JSON array of pixel values, found none of these (first bytes ${head || 'none: the file is empty'})`);
}

function sizeError(path: string, found: ImageShape, want: ImageShape): DataError {
  return new DataError(path, `holds ${dims(found)} images but the model takes ${dims(want)}; resize or convert them first (moe does not resize)`);
}

function fromIdx(bytes: Uint8Array, path: string, want: ImageShape): { pixels: Uint8Array; n: number } {
  const idx = parseIdx(bytes, path);
  const s = idx.shape;
  let n: number;
  let found: ImageShape;
  // [H, W]: one gray image; [N, H, W]: gray images (or one C-channel image when C > 1 leads); [N, C, H, W]
  if (s.length === 2) { n = 1; found = { channels: 1, height: s[0]!, width: s[1]! }; }
  else if (s.length === 3 && want.channels > 1 && s[0] === want.channels) { n = 1; found = { channels: s[0]!, height: s[1]!, width: s[2]! }; }
  else if (s.length === 3) { n = s[0]!; found = { channels: 1, height: s[1]!, width: s[2]! }; }
  else if (s.length === 4) { n = s[0]!; found = { channels: s[1]!, height: s[2]!, width: s[3]! }; }
  else throw new DataError(path, `expected IDX images of shape [H, W], [N, H, W] or [N, C, H, W], found shape [${s.join(', ')}]`);
  if (found.channels !== want.channels || found.height !== want.height || found.width !== want.width) throw sizeError(path, found, want);
  if (n === 0) throw new DataError(path, 'holds no images');
  return { pixels: idx.data, n };
}

function fromPng(bytes: Buffer, path: string, want: ImageShape): { pixels: Float64Array; n: number } {
  let png: PNG;
  try {
    png = PNG.sync.read(bytes);
  } catch (e) {
    throw new DataError(path, `expected a valid PNG image, found a decoding error (${(e as Error).message})`);
  }
  const { width, height, data } = png;
  if (height !== want.height || width !== want.width) throw sizeError(path, { channels: want.channels, height, width }, want);
  if (want.channels !== 1 && want.channels !== 3) throw new DataError(path, `a PNG gives 1 (gray) or 3 (RGB) channels, but the model takes ${want.channels}`);
  // pngjs hands back RGBA, 8 bits per channel; alpha is ignored, as PIL's convert('L') / convert('RGB') do
  const plane = width * height;
  const out = new Float64Array(want.channels * plane);
  for (let i = 0; i < plane; i++) {
    const r = data[4 * i]!;
    const g = data[4 * i + 1]!;
    const b = data[4 * i + 2]!;
    if (want.channels === 1) {
      // ITU-R 601 luma, the weights of PIL's convert('L'); a gray PNG (r = g = b) keeps its values exactly
      out[i] = r === g && g === b ? r : 0.299 * r + 0.587 * g + 0.114 * b;
    } else {
      out[i] = r;
      out[plane + i] = g;
      out[2 * plane + i] = b;
    }
  }
  return { pixels: out, n: 1 };
}

/** The shape of a rectangular nested array of numbers; names the first position that breaks it. */
function nestedShape(v: unknown, path: string): { shape: number[]; flat: number[] } {
  const flat: number[] = [];
  let shape: number[] | null = null;
  const walk = (x: unknown, at: number[], depthShape: number[]): void => {
    if (Array.isArray(x)) {
      for (let i = 0; i < x.length; i++) walk(x[i], [...at, i], [...depthShape, x.length]);
      if (x.length === 0) throw new DataError(path, `expected arrays of pixel values, found an empty array at ${pos(at)}`);
      return;
    }
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new DataError(path, `expected a finite number at ${pos(at)}, found ${JSON.stringify(x)}`);
    if (shape === null) shape = depthShape;
    else if (shape.length !== depthShape.length || shape.some((d, i) => d !== depthShape[i])) {
      throw new DataError(path, `expected a rectangular array (shape [${shape.join(', ')}]), found a ragged one at ${pos(at)}`);
    }
    flat.push(x);
  };
  walk(v, [], []);
  return { shape: shape ?? [], flat };
}

const pos = (at: number[]): string => (at.length === 0 ? 'the top level' : at.map((i) => `[${i}]`).join(''));

function fromJson(text: string, path: string, want: ImageShape): { pixels: Float64Array; n: number } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new DataError(path, `expected a JSON array of pixel values, found invalid JSON (${(e as Error).message})`);
  }
  const { shape, flat } = nestedShape(parsed, path);
  const { channels: C, height: H, width: W } = want;
  const per = C * H * W;
  // one image, then a list of images, in each of the layouts: flat, [H, W] (gray), [C, H, W]
  const forms: number[][] = [[per], ...(C === 1 ? [[H, W]] : []), [C, H, W]];
  const same = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);
  for (const f of forms) {
    if (same(shape, f)) return { pixels: Float64Array.from(flat), n: 1 };
    if (shape.length === f.length + 1 && same(shape.slice(1), f)) return { pixels: Float64Array.from(flat), n: shape[0]! };
  }
  const layouts = forms.map((f) => `[${f.join(', ')}]`).join(', ');
  throw new DataError(path, `holds an array of shape [${shape.join(', ')}], but the model takes ${dims(want)} images: give one image as ${layouts} or a list of them (resize first; moe does not resize)`);
}
