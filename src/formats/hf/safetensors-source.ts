// A TensorSource over one safetensors file or an HF shard set: headers only at open, each tensor read by offset when asked for.

import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LITTLE_ENDIAN_HOST, decodeSafetensorsEntry, readFullyAt, readSafetensorsHeader, type SafetensorsEntry } from '../../io/safetensors.js';
import type { TensorInfo, TensorLocation, TensorSource } from '../tensor-source.js';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

const CONVERTIBLE = new Set(['F32', 'F16', 'BF16', 'F64']);

interface Located {
  entry: SafetensorsEntry;
  file: string;
  fd: number;
}

export class SafetensorsSource implements TensorSource {
  private readonly tensors = new Map<string, Located>();
  private readonly fds: number[] = [];
  private closed = false;
  /** The files opened, for error messages. */
  readonly files: string[];

  /** files: safetensors paths; weightMap (from an index) pins each listed tensor to its file. */
  constructor(files: string[], weightMap: Record<string, string> | null = null, indexFile = '') {
    this.files = files;
    try {
      for (const file of files) {
        let fd: number;
        try {
          fd = openSync(file, 'r');
        } catch (e) {
          const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : (e as Error).message;
          throw new Error(`${file}: cannot open (${why})${indexFile ? `; it is named in ${indexFile}` : ''}`);
        }
        this.fds.push(fd);
        for (const entry of readSafetensorsHeader(fd, file).entries) {
          const prev = this.tensors.get(entry.name);
          if (prev) throw new Error(`tensor ${entry.name} is stored twice: in ${prev.file} and in ${file}`);
          this.tensors.set(entry.name, { entry, file, fd });
        }
      }
      if (weightMap) {
        for (const [name, shard] of Object.entries(weightMap)) {
          const t = this.tensors.get(name);
          if (!t) throw new Error(`${indexFile}: tensor ${name} is mapped to ${shard}, but ${shard}'s header has no such tensor`);
          if (basename(t.file) !== shard) throw new Error(`${indexFile}: tensor ${name} is mapped to ${shard}, but it is stored in ${basename(t.file)}`);
        }
        for (const name of this.tensors.keys()) {
          if (!Object.hasOwn(weightMap, name)) throw new Error(`${indexFile}: no weight_map entry for tensor ${name} (stored in ${basename(this.tensors.get(name)!.file)})`);
        }
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** model.safetensors, or the shards listed by model.safetensors.index.json, in dir. */
  static openDir(dir: string): SafetensorsSource {
    const index = join(dir, INDEX_FILE);
    if (existsSync(index)) {
      let json: unknown;
      try {
        json = JSON.parse(readFileSync(index, 'utf8'));
      } catch (e) {
        throw new Error(`${index}: not valid JSON (${(e as Error).message})`);
      }
      const wm = (json as { weight_map?: unknown } | null)?.weight_map;
      if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new Error(`${index}: weight_map must be an object mapping tensor names to shard files`);
      const map = wm as Record<string, unknown>;
      for (const [name, f] of Object.entries(map)) {
        if (typeof f !== 'string' || f.includes('/') || f.includes('\\') || f === '' || f === '.' || f === '..') {
          throw new Error(`${index}: weight_map entry for tensor ${name} must be a file name in the same directory, got ${JSON.stringify(f)}`);
        }
      }
      const shards = [...new Set(Object.values(map) as string[])].sort();
      return new SafetensorsSource(shards.map((s) => join(dir, s)), map as Record<string, string>, index);
    }
    const single = join(dir, SINGLE_FILE);
    if (!existsSync(single)) throw new Error(`${dir}: neither ${SINGLE_FILE} nor ${INDEX_FILE} found`);
    return new SafetensorsSource([single]);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  private find(name: string): Located {
    if (this.closed) throw new Error(`tensor ${name}: the tensor source (${this.files.join(', ')}) is closed`);
    const t = this.tensors.get(name);
    if (!t) throw new Error(`tensor ${name} not found in ${this.files.join(', ')}`);
    return t;
  }

  info(name: string): TensorInfo {
    const { entry, file } = this.find(name);
    return { name, dtype: entry.dtype, shape: entry.shape.slice(), file };
  }

  /** The tensor's byte range in its shard (absolute offsets), as stored. */
  locate(name: string): TensorLocation {
    const { entry, file } = this.find(name);
    return { file, offset: entry.begin, bytes: entry.end - entry.begin, dtype: entry.dtype };
  }

  read(name: string): Float32Array {
    const { entry, file, fd } = this.find(name);
    if (!CONVERTIBLE.has(entry.dtype)) throw new Error(`${file}: tensor ${name} has dtype ${entry.dtype}; readable as f32: ${[...CONVERTIBLE].join(', ')}`);
    const n = entry.end - entry.begin;
    if (entry.dtype === 'F32' && LITTLE_ENDIAN_HOST) {
      // straight into the result's own buffer: no intermediate copy of a large tensor
      const out = new Float32Array(n / 4);
      readFully(fd, new Uint8Array(out.buffer), entry.begin, file, name);
      return out;
    }
    const bytes = new Uint8Array(n);
    readFully(fd, bytes, entry.begin, file, name);
    const t = decodeSafetensorsEntry(entry, bytes, file);
    return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fds) {
      try { closeSync(fd); } catch { /* closing is best effort */ }
    }
  }
}

function readFully(fd: number, buf: Uint8Array, position: number, file: string, name: string): void {
  readFullyAt(fd, buf, position, (at) => new Error(`${file}: tensor ${name}: file ends at byte ${at}, inside the tensor's bytes [${position}, ${position + buf.byteLength}) (truncated file?)`));
}
