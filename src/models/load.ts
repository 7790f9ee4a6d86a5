// Using a trained model: loadModel(dir) gives the model of a run or checkpoint directory in eval
// mode, with the preprocessing its training applied and the names of its classes.
//
// The preprocessing is not a separate record in the checkpoint: a checkpoint stores its run config,
// and data.dataset with data.normalize determine the statistics through the one table that
// training reads too (data/image-datasets.ts). So every checkpoint ever written carries it.

import { loadWeightsWithGrowth, hasGrowSchedule } from './checkpoint-growth.js';
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Module } from '../nn/module.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { validateRun, type RunConfig } from '../config/run.js';
import { loadCheckpoint } from './checkpoint.js';
import { FASHION_MNIST_COARSE_CLASSES } from '../data/mnist.js';
import { bytesToImages, type Normalize } from '../data/batches.js';
import { imageDatasetInfo, imageNormalization, isImageDataset } from '../data/image-datasets.js';
import { buildModel, type ImageClassifier, type TaskKind } from './registry.js';
import type { MMoE } from './mmoe.js';

/** One image as the model takes it: channels x height x width, CHW order. */
export interface ImageGeometry {
  channels: number;
  height: number;
  width: number;
}

/** One output of a classifier: a single one for plain classifiers, one per task for MMoE. */
export interface ClassifierHead {
  name: string;
  classes: number;
  /** Class names by index, when the dataset defines them. */
  classNames?: readonly string[];
}

export interface PreprocessOptions {
  /** The value of a full-intensity pixel in the input (default 255: bytes; 1 for values already in [0, 1]). */
  scale?: number;
}

export interface LoadedModel {
  /** In eval mode (dropout off, no capacity noise); call model.train() to fine-tune. */
  model: Module;
  config: RunConfig;
  task: TaskKind;
  /** The checkpoint directory the weights came from. */
  dir: string;
  /** Training step of the checkpoint, when recorded. */
  step: number | null;
  /** The checkpoint's trainer state as saved (step, epoch, expertTokenCounts, ...), or null. */
  trainerState: unknown;
  /** The image an image model takes; null for language models. */
  input: ImageGeometry | null;
  /** The statistics applied after scaling pixels to [0, 1]; null when the run trained on plain [0, 1] pixels. */
  normalize: Normalize | null;
  /** The model's outputs (empty for language models). */
  heads: ClassifierHead[];
  /** Class names of a single-head classifier, when its dataset names them. */
  classes?: readonly string[];
  /**
   * Pixels -> the model's input [n, C*H*W]: scaled to [0, 1] and normalised exactly as in training.
   * `pixels` holds n images back to back, each CHW, values in [0, scale].
   */
  preprocess(pixels: ArrayLike<number>, opts?: PreprocessOptions): Tensor;
  /** Logits [n, classes] per head for preprocessed images, without recording gradients. */
  logits(x: Tensor): Tensor[];
}

/** A run directory holds its checkpoint in checkpoint/; accept either. */
function checkpointDir(dir: string): string {
  const d = resolve(dir);
  if (!existsSync(d)) throw new Error(`loadModel: ${d} does not exist`);
  if (!statSync(d).isDirectory()) throw new Error(`loadModel: ${d} is a file; give a run directory or its checkpoint/ directory`);
  if (existsSync(join(d, 'checkpoint', 'state.json'))) return join(d, 'checkpoint');
  if (existsSync(join(d, 'state.json'))) return d;
  throw new Error(`loadModel: ${d} holds no checkpoint (neither state.json nor checkpoint/state.json)`);
}

function geometryOf(config: RunConfig, options: Record<string, unknown>): ImageGeometry | null {
  const data = isImageDataset(config.data.dataset) ? imageDatasetInfo(config.data.dataset) : null;
  switch (config.model.type) {
    case 'softmoe-classifier': {
      const s = options['imageSize'] as number;
      return { channels: 1, height: s, width: s };
    }
    case 'vit-moe': {
      const s = options['imageSize'] as number;
      return { channels: options['channels'] as number, height: s, width: s };
    }
    case 'mmoe': {
      const d = options['inputDim'] as number;
      if (data && data.channels * data.height * data.width === d) return { channels: data.channels, height: data.height, width: data.width };
      const side = Math.round(Math.sqrt(d));
      return side * side === d ? { channels: 1, height: side, width: side } : { channels: 1, height: 1, width: d };
    }
    default:
      return null;
  }
}

function headsOf(config: RunConfig, options: Record<string, unknown>, task: TaskKind): ClassifierHead[] {
  const names = isImageDataset(config.data.dataset) ? imageDatasetInfo(config.data.dataset).classNames : undefined;
  const head = (name: string, classes: number, classNames: readonly string[] | undefined): ClassifierHead =>
    (classNames && classNames.length === classes ? { name, classes, classNames } : { name, classes });
  if (task === 'image-classification') return [head('class', options['classes'] as number, names)];
  if (task === 'multitask-classification') {
    return (options['tasks'] as Array<{ name: string; classes: number }>).map((t) =>
      head(t.name, t.classes, t.name === 'coarse' && config.data.dataset === 'fashion-mnist' ? FASHION_MNIST_COARSE_CLASSES : t.name === 'fine' ? names : undefined));
  }
  return [];
}

/**
 * Loads the model of a run directory (or its checkpoint/ directory) for use: weights (loadCheckpoint
 * refuses non-finite ones), eval mode, and the preprocessing of its training. The optimizer state is not read and
 * need not be there.
 */
export function loadModel(dir: string): LoadedModel {
  const ckptDir = checkpointDir(dir);
  const ckpt = loadCheckpoint(ckptDir, { optimizer: false });
  let config: RunConfig;
  try {
    config = validateRun(ckpt.config);
  } catch (e) {
    throw new Error(`loadModel ${ckptDir}: config.json: ${(e as Error).message}`, { cause: e });
  }
  const { model, spec, options } = buildModel(config.model, config.train.seed);
  // a run with a grow schedule saved more experts than its config builds: grow to the file's count
  loadWeightsWithGrowth(model, ckpt.model, { grow: hasGrowSchedule(config.model) });
  model.eval();
  const input = geometryOf(config, options);
  const normalize = input && isImageDataset(config.data.dataset) ? imageNormalization(config.data) : null;
  const heads = headsOf(config, options, spec.task);
  const step = (ckpt.trainerState as { step?: unknown } | null)?.step;

  const preprocess = (pixels: ArrayLike<number>, opts: PreprocessOptions = {}): Tensor => {
    if (!input) throw new Error(`preprocess: model ${config.model.type} takes token ids, not images`);
    const scale = opts.scale ?? 255;
    if (!(scale > 0 && Number.isFinite(scale))) throw new Error(`preprocess: scale must be a positive number, got ${scale}`);
    const per = input.channels * input.height * input.width;
    if (pixels.length === 0 || pixels.length % per !== 0) {
      throw new Error(`preprocess: ${pixels.length} values are not a whole number of ${input.channels}x${input.height}x${input.width} images (${per} values each)`);
    }
    for (let i = 0; i < pixels.length; i++) {
      const v = pixels[i]!;
      if (!(v >= 0 && v <= scale)) throw new Error(`preprocess: pixel ${i} (image ${Math.floor(i / per)}) is ${v}, outside [0, ${scale}]`);
    }
    const n = pixels.length / per;
    const plane = input.height * input.width;
    // Bytes take training's own path (bytesToImages), so the values are bit-identical to the training data's.
    const bytes = scale === 255 && (pixels instanceof Uint8Array || Array.prototype.every.call(pixels, (v: number) => Number.isInteger(v)));
    const x = bytes ? bytesToImages(Uint8Array.from(pixels), input.channels, plane, normalize ?? undefined) : scaleFloats(pixels, scale, input.channels, plane, normalize);
    return new Tensor(x, [n, per]);
  };

  const logits = (x: Tensor): Tensor[] => noGrad(() => {
    if (spec.task === 'image-classification') return [(model as ImageClassifier).classify(x).logits];
    if (spec.task === 'multitask-classification') return (model as unknown as MMoE).forward(x).logits;
    throw new Error(`logits: model ${config.model.type} is a language model, not a classifier`);
  });

  const loaded: LoadedModel = {
    model, config, task: spec.task, dir: ckptDir, step: typeof step === 'number' ? step : null, trainerState: ckpt.trainerState ?? null,
    input, normalize, heads, preprocess, logits,
  };
  if (heads.length === 1 && heads[0]!.classNames) loaded.classes = heads[0]!.classNames;
  return loaded;
}

/** The arithmetic of bytesToImages for values that are not bytes: (v / scale - mean) / std per channel. */
function scaleFloats(pixels: ArrayLike<number>, scale: number, channels: number, plane: number, normalize: Normalize | null): Float32Array {
  const out = new Float32Array(pixels.length);
  const per = (v: number | readonly number[], c: number): number => (typeof v === 'number' ? v : v[c]!);
  for (let start = 0, p = 0; start < pixels.length; start += plane, p++) {
    const c = p % channels;
    const m = normalize ? per(normalize.mean, c) : 0;
    const inv = normalize ? 1 / per(normalize.std, c) : 1;
    for (let i = start; i < start + plane; i++) out[i] = (pixels[i]! / scale - m) * inv;
  }
  return out;
}
