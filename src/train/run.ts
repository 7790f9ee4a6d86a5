// A training run from a RunConfig: data, model, optimizer, schedule, resume, output directory.

import { existsSync, rmdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { DataConfig, OptimConfig, RunConfig } from '../config/run.js';
import { buildModel, type ImageClassifier, type TaskKind } from '../models/registry.js';
import { MultiTaskClassificationTask, type MultiTaskModel } from './multitask.js';
import { loadFashionMnist, loadMnistDigits, loadMnistIdx } from '../data/mnist.js';
import { loadCifar10, loadCifar100 } from '../data/cifar.js';
import { imageNormalization, isImageDataset } from '../data/image-datasets.js';
import { splitIndices, subsetImages, type ImageSet } from '../data/batches.js';
import { Adam, AdamW, SGD, type Optimizer } from './optim.js';
import { constant, warmupCosine, warmupLinear, type Schedule } from './schedule.js';
import { loadCheckpoint, loadModelWeights, saveCheckpoint } from '../models/checkpoint.js';
import { copyMetricsLog, hasTestRecord, openRunDir, repairMetricsLog, resolveResume } from './rundir.js';
import { train, type TrainResult, type TrainerState, type TrainTask } from './trainer.js';
import { ImageClassificationTask, type ImageSplits } from './tasks.js';
import { LanguageModelTask, type ByteSplits } from './lm-task.js';
import type { ByteLM } from '../models/lm.js';
import { loadUdhrCorpus } from '../data/udhr-corpus.js';
import { byteSplits, encodeBytes, loadJsonl, loadTextFile } from '../data/text.js';
import { writeFileAtomic } from '../io/atomic.js';
import { Progress } from './progress.js';
import type { Module } from '../nn/module.js';
import { attachExpertParallel, type ExpertParallel } from '../parallel/expert-parallel.js';
import { ExpertShardedOptimizer } from '../parallel/sharded-optimizer.js';
import { recordRouting, type RoutingRecorder } from '../parallel/trace.js';
import { growthControllerFor } from './growth.js';

/** Loads the configured image dataset with its seeded validation split. */
export function loadImageData(d: DataConfig, seed: number): ImageSplits {
  let splits: { train: ImageSet; test: ImageSet };
  if (!isImageDataset(d.dataset)) throw new Error(`config.data.dataset: '${d.dataset}' is text, not images`);
  // the statistics come from the table that loadModel reads too, so a checkpoint is preprocessed as it was trained
  const norm = imageNormalization(d);
  const normalize = norm ? { normalize: norm } : {};
  switch (d.dataset) {
    case 'fashion-mnist': splits = loadFashionMnist({ ...(d.path ? { dir: d.path } : {}), ...normalize }); break;
    case 'mnist': splits = loadMnistDigits(normalize); break;
    case 'mnist-idx':
      if (!d.path) throw new Error('config.data.path: required for dataset mnist-idx (the directory holding train-images-idx3-ubyte[.gz] etc.)');
      splits = loadMnistIdx(d.path, normalize);
      break;
    case 'cifar10':
    case 'cifar100':
      if (!d.path) throw new Error(`config.data.path: required for dataset ${d.dataset} (the directory of the binary batches)`);
      splits = d.dataset === 'cifar10' ? loadCifar10(d.path, normalize) : loadCifar100(d.path, normalize);
      break;
  }
  let trainSet = splits.train;
  if (d.limitTrain !== null && d.limitTrain < trainSet.n) trainSet = subsetImages(trainSet, Int32Array.from({ length: d.limitTrain }, (_, i) => i));
  if (d.valFraction > 0) {
    const idx = splitIndices(trainSet.n, { valFraction: d.valFraction, seed });
    return { train: subsetImages(trainSet, idx.train), val: subsetImages(trainSet, idx.val), test: splits.test };
  }
  return { train: trainSet, val: null, test: splits.test };
}

export function makeOptimizer(model: Module, o: OptimConfig): Optimizer {
  const params = model.namedParameters();
  const betas: [number, number] = [o.beta1, o.beta2];
  switch (o.optimizer) {
    case 'adam': return new Adam(params, { lr: o.lr, betas, eps: o.eps, weightDecay: o.weightDecay });
    case 'adamw': return new AdamW(params, { lr: o.lr, betas, eps: o.eps, weightDecay: o.weightDecay });
    case 'sgd': return new SGD(params, { lr: o.lr, momentum: o.momentum, nesterov: o.nesterov, weightDecay: o.weightDecay });
  }
}

export function makeSchedule(o: OptimConfig, totalSteps: number): Schedule {
  switch (o.schedule) {
    case 'constant': return constant(o.lr);
    case 'warmup-cosine': return warmupCosine({ lr: o.lr, warmupSteps: o.warmupSteps, totalSteps, minLr: o.minLr });
    case 'warmup-linear': return warmupLinear({ lr: o.lr, warmupSteps: o.warmupSteps, totalSteps, minLr: o.minLr });
  }
}

/** A run directory holds its checkpoint in checkpoint/; accept either the run or the checkpoint directory. */
export function resolveCheckpointDir(dir: string): string {
  if (existsSync(join(dir, 'checkpoint', 'state.json'))) return join(dir, 'checkpoint');
  if (existsSync(join(dir, 'state.json'))) return dir;
  throw new Error(`${dir}: no checkpoint here (neither state.json nor checkpoint/state.json)`);
}

export interface RunOptions {
  /** Output directory: config.json, metrics.jsonl and the checkpoint files. Locked while training (see rundir.ts). */
  out: string;
  /**
   * A run directory to continue (or its checkpoint/ directory, or a checkpoint directory on its own).
   * When it is `out`, the run continues in place; otherwise `out` must be a new (empty) directory:
   * the checkpoint and the log up to it are copied there and the original is left as it was.
   */
  resume?: string;
  /** A new run into a non-empty `out` removes the previous run's files instead of being refused. */
  force?: boolean;
  progress?: Progress | null;
  maxSteps?: number;
  onStep?: (v: Record<string, number>) => void;
  log?: (line: string) => void;
  /** Called with the expert-parallel group when parallel.experts > 1 (tests inject worker faults through it). */
  onExpertParallel?: (ep: ExpertParallel) => void;
}

export interface RunResult extends TrainResult {
  config: RunConfig;
  out: string;
  parameters: number;
  /** The checkpoint had already finished every epoch: nothing was trained or written. */
  nothingToDo: boolean;
  /** Optimizer steps taken by this call (state.step counts from the start of the run). */
  stepsRun: number;
}

/** Byte splits of the configured text data: UDHR split per language, a file split in one piece. */
export async function loadByteData(d: DataConfig): Promise<ByteSplits> {
  if (d.dataset === 'udhr') {
    if (d.languages !== null && !(Array.isArray(d.languages) && d.languages.every((l) => typeof l === 'string'))) {
      throw new Error(`config.data.languages: expected a list of language codes or null, got ${JSON.stringify(d.languages)}`);
    }
    const c = await loadUdhrCorpus({
      ...(d.languages ? { languages: d.languages } : {}), ...(d.maxLanguages ? { maxLanguages: d.maxLanguages } : {}),
      valFraction: d.valFraction, testFraction: d.testFraction,
    });
    return { train: c.train, val: c.val.length > 0 ? c.val : null, test: c.test.length > 0 ? c.test : null };
  }
  if (!d.path) throw new Error(`config.data.path: required for dataset ${d.dataset} (the file to read)`);
  const text = d.dataset === 'text' ? loadTextFile(d.path) : loadJsonl(d.path).join('\n');
  const s = byteSplits(encodeBytes(text), { valFraction: d.valFraction, testFraction: d.testFraction });
  return { train: s.train, val: s.val.length > 0 ? s.val : null, test: s.test.length > 0 ? s.test : null };
}

/** The training task a model's kind calls for, over the configured data. */
export async function makeTask(config: RunConfig, model: Module, kind: TaskKind): Promise<{ task: TrainTask & { batchesPerEpoch: number }; summary: string }> {
  // data.dataset is one of the schema's names: the image table's, or text (udhr, text, jsonl)
  const isText = !isImageDataset(config.data.dataset);
  if ((kind === 'language-model') !== isText) {
    throw new Error(`config.data.dataset: '${config.data.dataset}' does not fit model ${config.model.type} (${kind}); ${kind === 'language-model' ? 'use udhr, text or jsonl' : 'use an image dataset'}`);
  }
  if (kind === 'language-model') {
    const bytes = await loadByteData(config.data);
    const task = new LanguageModelTask(model as ByteLM, bytes, {
      batchSize: config.train.batchSize, seqLen: config.data.seqLen, stepsPerEpoch: config.data.stepsPerEpoch, seed: config.train.seed,
      evalWindows: config.data.evalWindows,
    });
    return { task, summary: `${bytes.train.length} training bytes, ${bytes.val?.length ?? 0} validation, ${bytes.test?.length ?? 0} test` };
  }
  const data = loadImageData(config.data, config.train.seed);
  const summary = `${data.train.n} training examples${data.val ? `, ${data.val.n} validation` : ''}, ${data.test.n} test`;
  if (kind === 'multitask-classification') {
    if (config.data.dataset !== 'fashion-mnist') throw new Error(`config.data.dataset: the multi-task model ${config.model.type} has tasks defined for fashion-mnist only, got ${config.data.dataset}`);
    return { task: new MultiTaskClassificationTask(model as MultiTaskModel, data, { batchSize: config.train.batchSize, seed: config.train.seed }), summary };
  }
  return { task: new ImageClassificationTask(model as ImageClassifier, data, config.train.batchSize, config.train.seed), summary };
}

/** Builds the model of a config and, when given a checkpoint, loads its weights. */
export function buildRunModel(config: RunConfig): { model: Module; task: TaskKind } {
  const { model, spec } = buildModel(config.model, config.train.seed);
  return { model, task: spec.task };
}

/** The schedule length of a checkpoint that predates TrainerState.scheduleSteps: its saved config's epochs. */
function savedScheduleSteps(config: unknown, batchesPerEpoch: number): number | undefined {
  const epochs = (config as { train?: { epochs?: unknown } } | null)?.train?.epochs;
  return typeof epochs === 'number' ? epochs * batchesPerEpoch : undefined;
}

export async function runTraining(configIn: RunConfig, opts: RunOptions): Promise<RunResult> {
  const log = opts.log ?? (() => {});
  // on resume the caller passes the checkpoint's config (with any --set overrides applied)
  const config = configIn;
  const resume = opts.resume !== undefined ? resolveResume(opts.resume) : null;
  const inPlace = resume !== null && resume.runDir !== null && resolve(resume.runDir) === resolve(opts.out);
  const { model, task: kind } = buildRunModel(config);
  const { task, summary } = await makeTask(config, model, kind);
  let optimizer = makeOptimizer(model, config.optim);
  const growth = growthControllerFor(config.model, model, config.train.seed, log);
  const totalSteps = config.train.epochs * task.batchesPerEpoch;
  const metricsFile = join(opts.out, 'metrics.jsonl');
  const outExisted = existsSync(opts.out);
  const lock = openRunDir(opts.out, { fresh: !inPlace, ...(opts.force ? { force: true } : {}), log });
  let parallel: ExpertParallel | null = null;
  let recorder: RoutingRecorder | null = null;
  try {
    // parallel.experts > 1: every MoE layer's experts run on that many worker threads (src/parallel/)
    const workers = config.parallel?.experts ?? 1;
    if (workers > 1) {
      parallel = attachExpertParallel(model, { workers, overlapDegree: config.parallel?.overlap ?? 1 });
      // each worker owns its experts' optimizer state and steps them (sharded-optimizer.ts); a
      // growing model re-shards it when growth loads the extended state
      optimizer = new ExpertShardedOptimizer(optimizer, parallel);
      opts.onExpertParallel?.(parallel);
    }
    if (config.parallel?.trace) recorder = recordRouting(model, config.parallel.trace);
    let resumeState: TrainerState | undefined;
    let scheduleSteps = totalSteps;
    if (resume) {
      // read under the lock, so that no other writer can replace the checkpoint before this run's first save
      const ckpt = loadCheckpoint(resume.checkpointDir);
      // a grown model's checkpoint loads into the model grown by the same schedule up to its step
      growth?.replay((ckpt.trainerState as TrainerState | null)?.step ?? 0);
      loadModelWeights(model, ckpt.model);
      if (ckpt.optimizerState) optimizer.loadState(Object.fromEntries(ckpt.optimizerState));
      resumeState = ckpt.trainerState as TrainerState;
      const step = resumeState.step;
      scheduleSteps = resumeState.scheduleSteps ?? savedScheduleSteps(ckpt.config, task.batchesPerEpoch) ?? totalSteps;
      if (totalSteps > scheduleSteps && config.optim.schedule !== 'constant' && config.optim.minLr === 0) {
        throw new Error(`train.epochs ${config.train.epochs}: the ${config.optim.schedule} schedule of this run was built for ${scheduleSteps} steps and ends at optim.minLr = 0, `
          + `so the steps after ${scheduleSteps} would not learn (a resumed run keeps its schedule, so that its losses match an uninterrupted run). `
          + 'Give those steps a rate, e.g. --set optim.minLr=1e-4 (the schedule then decays to it and stays there), or start a new run with more epochs');
      }
      if (resumeState.epoch >= config.train.epochs) {
        // A finished run: its last checkpoint is followed by the test evaluation, and nothing else.
        const runLog = inPlace ? metricsFile : resume.runDir !== null ? join(resume.runDir, 'metrics.jsonl') : null;
        if (!inPlace || (runLog !== null && hasTestRecord(runLog, step))) {
          lock.release();
          if (!outExisted) rmEmptyDir(opts.out);
          return { state: resumeState, last: {}, test: null, seconds: 0, config, out: opts.out, parameters: model.numParameters(), nothingToDo: true, stepsRun: 0 };
        }
        log(`${opts.resume}: its checkpoint (step ${step}, epoch ${resumeState.epoch}) already reaches train.epochs = ${config.train.epochs}; evaluating the test split, which the run had not logged`);
      }
      if (scheduleSteps !== totalSteps && config.optim.schedule !== 'constant') {
        log(`train.epochs is now ${config.train.epochs} (${totalSteps} steps); the ${config.optim.schedule} schedule keeps the ${scheduleSteps} steps it started with`
          + `${totalSteps > scheduleSteps ? `, so the learning rate stays at optim.minLr (${config.optim.minLr}) after step ${scheduleSteps}` : ''}`);
      }
      if (inPlace) {
        const repaired = repairMetricsLog(metricsFile, step);
        if (repaired !== null) log(`resume: ${repaired}`);
      } else {
        if (resume.runDir !== null) copyMetricsLog(join(resume.runDir, 'metrics.jsonl'), metricsFile, step);
        saveCheckpoint(join(opts.out, 'checkpoint'), {
          model, config, optimizerState: optimizer.state(), trainerState: { ...resumeState, scheduleSteps },
        });
        log(`continuing ${opts.resume} in ${opts.out}: copied its checkpoint (step ${step})${resume.runDir !== null ? ' and its metrics up to that step' : ''}; ${opts.resume} is left as it was`);
      }
      log(`resuming ${opts.resume} at step ${step} (epoch ${resumeState.epoch + 1}, batch ${resumeState.batchInEpoch})`);
    }
    const schedule = makeSchedule(config.optim, scheduleSteps);
    writeFileAtomic(join(opts.out, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    const parameters = model.numParameters();
    log(`${config.name}: ${config.model.type}, ${parameters} parameters; ${summary}; ${config.train.epochs} epochs of ${task.batchesPerEpoch} steps`);
    const progress = opts.progress === undefined ? new Progress(totalSteps, { label: 'train' }) : opts.progress;
    const result = train(task, {
      epochs: config.train.epochs, optimizer, schedule, clipNorm: config.optim.clipNorm, seed: config.train.seed,
      metricsFile, checkpointDir: join(opts.out, 'checkpoint'), config, evalEvery: config.train.evalEvery, scheduleSteps,
      ...(resumeState ? { resume: resumeState } : {}), ...(opts.maxSteps !== undefined ? { maxSteps: opts.maxSteps } : {}),
      progress, ...(opts.onStep ? { onStep: opts.onStep } : {}),
      ...(growth ? { hooks: { beforeStep: (s: number) => growth.beforeStep(s, optimizer), afterBackward: () => growth.afterBackward() } } : {}),
    });
    return { ...result, config, out: opts.out, parameters, nothingToDo: false, stepsRun: result.state.step - (resumeState?.step ?? 0) };
  } catch (e) {
    lock.release();
    // a run refused before it wrote anything leaves no empty directory behind
    if (!outExisted) rmEmptyDir(opts.out);
    throw e;
  } finally {
    lock.release();
    recorder?.close();
    await parallel?.close();
  }
}

function rmEmptyDir(dir: string): void {
  try { rmdirSync(dir); } catch { /* not empty, or gone: leave it */ }
}
