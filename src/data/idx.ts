// IDX files (the MNIST / Fashion-MNIST format): a big-endian header then a dense array; plain or gzip.

import { writeFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import { DataError, hex32, readFileOrThrow } from './errors.js';

export type IdxDtype = 'ubyte' | 'byte' | 'short' | 'int' | 'float' | 'double';

export interface IdxDataOf {
  ubyte: Uint8Array;
  byte: Int8Array;
  short: Int16Array;
  int: Int32Array;
  float: Float32Array;
  double: Float64Array;
}

export interface IdxArray<D extends IdxDtype = IdxDtype> {
  shape: number[];
  dtype: D;
  data: IdxDataOf[D];
}

/** What the caller knows the file must hold; a mismatch is a DataError naming both. */
export interface IdxExpect<D extends IdxDtype = IdxDtype> {
  dtype?: D;
  dims?: number;
}

const CODES: Record<IdxDtype, number> = { ubyte: 0x08, byte: 0x09, short: 0x0b, int: 0x0c, float: 0x0d, double: 0x0e };
const SIZES: Record<IdxDtype, number> = { ubyte: 1, byte: 1, short: 2, int: 4, float: 4, double: 8 };
const BY_CODE = new Map<number, IdxDtype>(Object.entries(CODES).map(([k, v]) => [v, k as IdxDtype]));

export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** Gunzips when the gzip magic is present: file names lie (.gz renamed away or kept), contents do not. */
export function maybeGunzip(bytes: Uint8Array, name: string): Uint8Array {
  if (!isGzip(bytes)) return bytes;
  try {
    return gunzipSync(bytes);
  } catch (e) {
    throw new DataError(name, `expected a complete gzip stream, found corrupt or truncated gzip data (${(e as Error).message})`);
  }
}

function describeMagic(dtype: IdxDtype | undefined, dims: number | undefined): string {
  if (dtype === undefined || dims === undefined) {
    return `IDX magic 0x0000TTDD (two zero bytes, a dtype code TT in {08,09,0b,0c,0d,0e}, a dimension count DD${dtype ? `, dtype ${dtype}` : ''}${dims !== undefined ? `, ${dims} dims` : ''})`;
  }
  return `IDX magic ${hex32((CODES[dtype] << 8) | dims)} (${dtype}, ${dims} dims)`;
}

export function parseIdx(bytes: Uint8Array, name: string): IdxArray<'ubyte'>;
export function parseIdx<D extends IdxDtype>(bytes: Uint8Array, name: string, expect: IdxExpect<D> & { dtype: D }): IdxArray<D>;
export function parseIdx(bytes: Uint8Array, name: string, expect: { dims?: number }): IdxArray<'ubyte'>;
/**
 * Parses IDX bytes (gzip detected by its magic). Without an expected dtype the file must be
 * ubyte, since every image/label file in the wild is; pass `dtype` to read the others.
 */
export function parseIdx(raw: Uint8Array, name: string, expect: IdxExpect = {}): IdxArray {
  const want = expect.dtype ?? 'ubyte';
  const bytes = maybeGunzip(raw, name);
  const expected = describeMagic(want, expect.dims);
  if (bytes.length < 4) throw new DataError(name, `expected ${expected}, found a file of only ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  const code = bytes[2]!;
  const ndims = bytes[3]!;
  const dtype = BY_CODE.get(code);
  if (bytes[0] !== 0 || bytes[1] !== 0 || dtype === undefined || ndims === 0) {
    throw new DataError(name, `expected ${expected}, found ${hex32(magic)}`);
  }
  if (dtype !== want || (expect.dims !== undefined && ndims !== expect.dims)) {
    throw new DataError(name, `expected ${expected}, found ${hex32(magic)} (${dtype}, ${ndims} dims)`);
  }
  const headerLen = 4 + 4 * ndims;
  if (bytes.length < headerLen) {
    throw new DataError(name, `expected a ${headerLen}-byte header for ${ndims} dims, found a file of ${bytes.length} bytes`);
  }
  const shape: number[] = [];
  for (let i = 0; i < ndims; i++) shape.push(view.getUint32(4 + 4 * i, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const payload = count * SIZES[dtype];
  const found = bytes.length - headerLen;
  if (found !== payload) {
    const why = found < payload ? 'truncated' : 'trailing bytes';
    throw new DataError(name, `expected ${payload} payload bytes for ${dtype} shape [${shape.join(', ')}], found ${found} (${why})`);
  }
  return { shape, dtype, data: decodePayload(bytes, headerLen, count, dtype) };
}

function decodePayload(bytes: Uint8Array, offset: number, count: number, dtype: IdxDtype): IdxDataOf[IdxDtype] {
  // Copy (a Buffer's slice would be a view) so the result owns its memory and does not pin the
  // file or gunzip buffer, and is a plain Uint8Array rather than a Buffer.
  if (dtype === 'ubyte') return new Uint8Array(bytes.subarray(offset, offset + count));
  if (dtype === 'byte') return new Int8Array(new Uint8Array(bytes.subarray(offset, offset + count)).buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * SIZES[dtype]);
  switch (dtype) {
    case 'short': { const o = new Int16Array(count); for (let i = 0; i < count; i++) o[i] = view.getInt16(2 * i, false); return o; }
    case 'int': { const o = new Int32Array(count); for (let i = 0; i < count; i++) o[i] = view.getInt32(4 * i, false); return o; }
    case 'float': { const o = new Float32Array(count); for (let i = 0; i < count; i++) o[i] = view.getFloat32(4 * i, false); return o; }
    case 'double': { const o = new Float64Array(count); for (let i = 0; i < count; i++) o[i] = view.getFloat64(8 * i, false); return o; }
  }
}

export function readIdx(path: string): IdxArray<'ubyte'>;
export function readIdx<D extends IdxDtype>(path: string, expect: IdxExpect<D> & { dtype: D }): IdxArray<D>;
export function readIdx(path: string, expect: { dims?: number }): IdxArray<'ubyte'>;
export function readIdx(path: string, expect: IdxExpect = {}): IdxArray {
  const bytes = readFileOrThrow(path, `an IDX file (${expect.dtype ?? 'ubyte'}${expect.dims !== undefined ? `, ${expect.dims} dims` : ''})`);
  return parseIdx(bytes, path, expect as IdxExpect<IdxDtype> & { dtype: IdxDtype });
}

/** IDX bytes for an array (big-endian, as the format requires). */
export function encodeIdx(arr: { shape: readonly number[]; data: IdxDataOf[IdxDtype]; dtype?: IdxDtype }): Uint8Array {
  const dtype = arr.dtype ?? 'ubyte';
  const count = arr.shape.reduce((a, b) => a * b, 1);
  if (arr.shape.length === 0 || arr.shape.length > 255) throw new Error(`encodeIdx: need 1 to 255 dims, got ${arr.shape.length}`);
  if (arr.data.length !== count) throw new Error(`encodeIdx: data has ${arr.data.length} elements but shape [${arr.shape.join(', ')}] needs ${count}`);
  const headerLen = 4 + 4 * arr.shape.length;
  const out = new Uint8Array(headerLen + count * SIZES[dtype]);
  const view = new DataView(out.buffer);
  view.setUint32(0, (CODES[dtype] << 8) | arr.shape.length, false);
  arr.shape.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  const d = arr.data;
  for (let i = 0; i < count; i++) {
    const at = headerLen + i * SIZES[dtype];
    switch (dtype) {
      case 'ubyte': view.setUint8(at, d[i]!); break;
      case 'byte': view.setInt8(at, d[i]!); break;
      case 'short': view.setInt16(at, d[i]!, false); break;
      case 'int': view.setInt32(at, d[i]!, false); break;
      case 'float': view.setFloat32(at, d[i]!, false); break;
      case 'double': view.setFloat64(at, d[i]!, false); break;
    }
  }
  return out;
}

export function writeIdx(path: string, arr: { shape: readonly number[]; data: IdxDataOf[IdxDtype]; dtype?: IdxDtype }, opts: { gzip?: boolean } = {}): void {
  const bytes = encodeIdx(arr);
  writeFileSync(path, opts.gzip ? gzipSync(bytes) : bytes);
}
