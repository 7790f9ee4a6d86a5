// safetensors (the Hugging Face tensor file format PyTorch uses): a writer, and a reader that validates every field before trusting it.
//
// Layout: u64 little-endian N | N bytes of UTF-8 JSON header | data. The header maps each tensor name
// to { dtype, shape, data_offsets: [begin, end] } (offsets relative to the data), plus an optional
// "__metadata__" map of strings. Spec: https://github.com/huggingface/safetensors#format

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { Tensor } from '../tensor/tensor.js';
import { shapeSize, shapeStr } from '../tensor/shape.js';
import type { DType, TypedArray } from '../tensor/dtype.js';
import { writeFileAtomic } from './atomic.js';
import { halfToFloat } from '../tensor/half.js';

/** Same cap as the reference implementation: a header this large is an attack or a corrupt length, not a model. */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;

/** Tensors to write: a record, a Map, or [name, tensor] pairs (all laid out in the same canonical order). */
export type SafetensorsInput = Record<string, Tensor> | Map<string, Tensor> | Array<[string, Tensor]>;

export interface SafetensorsContents {
  /** In file data order (ascending offset), which for files we write is the canonical order. */
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

export interface ParseOptions {
  /** Named in every error (a file path, a URL); defaults to 'buffer'. */
  source?: string;
}

/** Every problem with a safetensors file; `source` and `tensor` locate it for programs, the message for people. */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
  constructor(readonly source: string, readonly tensor: string | undefined, detail: string, options?: ErrorOptions) {
    super(`safetensors ${source}: ${tensor === undefined ? '' : `tensor ${JSON.stringify(tensor)}: `}${detail}`, options);
  }
}

// --- dtypes -----------------------------------------------------------------------------------

interface DtypeInfo {
  itemsize: number;
  /** Our dtype when readable; F16/BF16 widen to float32 and small/64-bit integers narrow to int32 (range-checked). */
  to: DType | null;
}

const DTYPES: Readonly<Record<string, DtypeInfo>> = Object.freeze({
  F64: { itemsize: 8, to: 'float64' },
  F32: { itemsize: 4, to: 'float32' },
  I32: { itemsize: 4, to: 'int32' },
  F16: { itemsize: 2, to: 'float32' },
  BF16: { itemsize: 2, to: 'float32' },
  I64: { itemsize: 8, to: 'int32' },
  U64: { itemsize: 8, to: 'int32' },
  U32: { itemsize: 4, to: 'int32' },
  I16: { itemsize: 2, to: 'int32' },
  U16: { itemsize: 2, to: 'int32' },
  I8: { itemsize: 1, to: 'int32' },
  U8: { itemsize: 1, to: 'int32' },
  BOOL: { itemsize: 1, to: 'int32' },
  // Known to the format but with no faithful representation here; listed so the error says "unsupported", not "unknown".
  F8_E5M2: { itemsize: 1, to: null },
  F8_E4M3: { itemsize: 1, to: null },
  C64: { itemsize: 8, to: null },
});

const READABLE = Object.keys(DTYPES).filter((k) => DTYPES[k]!.to !== null).join(', ');

const WRITE_DTYPE: Readonly<Record<DType, string>> = { float64: 'F64', float32: 'F32', int32: 'I32' };
// The reference implementation orders data by dtype (descending), then name, so that every tensor
// starts at a multiple of its item size and can be mapped without copying.
const WRITE_RANK: Readonly<Record<DType, number>> = { float64: 0, float32: 1, int32: 2 };

/** True on little-endian hosts (all supported ones): safetensors bytes can then be viewed as typed arrays directly. */
export const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// --- writing ----------------------------------------------------------------------------------

function toEntries(tensors: SafetensorsInput): Array<[string, Tensor]> {
  const list = Array.isArray(tensors) ? tensors : tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const seen = new Set<string>();
  for (const [name, t] of list) {
    if (typeof name !== 'string') throw new Error(`serializeSafetensors: tensor names must be strings, got ${typeof name}`);
    if (name === '__metadata__') throw new Error(`serializeSafetensors: '__metadata__' is reserved by the format and cannot name a tensor`);
    if (seen.has(name)) throw new Error(`serializeSafetensors: tensor name '${name}' appears twice`);
    seen.add(name);
    if (!(t instanceof Tensor)) throw new Error(`serializeSafetensors: '${name}' is not a Tensor`);
  }
  return list;
}

const utf8Compare = (a: string, b: string): number => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/**
 * Encodes tensors as a safetensors file. Data is laid out like the reference implementation
 * (float64, then float32, then int32; by UTF-8 name within a dtype), whatever the input order, so
 * the same tensors always give the same bytes. Metadata keys are written sorted. The header is
 * padded with spaces to a multiple of 8 bytes, so data starts 8-byte aligned.
 */
export function serializeSafetensors(tensors: SafetensorsInput, metadata?: Record<string, string>): Uint8Array {
  const entries = toEntries(tensors).sort(([na, a], [nb, b]) => WRITE_RANK[a.dtype] - WRITE_RANK[b.dtype] || utf8Compare(na, nb));

  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    const md: Record<string, string> = {};
    for (const k of Object.keys(metadata).sort(utf8Compare)) {
      const v = metadata[k];
      if (typeof v !== 'string') throw new Error(`serializeSafetensors: metadata '${k}' must be a string, got ${typeof v}`);
      Object.defineProperty(md, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
    header['__metadata__'] = md;
  }
  let offset = 0;
  for (const [name, t] of entries) {
    const bytes = t.data.byteLength;
    if (t.data.length !== shapeSize(t.shape)) throw new Error(`serializeSafetensors: '${name}' has ${t.data.length} elements but shape ${shapeStr(t.shape)}`);
    // defineProperty: a tensor called '__proto__' must become a key, not a prototype.
    Object.defineProperty(header, name, {
      value: { dtype: WRITE_DTYPE[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + bytes] },
      enumerable: true, writable: true, configurable: true,
    });
    offset += bytes;
  }

  const head = safetensorsHeaderBytes(header);
  const n = head.byteLength - 8;
  if (n > SAFETENSORS_MAX_HEADER_BYTES) throw new Error(`serializeSafetensors: header of ${n} bytes exceeds the format's limit of ${SAFETENSORS_MAX_HEADER_BYTES}`);
  const out = new Uint8Array(8 + n + offset);
  out.set(head, 0);

  let pos = 8 + n;
  for (const [, t] of entries) {
    writeLE(t.data, out, pos);
    pos += t.data.byteLength;
  }
  return out;
}

/** A file's first bytes for a header object: u64 LE length N, then N bytes of JSON padded with spaces to a multiple of 8 (data starts 8-byte aligned). */
export function safetensorsHeaderBytes(header: Record<string, unknown>): Uint8Array {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const n = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + n);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length);
  return out;
}

function writeLE(src: TypedArray, out: Uint8Array, pos: number): void {
  if (LITTLE_ENDIAN_HOST) {
    out.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), pos);
    return;
  }
  const dv = new DataView(out.buffer, out.byteOffset + pos, src.byteLength);
  if (src instanceof Float64Array) src.forEach((v, i) => dv.setFloat64(i * 8, v, true));
  else if (src instanceof Float32Array) src.forEach((v, i) => dv.setFloat32(i * 4, v, true));
  else src.forEach((v, i) => dv.setInt32(i * 4, v, true));
}

/** Writes a safetensors file atomically: a reader sees the old file or the new one, never a partial one. */
export function writeSafetensorsFile(path: string, tensors: SafetensorsInput, metadata?: Record<string, string>): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

// --- header validation ------------------------------------------------------------------------

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  numel: number;
  begin: number;
  end: number;
}

interface Header {
  entries: Entry[];
  metadata: Record<string, string>;
}

const describe = (v: unknown): string => (v === undefined ? 'nothing (missing)' : v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'string' ? `the string ${JSON.stringify(v.slice(0, 40))}` : typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`);

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const preview = (v: unknown): string => {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

/** Header length from the first 8 bytes, checked against the file size before anything is allocated from it. */
function headerLength(first8: Uint8Array, fileSize: number, src: string): number {
  if (fileSize < 8) throw new SafetensorsError(src, undefined, `file is ${fileSize} bytes, too short for the 8-byte header length`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(SAFETENSORS_MAX_HEADER_BYTES)) throw new SafetensorsError(src, undefined, `header length ${n} exceeds the limit of ${SAFETENSORS_MAX_HEADER_BYTES} bytes (corrupt file, or not safetensors)`);
  if (n > BigInt(fileSize - 8)) throw new SafetensorsError(src, undefined, `header length ${n} runs past the end of the file (${fileSize} bytes, so at most ${fileSize - 8})`);
  return Number(n);
}

function parseHeader(headerBytes: Uint8Array, dataSize: number, src: string): Header {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch (e) {
    throw new SafetensorsError(src, undefined, `header is not valid UTF-8`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(src, undefined, `header is not valid JSON (${(e as Error).message}); starts ${JSON.stringify(text.slice(0, 40))}`, { cause: e });
  }
  if (!isPlainObject(json)) throw new SafetensorsError(src, undefined, `header must be a JSON object, got ${describe(json)}`);

  const entries: Entry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(raw, src);
      continue;
    }
    const fail = (detail: string): never => { throw new SafetensorsError(src, name, detail); };
    if (!isPlainObject(raw)) fail(`entry must be an object with dtype, shape and data_offsets, got ${describe(raw)}`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;

    if (typeof dtype !== 'string') fail(`dtype must be a string, got ${describe(dtype)}`);
    const info = DTYPES[dtype as string];
    if (info === undefined || !Object.hasOwn(DTYPES, dtype as string)) fail(`unknown dtype ${JSON.stringify(dtype)} (readable: ${READABLE})`);

    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`shape must be an array of non-negative integers, got ${preview(shape)}`);
    }
    const dims = shape as number[];
    // Overflow-safe product: a shape like [2**40, 2**40] must be rejected, not rounded.
    let numel = dims.includes(0) ? 0 : 1;
    if (numel !== 0) {
      for (const d of dims) {
        if (numel > Number.MAX_SAFE_INTEGER / d) fail(`shape ${shapeStr(dims)} has more elements than can be addressed`);
        numel *= d;
      }
    }

    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`data_offsets must be [begin, end] with non-negative integers, got ${preview(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`data_offsets [${begin}, ${end}]: begin is after end`);
    if (end > dataSize) fail(`data_offsets [${begin}, ${end}] run past the end of the data (${dataSize} bytes after the header)`);
    const { itemsize } = info!;
    if (numel > Number.MAX_SAFE_INTEGER / itemsize || numel * itemsize !== end - begin) {
      fail(`data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${dtype} shape ${shapeStr(dims)} needs ${numel * itemsize}`);
    }
    if (info!.to === null) fail(`dtype ${dtype} is not supported (readable: ${READABLE})`);
    entries.push({ name, dtype: dtype as string, shape: dims, numel, begin, end });
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  // Gaps are tolerated (harmless); overlaps are not: two tensors must never alias the same bytes.
  let last: Entry | null = null;
  for (const e of entries) {
    if (e.begin === e.end) continue;
    if (last !== null && e.begin < last.end) {
      throw new SafetensorsError(src, e.name, `data_offsets [${e.begin}, ${e.end}] overlap those of ${JSON.stringify(last.name)} [${last.begin}, ${last.end}]`);
    }
    if (last === null || e.end > last.end) last = e;
  }
  return { entries, metadata };
}

function parseMetadata(raw: unknown, src: string): Record<string, string> {
  if (raw === null) return {};
  if (!isPlainObject(raw)) throw new SafetensorsError(src, undefined, `__metadata__ must be an object of strings, got ${describe(raw)}`);
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw new SafetensorsError(src, undefined, `__metadata__ ${JSON.stringify(k)} must be a string, got ${describe(v)}`);
  }
  // fromEntries defines own properties, so a '__proto__' key stays data.
  return Object.fromEntries(Object.entries(raw as Record<string, string>));
}

// --- decoding ---------------------------------------------------------------------------------

/** Copies one tensor's little-endian bytes into a fresh typed array (file offsets need not be aligned). */
function decode(e: Entry, bytes: Uint8Array, src: string): Tensor {
  const n = e.numel;
  const to = DTYPES[e.dtype]!.to!;
  let out: TypedArray;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (e.dtype) {
    case 'F32':
    case 'F64':
    case 'I32': {
      out = e.dtype === 'F32' ? new Float32Array(n) : e.dtype === 'F64' ? new Float64Array(n) : new Int32Array(n);
      if (LITTLE_ENDIAN_HOST) new Uint8Array(out.buffer).set(bytes);
      else if (out instanceof Float64Array) for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      else if (out instanceof Float32Array) for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      else for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
      break;
    }
    case 'BF16': {
      // bfloat16 is the top half of a float32: shifting the bits back is exact.
      const f = new Float32Array(n);
      const u = new Uint32Array(f.buffer);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(i * 2, true) << 16;
      out = f;
      break;
    }
    case 'F16': {
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = halfToFloat(dv.getUint16(i * 2, true));
      out = f;
      break;
    }
    default: {
      const o = new Int32Array(n);
      const narrow = (i: number, v: number | bigint): number => {
        if (v < -2147483648 || v > 2147483647) throw new SafetensorsError(src, e.name, `${e.dtype} value ${v} at index ${i} does not fit int32`);
        return Number(v);
      };
      for (let i = 0; i < n; i++) {
        switch (e.dtype) {
          case 'I64': o[i] = narrow(i, dv.getBigInt64(i * 8, true)); break;
          case 'U64': o[i] = narrow(i, dv.getBigUint64(i * 8, true)); break;
          case 'U32': o[i] = narrow(i, dv.getUint32(i * 4, true)); break;
          case 'I16': o[i] = dv.getInt16(i * 2, true); break;
          case 'U16': o[i] = dv.getUint16(i * 2, true); break;
          case 'I8': o[i] = dv.getInt8(i); break;
          case 'U8': o[i] = dv.getUint8(i); break;
          case 'BOOL': o[i] = dv.getUint8(i) === 0 ? 0 : 1; break;
          default: throw new SafetensorsError(src, e.name, `dtype ${e.dtype} is not supported (readable: ${READABLE})`);
        }
      }
      out = o;
    }
  }
  if (out.length !== n || (to === 'int32') !== out instanceof Int32Array) throw new SafetensorsError(src, e.name, 'internal: decoded size or type mismatch');
  return new Tensor(out, e.shape);
}

// --- reading ----------------------------------------------------------------------------------

/**
 * Parses a safetensors file held in memory. The header is validated completely (lengths, UTF-8,
 * JSON shape, dtypes, shapes, offsets in bounds, sizes, no overlap, string metadata) before any
 * tensor is allocated; every failure is a SafetensorsError naming the source and tensor.
 * F16/BF16 are widened to float32; I64/U64/U32/I16/U16/I8/U8/BOOL are narrowed to int32 (an
 * out-of-range value is an error, never a silent wrap).
 */
export function parseSafetensors(bytes: Uint8Array, opts: ParseOptions = {}): SafetensorsContents {
  const src = opts.source ?? 'buffer';
  if (!(bytes instanceof Uint8Array)) throw new SafetensorsError(src, undefined, `expected a Uint8Array, got ${describe(bytes)}`);
  const n = headerLength(bytes.subarray(0, 8), bytes.byteLength, src);
  const dataStart = 8 + n;
  const { entries, metadata } = parseHeader(bytes.subarray(8, dataStart), bytes.byteLength - dataStart, src);
  const tensors = new Map<string, Tensor>();
  for (const e of entries) tensors.set(e.name, decode(e, bytes.subarray(dataStart + e.begin, dataStart + e.end), src));
  return { tensors, metadata };
}

/**
 * Reads a safetensors file. Only the header and one tensor at a time are held besides the result,
 * so files larger than a single Buffer can hold still load. Errors name the path.
 */
export function readSafetensorsFile(path: string): SafetensorsContents {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SafetensorsError(path, undefined, code === 'ENOENT' ? 'file does not exist' : `cannot open: ${(e as Error).message}`, { cause: e });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new SafetensorsError(path, undefined, 'not a regular file');
    const size = st.size;
    const n = headerLength(readAt(fd, 0, Math.min(8, size), path), size, path);
    const dataStart = 8 + n;
    const { entries, metadata } = parseHeader(readAt(fd, 8, n, path), size - dataStart, path);
    const tensors = new Map<string, Tensor>();
    for (const e of entries) tensors.set(e.name, decode(e, readAt(fd, dataStart + e.begin, e.end - e.begin, path), path));
    return { tensors, metadata };
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(path, undefined, `cannot read: ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
  }
}

function readAt(fd: number, position: number, length: number, path: string): Uint8Array {
  const buf = new Uint8Array(length);
  readFullyAt(fd, buf, position, (at) => new SafetensorsError(path, undefined, `file ended at byte ${at} while reading ${length} bytes at ${position} (was it truncated while being read?)`));
  return buf;
}

/** Fills buf from the file at position; endError(at) is thrown when the file ends at byte `at` first. */
export function readFullyAt(fd: number, buf: Uint8Array, position: number, endError: (at: number) => Error): void {
  let done = 0;
  while (done < buf.byteLength) {
    // readSync caps one call at 2 GiB; loop for larger tensors and short reads.
    const got = readSync(fd, buf, done, Math.min(buf.byteLength - done, 1 << 30), position + done);
    if (got === 0) throw endError(position + done);
    done += got;
  }
}

// --- one tensor at a time (large model files) ---------------------------------------------------

/** Where one tensor lies in a safetensors file: absolute byte range [begin, end). */
export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Reads and validates only the header of an open file, so that tensors can then be read one at a
 * time by offset (model files far larger than the heap). Offsets in the result are absolute.
 */
export function readSafetensorsHeader(fd: number, path: string): { entries: SafetensorsEntry[]; metadata: Record<string, string>; fileSize: number } {
  try {
    const size = fstatSync(fd).size;
    const n = headerLength(readAt(fd, 0, Math.min(8, size), path), size, path);
    const dataStart = 8 + n;
    const { entries, metadata } = parseHeader(readAt(fd, 8, n, path), size - dataStart, path);
    return {
      entries: entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, begin: dataStart + e.begin, end: dataStart + e.end })),
      metadata, fileSize: size,
    };
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(path, undefined, `cannot read: ${(e as Error).message}`, { cause: e });
  }
}

/** Decodes one tensor's stored bytes (as readSafetensorsHeader located them); F16/BF16 widen to float32. */
export function decodeSafetensorsEntry(entry: SafetensorsEntry, bytes: Uint8Array, path: string): Tensor {
  const numel = shapeSize(entry.shape);
  return decode({ ...entry, numel, begin: 0, end: bytes.byteLength }, bytes, path);
}
