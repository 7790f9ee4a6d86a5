// Opening a GGUF file: the header is parsed by @huggingface/gguf, then checked here against the real
// file (sizes, offsets, alignment, block shapes), since the library reads past the end of a local
// file as zeros; tensor data is read per tensor with positioned reads, never the whole file.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { gguf, GGUFValueType, type MetadataValue } from '@huggingface/gguf';
import { GGUF_ALIGNMENT, ggmlTypeName, isBlockType, isSupportedType, typeBytes } from './constants.js';

/** A malformed or unsupported GGUF file; the message starts with the path. */
export class GGUFError extends Error {
  constructor(readonly file: string, what: string) {
    super(`${file}: ${what}`);
    this.name = 'GGUFError';
  }
}

export interface GGUFMetaEntry {
  type: GGUFValueType;
  /** Element type of an array. */
  subType?: GGUFValueType;
  value: MetadataValue;
}

export interface GGUFTensor {
  name: string;
  /** ggml_type id. */
  type: number;
  typeName: string;
  /** Dimensions as stored (ggml order: ne[0] is the contiguous axis). */
  ne: number[];
  /** Row-major shape: ne reversed. */
  shape: number[];
  /** Absolute byte position of the data in the file. */
  position: number;
  /** Byte length of the data (-1 for types this reader cannot size). */
  bytes: number;
}

const MAX_DIMS = 4; // GGML_MAX_DIMS

export class GGUFFile {
  private fd: number | null;

  private constructor(
    readonly path: string,
    readonly version: number,
    readonly metadata: Map<string, GGUFMetaEntry>,
    readonly tensors: Map<string, GGUFTensor>,
    readonly alignment: number,
    fd: number,
  ) {
    this.fd = fd;
  }

  /** Parses and validates the header; the file stays open for tensor reads until close(). */
  static async open(path: string): Promise<GGUFFile> {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new GGUFError(path, `cannot open (${(e as Error).message})`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new GGUFError(path, 'not a regular file');
      const size = st.size;
      if (size < 24) throw new GGUFError(path, `${size} bytes is too short for a GGUF header (magic, version, counts)`);
      const head = Buffer.alloc(24);
      readSync(fd, head, 0, 24, 0);
      const magic = head.toString('latin1', 0, 4);
      if (magic !== 'GGUF') throw new GGUFError(path, `wrong magic ${JSON.stringify(magic)} (expected "GGUF")`);
      checkCounts(path, head, size);
      let parsed: Awaited<ReturnType<typeof parseHeader>>;
      try {
        parsed = await parseHeader(path);
      } catch (e) {
        throw new GGUFError(path, `header: ${(e as Error).message}`);
      }
      if (!parsed.littleEndian) throw new GGUFError(path, 'big-endian GGUF files are not supported');
      const headerEnd = parsed.tensorInfoByteRange[1];
      if (headerEnd > size) throw new GGUFError(path, `truncated: the header runs to byte ${headerEnd} but the file has ${size} bytes`);
      const metadata = new Map<string, GGUFMetaEntry>();
      const typed = parsed.typedMetadata as unknown as Record<string, { type: GGUFValueType; subType?: GGUFValueType; value: MetadataValue }>;
      for (const [key, e] of Object.entries(typed)) {
        if (key === 'version' || key === 'tensor_count' || key === 'kv_count') continue;
        metadata.set(key, e.subType === undefined ? { type: e.type, value: e.value } : { type: e.type, subType: e.subType, value: e.value });
      }
      const alignment = Number(typed['general.alignment']?.value ?? GGUF_ALIGNMENT);
      const dataStart = Number(parsed.tensorDataOffset);
      const tensors = new Map<string, GGUFTensor>();
      for (const info of parsed.tensorInfos) {
        const name = info.name;
        const bad = (what: string): never => {
          throw new GGUFError(path, `tensor ${JSON.stringify(name)}: ${what}`);
        };
        if (tensors.has(name)) bad('appears twice');
        if (info.n_dims < 1 || info.n_dims > MAX_DIMS) bad(`has ${info.n_dims} dimensions (ggml allows 1 to ${MAX_DIMS})`);
        const ne = info.shape.map(Number);
        const count = ne.reduce((a, b) => a * b, 1);
        if (!Number.isSafeInteger(count)) bad(`shape [${ne.join(', ')}] has too many elements`);
        const offset = Number(info.offset);
        if (!Number.isSafeInteger(offset) || offset % alignment !== 0) bad(`data offset ${info.offset} is not a multiple of the alignment ${alignment}`);
        let bytes = -1;
        if (isSupportedType(info.dtype)) {
          if (isBlockType(info.dtype) && ne[0]! % 32 !== 0) bad(`${ggmlTypeName(info.dtype)} rows of ${ne[0]} values are not whole blocks of 32`);
          bytes = typeBytes(info.dtype, count);
          const end = dataStart + offset + bytes;
          if (end > size) bad(`data [${dataStart + offset}, ${end}) runs past the end of the file (${size} bytes; truncated?)`);
        }
        tensors.set(name, {
          name, type: info.dtype, typeName: ggmlTypeName(info.dtype), ne, shape: ne.slice().reverse(), position: dataStart + offset, bytes,
        });
      }
      return new GGUFFile(path, parsed.metadata.version, metadata, tensors, alignment, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  tensor(name: string): GGUFTensor {
    const t = this.tensors.get(name);
    if (!t) throw new GGUFError(this.path, `no tensor ${JSON.stringify(name)}`);
    return t;
  }

  /** `length` bytes of a tensor's data from byte `begin` of it. */
  readBytes(t: GGUFTensor, begin = 0, length = t.bytes): Uint8Array {
    if (this.fd === null) throw new GGUFError(this.path, `closed (reading tensor ${t.name})`);
    if (t.bytes < 0) throw new GGUFError(this.path, `tensor ${t.name}: type ${t.typeName} is not supported (F32, F16, BF16, Q8_0, Q4_0)`);
    if (begin < 0 || begin + length > t.bytes) throw new Error(`readBytes: [${begin}, ${begin + length}) outside tensor ${t.name} (${t.bytes} bytes)`);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, length - done, t.position + begin + done);
      if (n === 0) throw new GGUFError(this.path, `tensor ${t.name}: unexpected end of file (was it truncated after opening?)`);
      done += n;
    }
    return out;
  }

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  /** A metadata value; `want` names the expected kind in errors. */
  private get(key: string, want: string): GGUFMetaEntry {
    const e = this.metadata.get(key);
    if (!e) throw new GGUFError(this.path, `metadata key ${key} is missing (${want})`);
    return e;
  }

  str(key: string): string {
    const e = this.get(key, 'a string');
    if (e.type !== GGUFValueType.STRING) throw new GGUFError(this.path, `metadata ${key} must be a string, got ${GGUFValueType[e.type]}`);
    return e.value as string;
  }

  /** A number of any numeric GGUF type (64-bit integers must be exact in a double). */
  num(key: string): number {
    const e = this.get(key, 'a number');
    const v = e.value;
    if (typeof v === 'bigint') {
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw new GGUFError(this.path, `metadata ${key} = ${v} is too large`);
      return Number(v);
    }
    if (typeof v !== 'number') throw new GGUFError(this.path, `metadata ${key} must be a number, got ${GGUFValueType[e.type]}`);
    return v;
  }

  /** A non-negative integer (counts and sizes). */
  int(key: string): number {
    const v = this.num(key);
    if (!Number.isSafeInteger(v) || v < 0) throw new GGUFError(this.path, `metadata ${key} = ${v} must be a non-negative integer`);
    return v;
  }

  bool(key: string): boolean {
    const e = this.get(key, 'a boolean');
    if (typeof e.value !== 'boolean') throw new GGUFError(this.path, `metadata ${key} must be a boolean, got ${GGUFValueType[e.type]}`);
    return e.value;
  }

  /** An array whose elements are all of `elem` type (strings, or numbers of any numeric type). */
  array(key: string, elem: 'string' | 'number'): Array<string | number> {
    const e = this.get(key, `an array of ${elem}s`);
    if (e.type !== GGUFValueType.ARRAY || !Array.isArray(e.value)) throw new GGUFError(this.path, `metadata ${key} must be an array`);
    const out = (e.value as MetadataValue[]).map((v) => (typeof v === 'bigint' ? Number(v) : v));
    out.forEach((v, i) => {
      if (typeof v !== elem) throw new GGUFError(this.path, `metadata ${key}[${i}] must be a ${elem}`);
    });
    return out as Array<string | number>;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/**
 * Refuses counts that cannot fit in the file before the library loops over them: it would read
 * zeros past the end, building millions of empty entries (a 64-byte file claiming 10^7 tensors
 * took 20 s and 300 MB). Every key-value pair takes at least 13 bytes (v1: 9), every tensor info 24 (v1: 20).
 * b: the first 24 bytes of the file, already read by open() for the magic.
 */
function checkCounts(path: string, b: Buffer, size: number): void {
  const version = b.readUInt32LE(4);
  if (version !== 1 && version !== 2 && version !== 3) return; // the library names a bad version
  const v1 = version === 1;
  const tensors = v1 ? BigInt(b.readUInt32LE(8)) : b.readBigUInt64LE(8);
  const kvs = v1 ? BigInt(b.readUInt32LE(12)) : b.readBigUInt64LE(16);
  const room = BigInt(size - (v1 ? 16 : 24));
  if (tensors * (v1 ? 20n : 24n) > room) throw new GGUFError(path, `tensor_count ${tensors} cannot fit in a file of ${size} bytes (truncated or corrupt)`);
  if (kvs * (v1 ? 9n : 13n) + tensors * (v1 ? 20n : 24n) > room) throw new GGUFError(path, `kv_count ${kvs} cannot fit in a file of ${size} bytes (truncated or corrupt)`);
}

async function parseHeader(path: string) {
  // The library's local reader: 2 MB range reads through node:fs, bounded counts and lengths.
  return gguf(path, { allowLocalFile: true, typedMetadata: true });
}
