// Loads a MoE decoder language model from an HF directory or a .gguf file, with its tokenizer files.

import { existsSync, statSync } from 'node:fs';
import { openHFDir } from '../formats/hf/index.js';
import { readGGUFAsHF } from '../formats/gguf/index.js';
import type { HFConfig } from '../formats/hf/config.js';
import type { TensorSource } from '../formats/tensor-source.js';
import { fromHF } from './moe-decoder-hf.js';
import { LOAD_DTYPES, type LoadDType } from './moe-decoder-weights.js';
import type { MoEDecoder } from './moe-decoder.js';
import { offloadExperts } from '../infer/expert-offload.js';
import { KV_CACHE_DTYPES, type KVCacheDtype } from '../nn/kv-cache.js';
import type { ExpertCache } from '../infer/expert-cache.js';
import type { ExpertPolicy } from '../infer/expert-slots.js';
import type { LowPrecisionOptions } from '../infer/expert-low-precision.js';

export interface LoadedLM {
  model: MoEDecoder;
  tokenizerJson: object | null;
  tokenizerConfig: object | null;
  /** Which reader loaded it: 'hf' (a directory) or 'gguf'. */
  source: 'hf' | 'gguf';
  /** What the reader could not carry over (e.g. a GGUF tokenizer without a tokenizer.json form). */
  warnings: string[];
  /** The dtype the weights are held in. */
  dtype: LoadDType;
  /** With expertMemory: the routed experts' cache (stats, close); null when every expert is resident. */
  expertCache: ExpertCache | null;
}

interface Opened {
  config: HFConfig;
  source: TensorSource;
  tokenizerJson: object | null;
  tokenizerConfig: object | null;
  warnings?: string[];
}

export interface LoadLMOptions {
  /**
   * Weights in memory. Default: f32, except a GGUF whose expert weights are stored Q8_0 or Q4_0,
   * which keeps that type (its blocks as stored). f32 dequantises such a GGUF; f16/bf16: rounded to that
   * type and held as float32 (no f16 kernel: same speed and memory as f32, f16 numerics);
   * q8_0/q4_0: matrices quantised tensor by tensor as they are read (a GGUF's blocks of the same
   * type are kept as stored), products through quantMatmul (see MoEDecoder's constructor for
   * which tensors stay float32).
   */
  dtype?: LoadDType;
  /**
   * Routed experts resident at most: bytes (> 1) or a fraction of all expert bytes (0 < f <= 1).
   * The rest stay in the model file (kept open for the model's life) and are read into a fixed
   * pool of slots per MoE layer on demand; everything else is resident. The experts are read as
   * stored, so dtype must be the file's expert type. Absent: every expert resident.
   */
  expertMemory?: number;
  /** Which expert leaves a full pool: 'lru' (default), 'lfu', or 'pregate' (lru + the next layer's router loads its predicted experts ahead). */
  expertPolicy?: ExpertPolicy;
  /** With expertMemory: resident Q4_0 copies of every expert, used for unimportant misses (HOBBIT; src/infer/expert-low-precision.ts). */
  expertLowPrecision?: LowPrecisionOptions;
  /** With expertMemory: misses read by a reader thread ('thread') or on the calling thread ('sync', default). */
  expertReader?: 'thread' | 'sync';
  /** Element type of the model's KV caches (MoEDecoder.kvCacheDtype): 'float32' (default) or 'float16'. */
  kvDtype?: KVCacheDtype;
}

/** A directory -> HF reader; a .gguf file -> GGUF reader (HF names and layouts). Weights are read one tensor at a time. */
export async function loadLM(pathOrDir: string, opts: LoadLMOptions = {}): Promise<LoadedLM> {
  if (opts.dtype !== undefined && !LOAD_DTYPES.includes(opts.dtype)) throw new Error(`loadLM: dtype '${String(opts.dtype)}' is not one of ${LOAD_DTYPES.join(', ')}`);
  if (!existsSync(pathOrDir)) throw new Error(`${pathOrDir}: no such file or directory (expected an HF model directory or a .gguf file)`);
  const isDir = statSync(pathOrDir).isDirectory();
  if (!isDir && !pathOrDir.toLowerCase().endsWith('.gguf')) throw new Error(`${pathOrDir}: not a directory and not a .gguf file`);
  const opened: Opened = isDir ? openHFDir(pathOrDir) : await readGGUFAsHF(pathOrDir);
  try {
    const dtype = opts.dtype ?? (isDir ? 'f32' : storedExpertType(opened.source));
    const offload = opts.expertMemory !== undefined;
    if (!offload && opts.expertPolicy !== undefined) throw new Error('loadLM: expertPolicy needs expertMemory (the budget it manages)');
    if (!offload && opts.expertLowPrecision !== undefined) throw new Error('loadLM: expertLowPrecision needs expertMemory (the copies are counted against it)');
    if (!offload && opts.expertReader !== undefined) throw new Error('loadLM: expertReader needs expertMemory (it reads the experts left in the file)');
    if (opts.expertReader !== undefined && opts.expertReader !== 'thread' && opts.expertReader !== 'sync') throw new Error(`loadLM: expertReader '${String(opts.expertReader)}' is not one of thread, sync`);
    if (offload && (dtype === 'f16' || dtype === 'bf16')) throw new Error(`loadLM: dtype ${dtype} rounds weights at load, but offloaded experts are read as stored; use f32, q8_0 or q4_0 matching the file`);
    if (opts.kvDtype !== undefined && !KV_CACHE_DTYPES.includes(opts.kvDtype)) throw new Error(`loadLM: kvDtype '${String(opts.kvDtype)}' is not one of ${KV_CACHE_DTYPES.join(', ')}`);
    const model = fromHF(opened.config, opened.source, isDir ? `${pathOrDir}/config.json` : `${pathOrDir} (metadata)`, { dtype, skipExperts: offload });
    if (opts.kvDtype !== undefined) model.kvCacheDtype = opts.kvDtype;
    const expertCache = offload
      ? offloadExperts(model, opened.source, {
        expertMemory: opts.expertMemory!, ...(opts.expertPolicy !== undefined ? { policy: opts.expertPolicy } : {}),
        lowPrecision: opts.expertLowPrecision ?? null, asyncLoads: opts.expertReader === 'thread',
      })
      : null;
    return { model, tokenizerJson: opened.tokenizerJson, tokenizerConfig: opened.tokenizerConfig, source: isDir ? 'hf' : 'gguf', warnings: opened.warnings ?? [], dtype, expertCache };
  } finally {
    opened.source.close();
  }
}

/** q8_0 / q4_0 when the source's expert weights are stored in that block format, else f32. */
function storedExpertType(source: TensorSource): LoadDType {
  const name = source.names().find((n) => /\.experts\.\d+\./.test(n));
  const t = name === undefined ? '' : source.info(name).dtype.toLowerCase();
  return t === 'q8_0' || t === 'q4_0' ? t : 'f32';
}
