// Writing a GGUF v3 file: metadata serialised by @huggingface/gguf, tensor infos and aligned data
// written here. Tensors stream through a side file (the header, written first, needs every
// tensor's size), and the result appears atomically (temp file, fsync, rename).

import { closeSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { serializeGgufMetadata, GGUFValueType, type GGUFTypedMetadata } from '@huggingface/gguf';
import { fsyncDir, tempSiblingPath } from '../../io/atomic.js';
import { GGUF_ALIGNMENT, ggmlTypeName, isBlockType, isSupportedType, typeBytes } from './constants.js';
import type { GGUFMetaEntry } from './read.js';

export interface GGUFWriteTensor {
  name: string;
  /** ggml_type id (F32, F16, BF16, Q8_0, Q4_0). */
  type: number;
  /** Row-major shape (written reversed, as ggml's ne). */
  shape: number[];
  /** The stored bytes (little-endian values or blocks). */
  data: Uint8Array;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
}

const pad = (x: number, a: number): number => Math.ceil(x / a) * a;

function tensorInfoBytes(name: string, shape: number[], type: number, offset: number): Uint8Array {
  const nameBytes = Buffer.from(name, 'utf8');
  const out = Buffer.alloc(8 + nameBytes.length + 4 + 8 * shape.length + 4 + 8);
  let p = out.writeBigUInt64LE(BigInt(nameBytes.length), 0);
  p += nameBytes.copy(out, p);
  p = out.writeUInt32LE(shape.length, p);
  for (const d of [...shape].reverse()) p = out.writeBigUInt64LE(BigInt(d), p);
  p = out.writeUInt32LE(type, p);
  out.writeBigUInt64LE(BigInt(offset), p);
  return out;
}

/**
 * Writes `path` (replacing it atomically) with the metadata entries in the given order and the
 * tensors in iteration order, each tensor's data aligned to `alignment` bytes.
 */
export function writeGGUFFile(path: string, metadata: Array<[string, GGUFMetaEntry]>, tensors: Iterable<GGUFWriteTensor>,
  alignment = GGUF_ALIGNMENT): { tensorCount: number; bytes: number } {
  if (!Number.isInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0) throw new Error(`writeGGUF ${path}: alignment ${alignment} must be a power of two`);
  const infos: Array<{ name: string; shape: number[]; type: number; offset: number }> = [];
  const dataPath = tempSiblingPath(path, 'data');
  const outPath = tempSiblingPath(path);
  let dataFd: number | null = openSync(dataPath, 'wx', 0o644);
  let outFd: number | null = null;
  try {
    let dataBytes = 0;
    const seen = new Set<string>();
    const zeros = new Uint8Array(alignment);
    for (const t of tensors) {
      const fail = (what: string): never => {
        throw new Error(`writeGGUF ${path}: tensor ${t.name}: ${what}`);
      };
      if (seen.has(t.name)) fail('given twice');
      seen.add(t.name);
      if (!isSupportedType(t.type)) fail(`type ${ggmlTypeName(t.type)} cannot be written (F32, F16, BF16, Q8_0, Q4_0)`);
      if (t.shape.length < 1 || t.shape.length > 4 || t.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) fail(`invalid shape [${t.shape.join(', ')}] (1 to 4 dims)`);
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (isBlockType(t.type) && t.shape[t.shape.length - 1]! % 32 !== 0) fail(`${ggmlTypeName(t.type)} needs rows that are multiples of 32, shape [${t.shape.join(', ')}]`);
      const need = typeBytes(t.type, n);
      if (t.data.byteLength !== need) fail(`${ggmlTypeName(t.type)} [${t.shape.join(', ')}] needs ${need} bytes, got ${t.data.byteLength}`);
      const offset = pad(dataBytes, alignment);
      if (offset > dataBytes) writeAll(dataFd, zeros.subarray(0, offset - dataBytes));
      writeAll(dataFd, t.data);
      dataBytes = offset + need;
      infos.push({ name: t.name, shape: t.shape.slice(), type: t.type, offset });
    }
    closeSync(dataFd);
    dataFd = null;

    const typed: Record<string, { value: unknown; type: GGUFValueType; subType?: GGUFValueType }> = {
      version: { value: 3, type: GGUFValueType.UINT32 },
      tensor_count: { value: BigInt(infos.length), type: GGUFValueType.UINT64 },
      kv_count: { value: BigInt(metadata.length), type: GGUFValueType.UINT64 },
    };
    for (const [key, e] of metadata) {
      if (key in typed) throw new Error(`writeGGUF ${path}: metadata key ${key} given twice or reserved`);
      typed[key] = e.subType === undefined ? { value: e.value, type: e.type } : { value: e.value, type: e.type, subType: e.subType };
    }
    // alignment 1: the library pads nothing, tensor infos follow the key-value pairs directly.
    const head = serializeGgufMetadata(typed as unknown as GGUFTypedMetadata, { alignment: 1 });
    outFd = openSync(outPath, 'wx', 0o644);
    writeAll(outFd, head);
    let pos = head.byteLength;
    for (const i of infos) {
      const b = tensorInfoBytes(i.name, i.shape, i.type, i.offset);
      writeAll(outFd, b);
      pos += b.byteLength;
    }
    const start = pad(pos, alignment);
    writeAll(outFd, new Uint8Array(start - pos));
    // Copy the side file behind the header.
    const inFd = openSync(dataPath, 'r');
    try {
      const buf = new Uint8Array(Math.min(16 << 20, Math.max(dataBytes, 1)));
      for (let done = 0; done < dataBytes;) {
        const n = readSync(inFd, buf, 0, Math.min(buf.length, dataBytes - done), done);
        if (n === 0) throw new Error('side file shorter than written');
        writeAll(outFd, buf.subarray(0, n));
        done += n;
      }
    } finally {
      closeSync(inFd);
    }
    fsyncSync(outFd);
    closeSync(outFd);
    outFd = null;
    renameSync(outPath, path);
    fsyncDir(dirname(path));
    return { tensorCount: infos.length, bytes: start + dataBytes };
  } catch (e) {
    for (const fd of [dataFd, outFd]) if (fd !== null) try { closeSync(fd); } catch { /* already failing */ }
    try { unlinkSync(outPath); } catch { /* not created or renamed */ }
    throw e;
  } finally {
    try { unlinkSync(dataPath); } catch { /* not created */ }
  }
}
