// HF model directories: open (config, tensors read on demand, tokenizer files) and write.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseHFConfig, type HFConfig } from './config.js';
import { SafetensorsSource } from './safetensors-source.js';
import type { TensorSource } from '../tensor-source.js';

export * from './config.js';
export * from './names.js';
export * from './write.js';
export { SafetensorsSource } from './safetensors-source.js';

export interface HFDir {
  config: HFConfig;
  source: TensorSource;
  tokenizerJson: object | null;
  tokenizerConfig: object | null;
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

function optionalJson(path: string): object | null {
  if (!existsSync(path)) return null;
  const v = readJson(path);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: must hold a JSON object`);
  return v;
}

/** Opens an HF directory: config.json parsed and checked, tensors located (headers only; data read per tensor). */
export function openHFDir(dir: string): HFDir {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir}: not a directory (expected an HF model directory with config.json)`);
  const cfgPath = join(dir, 'config.json');
  if (!existsSync(cfgPath)) throw new Error(`${dir}: no config.json`);
  const config = parseHFConfig(readJson(cfgPath), cfgPath);
  const source = SafetensorsSource.openDir(dir);
  return { config, source, tokenizerJson: optionalJson(join(dir, 'tokenizer.json')), tokenizerConfig: optionalJson(join(dir, 'tokenizer_config.json')) };
}
