// Loads a MoE decoder language model from an HF directory or a .gguf file, with its tokenizer files.

import { existsSync, statSync } from 'node:fs';
import { openHFDir } from '../formats/hf/index.js';
import { readGGUFAsHF } from '../formats/gguf/index.js';
import type { HFConfig } from '../formats/hf/config.js';
import type { TensorSource } from '../formats/tensor-source.js';
import { fromHF } from './moe-decoder-hf.js';
import type { MoEDecoder } from './moe-decoder.js';

export interface LoadedLM {
  model: MoEDecoder;
  tokenizerJson: object | null;
  tokenizerConfig: object | null;
  /** Which reader loaded it: 'hf' (a directory) or 'gguf'. */
  source: 'hf' | 'gguf';
  /** What the reader could not carry over (e.g. a GGUF tokenizer without a tokenizer.json form). */
  warnings: string[];
}

interface Opened {
  config: HFConfig;
  source: TensorSource;
  tokenizerJson: object | null;
  tokenizerConfig: object | null;
  warnings?: string[];
}

/** A directory -> HF reader; a .gguf file -> GGUF reader (HF names and layouts). Weights are read one tensor at a time. */
export async function loadLM(pathOrDir: string): Promise<LoadedLM> {
  if (!existsSync(pathOrDir)) throw new Error(`${pathOrDir}: no such file or directory (expected an HF model directory or a .gguf file)`);
  const isDir = statSync(pathOrDir).isDirectory();
  if (!isDir && !pathOrDir.toLowerCase().endsWith('.gguf')) throw new Error(`${pathOrDir}: not a directory and not a .gguf file`);
  const opened: Opened = isDir ? openHFDir(pathOrDir) : await readGGUFAsHF(pathOrDir);
  try {
    const model = fromHF(opened.config, opened.source, isDir ? `${pathOrDir}/config.json` : `${pathOrDir} (metadata)`);
    return { model, tokenizerJson: opened.tokenizerJson, tokenizerConfig: opened.tokenizerConfig, source: isDir ? 'hf' : 'gguf', warnings: opened.warnings ?? [] };
  } finally {
    opened.source.close();
  }
}
