// A GGUF file seen as HF tensors: HF names and [out, in] shapes, stacked experts split per expert,
// llama's RoPE row permutation undone; read() converts to f32, readRaw() hands out the stored bytes
// (Q8_0/Q4_0 blocks stay quantised).

import type { HFConfig, HFModelType } from '../hf/config.js';
import type { TensorInfo, TensorLocation, TensorSource } from '../tensor-source.js';
import { halfTable } from '../../tensor/half.js';
import { LITTLE_ENDIAN_HOST } from '../../io/safetensors.js';
import { dequantizeArray } from '../../tensor/quant-blocks.js';
import { GGML, typeBytes } from './constants.js';
import { ggufToHF, permuteRows, ropePermuteHeads } from './arch.js';
import { GGUFError, type GGUFFile, type GGUFTensor } from './read.js';

interface Entry {
  tensor: GGUFTensor;
  /** Expert index within a stacked tensor, or null. */
  expert: number | null;
  shape: number[];
  /** Heads to undo the RoPE row permutation with (0: none). */
  permuteHeads: number;
}

/** Stored bytes of one HF tensor. */
export interface RawTensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

export function decodeToF32(type: number, typeName: string, bytes: Uint8Array, n: number, where: string): Float32Array {
  switch (type) {
    case GGML.F32: {
      if (LITTLE_ENDIAN_HOST) return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + n * 4));
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      return Float32Array.from({ length: n }, (_, i) => dv.getFloat32(i * 4, true));
    }
    case GGML.F16: {
      const half = halfTable();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = half[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
      return out;
    }
    case GGML.BF16: {
      const out = new Float32Array(n);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = ((bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16) >>> 0;
      return out;
    }
    case GGML.Q8_0: return dequantizeArray('q8_0', bytes, n);
    case GGML.Q4_0: return dequantizeArray('q4_0', bytes, n);
    default: throw new Error(`${where}: type ${typeName} cannot be converted to f32 (F32, F16, BF16, Q8_0, Q4_0)`);
  }
}

export class GGUFTensorSource implements TensorSource {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly file: GGUFFile, family: HFModelType, config: HFConfig) {
    for (const t of file.tensors.values()) {
      // a tied model's output.weight is a copy of token_embd (see TIED_KEY): the HF view has no lm_head
      if (t.name === 'output.weight' && config['tie_word_embeddings'] === true) continue;
      const map = ggufToHF(family, t.name);
      if (!map) throw new GGUFError(file.path, `tensor ${t.name} has no HF counterpart for ${family} (unexpected in this architecture)`);
      const permuteHeads = ropePermuteHeads(family, t.name, config);
      if (map.stacked) {
        if (t.shape.length !== 3) throw new GGUFError(file.path, `tensor ${t.name}: stacked experts must be [E, out, in], got [${t.shape.join(', ')}]`);
        const [e, out, inn] = t.shape as [number, number, number];
        for (let x = 0; x < e; x++) this.entries.set(map.name(x), { tensor: t, expert: x, shape: [out, inn], permuteHeads: 0 });
      } else {
        // llama.cpp may store Qwen2's shared-expert gate as [hidden]; HF's is [1, hidden].
        const shape = /\.ffn_gate_inp_shexp\.weight$/.test(t.name) && t.shape.length === 1 ? [1, t.shape[0]!] : t.shape.slice();
        this.entries.set(map.name(0), { tensor: t, expert: null, shape, permuteHeads });
      }
    }
  }

  get path(): string {
    return this.file.path;
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`tensor ${name} not found in ${this.file.path} (GGUF, ${this.entries.size} tensors as HF names)`);
    return e;
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { name, dtype: e.tensor.typeName, shape: e.shape.slice(), file: this.file.path };
  }

  /** The GGUF tensor behind an HF name (stacked expert tensors for one expert). */
  ggufTensor(name: string): GGUFTensor {
    return this.entry(name).tensor;
  }

  readRaw(name: string): RawTensor {
    const e = this.entry(name);
    const t = e.tensor;
    const n = e.shape.reduce((a, b) => a * b, 1);
    if (t.bytes < 0) throw new GGUFError(this.file.path, `tensor ${t.name} (${name}): type ${t.typeName} is not supported (F32, F16, BF16, Q8_0, Q4_0)`);
    const bytes = typeBytes(t.type, n);
    let data = this.file.readBytes(t, e.expert === null ? 0 : e.expert * bytes, bytes);
    if (e.permuteHeads > 0) {
      const rows = e.shape[0]!;
      data = permuteRows(data, rows, bytes / rows, e.permuteHeads, false);
    }
    return { dtype: t.typeName, shape: e.shape.slice(), data };
  }

  /** The stored bytes' range (an expert's slice of a stacked tensor); null for rows stored permuted or an unsupported type. */
  locate(name: string): TensorLocation | null {
    const e = this.entry(name);
    const t = e.tensor;
    if (t.bytes < 0 || e.permuteHeads > 0) return null;
    const bytes = typeBytes(t.type, e.shape.reduce((a, b) => a * b, 1));
    return { file: this.file.path, offset: t.position + (e.expert ?? 0) * bytes, bytes, dtype: t.typeName };
  }

  read(name: string): Float32Array {
    const raw = this.readRaw(name);
    const t = this.entry(name).tensor;
    const n = raw.data.length === 0 ? 0 : raw.shape.reduce((a, b) => a * b, 1);
    // readRaw's bytes are a fresh buffer of their own (file read or row permutation): F32 is viewed, not copied a second time
    if (t.type === GGML.F32 && LITTLE_ENDIAN_HOST) return new Float32Array(raw.data.buffer, raw.data.byteOffset, n);
    return decodeToF32(t.type, t.typeName, raw.data, n, `${this.file.path}: tensor ${name}`);
  }

  close(): void {
    this.file.close();
  }
}
