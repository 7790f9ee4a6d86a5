// Writes an HF model directory (config.json, safetensors shards + index, tokenizer files) streaming, one tensor at a time.

import { closeSync, existsSync, fsyncSync, openSync, readdirSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, tempSiblingPath, writeFileAtomic } from '../../io/atomic.js';
import { safetensorsHeaderBytes } from '../../io/safetensors.js';
import { INDEX_FILE, SINGLE_FILE } from './safetensors-source.js';
import { encodeFloats, type WriteDType } from './encode.js';

export interface HFWriteInput {
  /** config.json contents, written as given. */
  config: Record<string, unknown>;
  /** HF names, data (row-major f32) and HF shapes, consumed one at a time. */
  tensors: Iterable<[string, Float32Array, number[]]>;
  /** Stored element type (default F32). */
  dtype?: WriteDType;
  tokenizerJson?: object | null;
  tokenizerConfig?: object | null;
  /** A shard is closed before it would pass this many bytes (default 2 GiB; HF's default is 5 GB). */
  maxShardBytes?: number;
}

export interface HFWriteResult {
  files: string[];
  tensorCount: number;
  totalBytes: number;
}

const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;
const CHUNK = 16 << 20;

interface ShardEntry { name: string; dtype: string; shape: number[]; begin: number; end: number }

/** One shard being written: data goes to a side file first, since the header (written first) is known only at the end. */
class ShardWriter {
  readonly entries: ShardEntry[] = [];
  bytes = 0;
  private readonly dataPath: string;
  private fd: number;

  constructor(readonly dir: string) {
    this.dataPath = tempSiblingPath(join(dir, 'shard.data'));
    this.fd = openSync(this.dataPath, 'wx', 0o644);
  }

  add(name: string, dtype: string, shape: number[], bytes: Uint8Array): void {
    writeAll(this.fd, bytes);
    this.entries.push({ name, dtype, shape, begin: this.bytes, end: this.bytes + bytes.byteLength });
    this.bytes += bytes.byteLength;
  }

  /** Writes header + data to a temp file beside the final one; returns its path (renamed later). */
  finish(): string {
    closeSync(this.fd);
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    for (const e of this.entries) {
      // defineProperty: a tensor called '__proto__' must become a key, not a prototype
      Object.defineProperty(header, e.name, { value: { dtype: e.dtype, shape: e.shape, data_offsets: [e.begin, e.end] }, enumerable: true, writable: true, configurable: true });
    }
    const head = safetensorsHeaderBytes(header);
    const out = tempSiblingPath(join(this.dir, 'shard.safetensors'));
    const ofd = openSync(out, 'wx', 0o644);
    const ifd = openSync(this.dataPath, 'r');
    try {
      writeAll(ofd, head);
      const buf = Buffer.allocUnsafe(CHUNK);
      let pos = 0;
      for (;;) {
        const got = readSync(ifd, buf, 0, CHUNK, pos);
        if (got === 0) break;
        writeAll(ofd, buf.subarray(0, got));
        pos += got;
      }
      if (pos !== this.bytes) throw new Error(`shard data file ${this.dataPath} holds ${pos} bytes, expected ${this.bytes}`);
      fsyncSync(ofd);
    } finally {
      closeSync(ofd);
      closeSync(ifd);
      unlinkSync(this.dataPath);
    }
    return out;
  }

  abort(): void {
    try { closeSync(this.fd); } catch { /* already closed */ }
    try { unlinkSync(this.dataPath); } catch { /* already gone */ }
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
}

/**
 * Writes an HF directory: config.json, model.safetensors (or model-0000i-of-0000N.safetensors
 * with model.safetensors.index.json when past maxShardBytes), tokenizer.json and
 * tokenizer_config.json when given. Memory use is one tensor; each file appears atomically; weight
 * files of an earlier write in dir that this one does not produce are removed.
 */
export function writeHFDir(dir: string, input: HFWriteInput): HFWriteResult {
  const dtype = input.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new Error(`writeHFDir: dtype ${String(dtype)} is not one of F32, F16, BF16`);
  const maxShard = input.maxShardBytes ?? 2 * 1024 ** 3;
  if (!(maxShard > 0)) throw new Error(`writeHFDir: maxShardBytes must be > 0, got ${maxShard}`);
  if (!existsSync(dir)) throw new Error(`writeHFDir: directory ${dir} does not exist`);

  const done: Array<{ temp: string; entries: ShardEntry[]; bytes: number }> = [];
  let shard: ShardWriter | null = null;
  const seen = new Set<string>();
  let totalBytes = 0;
  try {
    for (const [name, data, shape] of input.tensors) {
      if (seen.has(name)) throw new Error(`writeHFDir: tensor ${name} given twice`);
      seen.add(name);
      const numel = shape.reduce((a, b) => a * b, 1);
      if (!shape.every((d) => Number.isInteger(d) && d >= 0) || numel !== data.length) {
        throw new Error(`writeHFDir: tensor ${name} has ${data.length} values but shape [${shape.join(', ')}]`);
      }
      const bytes = encodeFloats(data, dtype);
      if (shard && shard.entries.length > 0 && shard.bytes + bytes.byteLength > maxShard) {
        done.push({ temp: shard.finish(), entries: shard.entries, bytes: shard.bytes });
        shard = null;
      }
      shard ??= new ShardWriter(dir);
      shard.add(name, dtype, shape.slice(), bytes);
      totalBytes += bytes.byteLength;
    }
    shard ??= new ShardWriter(dir);
    done.push({ temp: shard.finish(), entries: shard.entries, bytes: shard.bytes });
    shard = null;
  } catch (e) {
    shard?.abort();
    for (const d of done) { try { unlinkSync(d.temp); } catch { /* gone */ } }
    throw e;
  }

  const N = done.length;
  const pad = (i: number): string => String(i).padStart(5, '0');
  const names = N === 1 ? [SINGLE_FILE] : done.map((_, i) => `model-${pad(i + 1)}-of-${pad(N)}.safetensors`);
  for (const f of readdirSync(dir)) {
    if ((f === SINGLE_FILE || f === INDEX_FILE || SHARD_RE.test(f)) && !names.includes(f)) unlinkSync(join(dir, f));
  }
  done.forEach((d, i) => renameSync(d.temp, join(dir, names[i]!)));
  if (N > 1) {
    const weightMap: Record<string, string> = {};
    done.forEach((d, i) => { for (const e of d.entries) Object.defineProperty(weightMap, e.name, { value: names[i]!, enumerable: true, writable: true, configurable: true }); });
    writeFileAtomic(join(dir, INDEX_FILE), `${JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: weightMap }, null, 2)}\n`);
  }
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(input.config, null, 2)}\n`);
  if (input.tokenizerJson) writeFileAtomic(join(dir, 'tokenizer.json'), JSON.stringify(input.tokenizerJson));
  if (input.tokenizerConfig) writeFileAtomic(join(dir, 'tokenizer_config.json'), `${JSON.stringify(input.tokenizerConfig, null, 2)}\n`);
  fsyncDir(dir);
  return { files: names.map((n) => join(dir, n)), tensorCount: seen.size, totalBytes };
}
