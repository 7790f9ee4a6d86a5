// `moe convert`: an HF directory or a .gguf file to an HF directory or a GGUF file, tensor by tensor.

import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ParsedArgs } from './args.js';
import { rejectUnknown } from './args.js';
import { openHFDir, writeHFDir, type HFConfig } from '../formats/hf/index.js';
import type { TensorSource } from '../formats/tensor-source.js';
import { MemoryTensorSource } from '../formats/tensor-source.js';
import { byteLevelTokenizerConfig, byteLevelTokenizerJson } from '../formats/hf/byte-tokenizer.js';
import { loadModel } from '../models/load.js';
import { ByteLM } from '../models/lm.js';
import { byteLMToHF, type ByteLMTrainedCounts } from '../models/byte-lm-hf.js';
import { GGUF_WRITE_DTYPES, readGGUFAsHF, writeGGUF, type EncodedTensor, type GGUFTensorSource, type GGUFWriteDType } from '../formats/gguf/index.js';

export const CONVERT_HELP = `moe convert SRC DST --format hf|gguf [--dtype ${GGUF_WRITE_DTYPES.join('|')}] [--arch mixtral|qwen2_moe] [--json]

Converts a MoE decoder (mixtral, qwen2_moe, qwen3_moe, olmoe) between formats, one tensor at a time:
  SRC   an HF directory (config.json, safetensors), a .gguf file, or a moe-ts run (or checkpoint)
        directory of a byte-level LM (model byte-lm with norm rms, positions rope, activation
        swiglu, attentionBias false, softmax top-k routing): written as Mixtral, or as Qwen2-MoE
        when some blocks are dense or the gates are not renormalised, with a bytes-only tokenizer;
        --arch chooses between the two where both fit (a run only)
  DST   a directory (--format hf; created if missing) or a file (--format gguf; replaced atomically)
  --dtype  stored type of the weight matrices (default f32). hf: f32, f16, bf16. gguf: also q8_0 and
           q4_0 (ggml's blocks of 32; norms, biases and routers stay F32 as in llama.cpp's converter).
           GGUF tensors already stored in the chosen type are copied as they are (no requantisation).
GGUF uses llama.cpp's names, stacked experts and tokenizer metadata (byte-level BPE tokenizers).`;

interface Opened {
  config: HFConfig;
  source: TensorSource;
  tokenizerJson: object | null;
  tokenizerConfig: object | null;
  warnings: string[];
}

async function openSource(src: string, arch: string | undefined): Promise<Opened> {
  if (!existsSync(src)) throw new Error(`convert: ${src} does not exist (expected an HF directory or a .gguf file)`);
  const dir = statSync(src).isDirectory();
  if (dir && (existsSync(join(src, 'state.json')) || existsSync(join(src, 'checkpoint', 'state.json')))) return openRun(src, arch);
  if (arch !== undefined) throw new Error(`convert: --arch applies to a moe-ts run as SRC; ${src} keeps its own architecture`);
  if (dir) return { ...openHFDir(src), warnings: [] };
  if (src.toLowerCase().endsWith('.gguf')) return readGGUFAsHF(src);
  throw new Error(`convert: ${src} is neither a directory nor a .gguf file`);
}

/** A moe-ts run of a byte LM, as the HF checkpoint it is equivalent to (byte-lm-hf.ts). */
function openRun(src: string, arch: string | undefined): Opened {
  const loaded = loadModel(src);
  if (!(loaded.model instanceof ByteLM)) {
    throw new Error(`convert: ${src} is a moe-ts run of model type '${loaded.config.model.type}'; only byte-lm runs have an HF MoE layout`);
  }
  // the per-expert training token counts moe train keeps in its trainer state (absent in older runs)
  const counts = (loaded.trainerState as { expertTokenCounts?: ByteLMTrainedCounts } | null)?.expertTokenCounts;
  const x = byteLMToHF(loaded.model, { ...(arch === undefined ? {} : { family: arch }), ...(counts ? { counts } : {}) });
  return {
    config: x.config, source: new MemoryTensorSource(x.tensors, src), warnings: x.warnings,
    tokenizerJson: byteLevelTokenizerJson({ specials: false }), tokenizerConfig: byteLevelTokenizerConfig({ specials: false }),
  };
}

export async function convertCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['format', 'dtype', 'arch', 'json'], 'convert');
  const [, src, dst, extra] = args.positional;
  if (!src || !dst || extra !== undefined) throw new Error('convert: expected SRC and DST (moe convert SRC DST --format hf|gguf)');
  const format = args.flags.get('format')?.[0];
  if (format !== 'hf' && format !== 'gguf') throw new Error(`convert: --format must be hf or gguf, got ${JSON.stringify(format ?? null)}`);
  const dtype = (args.flags.get('dtype')?.[0] ?? 'f32') as GGUFWriteDType;
  if (!GGUF_WRITE_DTYPES.includes(dtype)) throw new Error(`convert: --dtype '${dtype}' is not one of ${GGUF_WRITE_DTYPES.join(', ')}`);
  if (format === 'hf' && (dtype === 'q8_0' || dtype === 'q4_0')) throw new Error(`convert: --dtype ${dtype} needs --format gguf (HF safetensors store f32, f16 or bf16 here)`);

  const t0 = performance.now();
  const opened = await openSource(src, args.flags.get('arch')?.[0]);
  const { config, source } = opened;
  try {
    const raw = 'readRaw' in source ? (source as GGUFTensorSource) : null;
    const want = dtype.toUpperCase();
    // One tensor at a time; stored GGUF blocks of the wanted type go through untouched.
    function* tensors(): Generator<[string, Float32Array | EncodedTensor, number[]]> {
      for (const name of source.names()) {
        const info = source.info(name);
        if (raw && format === 'gguf' && info.dtype === want) yield [name, raw.readRaw(name), info.shape];
        else yield [name, source.read(name), info.shape];
      }
    }
    let result: { tensorCount: number; bytes: number };
    if (format === 'gguf') {
      result = writeGGUF(dst, { config, tensors: tensors(), dtype, tokenizerJson: opened.tokenizerJson, tokenizerConfig: opened.tokenizerConfig });
    } else {
      if (!existsSync(dst)) mkdirSync(dst, { recursive: true });
      const floats = function* (): Generator<[string, Float32Array, number[]]> {
        for (const name of source.names()) yield [name, source.read(name), source.info(name).shape];
      };
      const r = writeHFDir(dst, {
        config, tensors: floats(), dtype: dtype.toUpperCase() as 'F32' | 'F16' | 'BF16', tokenizerJson: opened.tokenizerJson, tokenizerConfig: opened.tokenizerConfig,
      });
      result = { tensorCount: r.tensorCount, bytes: r.totalBytes };
    }
    const seconds = (performance.now() - t0) / 1000;
    for (const w of opened.warnings) console.error(`convert: warning: ${w}`);
    if (args.flags.has('json')) {
      console.log(JSON.stringify({ src, dst, format, dtype, modelType: config.model_type, tensors: result.tensorCount, bytes: result.bytes, seconds, warnings: opened.warnings }));
    } else {
      console.log(`${config.model_type}: ${result.tensorCount} tensors, ${(result.bytes / 1e6).toFixed(1)} MB (${format}, ${dtype}) in ${seconds.toFixed(1)} s -> ${dst}`);
    }
    return 0;
  } finally {
    source.close();
  }
}
