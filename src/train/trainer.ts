// The training loop: seeded batches, forward, task + auxiliary losses, backward, clipping, an
// optimizer step under a schedule; router metrics logged per step as JSON Lines; evaluation and
// atomic checkpoints each epoch; resumable so that the losses after --resume equal those of an
// uninterrupted run (batch order and every random stream derive from the seed and the step).

import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { fsErrorMessage } from '../io/atomic.js';
import { dirname, join } from 'node:path';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Optimizer } from './optim.js';
import { clipGradNorm } from './optim.js';
import type { Schedule } from './schedule.js';
import { saveCheckpoint } from '../models/checkpoint.js';
import { Progress } from './progress.js';
import { deriveSeed } from '../tensor/rng.js';
import { DEFAULT_DIVERGENCE_LIMITS, DivergenceGuard, globalGradNorm, type DivergenceLimits } from './divergence.js';
import { LayerLog } from './layer-log.js';
import { ExpertCountLog, type TrainedTokenCounts } from './expert-counts.js';

/** One training batch as the task defines it (images and labels, token windows, ...). */
export interface TaskBatch {
  x: Tensor;
  y: Tensor;
}

export interface StepOutput {
  /** The scalar to back-propagate: task loss plus weighted auxiliary losses. */
  loss: Tensor;
  /** Numbers to log for this step: taskLoss, auxLoss, accuracy, router entropy, drop fraction... */
  values: Record<string, number>;
}

export interface TrainTask {
  model: Module;
  /** Training batches of epoch e (a pure function of the seed and e). */
  batches(epoch: number): Iterable<TaskBatch>;
  batchesPerEpoch: number;
  step(batch: TaskBatch): StepOutput;
  /** Metrics on a held-out split (e.g. { loss, accuracy }); null when the task has no such split. */
  evaluate(split: 'val' | 'test'): Record<string, number> | null;
}

export interface TrainerState {
  /** Optimizer steps taken. */
  step: number;
  /** Epoch in progress (0-based). */
  epoch: number;
  /** Batches of that epoch already consumed. */
  batchInEpoch: number;
  /** The total steps the learning-rate schedule was built for when the run started; a resume with more epochs keeps it (absent in older checkpoints). */
  scheduleSteps?: number;
  /** Per-expert training token counts of the model's MoE layers up to this step (expert-counts.ts; absent in older checkpoints and for models without MoE layers). */
  expertTokenCounts?: TrainedTokenCounts;
}

export interface TrainerOptions {
  epochs: number;
  optimizer: Optimizer;
  schedule: Schedule;
  /** Clip the global gradient norm to this (null: no clipping). */
  clipNorm: number | null;
  seed: number;
  /** JSON Lines metrics file (one object per step and per evaluation); null: none. */
  metricsFile: string | null;
  /** Checkpoint directory, written at the end of every epoch; null: none. */
  checkpointDir: string | null;
  /** The run's configuration, stored with checkpoints. */
  config: unknown;
  /** Evaluate on the validation split every this many epochs (0: never). */
  evalEvery: number;
  /** Continue from this state (with weights and optimizer already loaded). */
  resume?: TrainerState;
  /** Stored in the trainer state of every checkpoint (see TrainerState.scheduleSteps). */
  scheduleSteps?: number;
  /** Stop after this many optimizer steps in this call (for tests of resuming); undefined: run to the end. */
  maxSteps?: number;
  progress?: Progress | null;
  /** Called for every step's logged values (tests collect losses here). */
  onStep?: (values: Record<string, number>) => void;
  /** Loss-explosion limits (see divergence.ts; default warn at 100x, stop at 10^4x the first loss); null: stop on non-finite values only. */
  divergence?: DivergenceLimits | null;
  /** Where warnings go (default: the progress display, else stderr). */
  warn?: (line: string) => void;
  /** Called with the steps taken so far before each step's forward, and after its backward (continual MoE growth: train/growth.ts). */
  hooks?: { beforeStep?: (step: number) => void; afterBackward?: (step: number) => void };
}

export interface TrainResult {
  state: TrainerState;
  /** The last step's values. */
  last: Record<string, number>;
  test: Record<string, number> | null;
  seconds: number;
}

export function train(task: TrainTask, opts: TrainerOptions): TrainResult {
  const state: TrainerState = { ...(opts.resume ?? { step: 0, epoch: 0, batchInEpoch: 0 }), ...(opts.scheduleSteps !== undefined ? { scheduleSteps: opts.scheduleSteps } : {}) };
  const total = opts.epochs * task.batchesPerEpoch;
  const progress = opts.progress === undefined ? new Progress(total, { label: 'train' }) : opts.progress;
  const params = task.model.parameters();
  const started = state.step;
  const t0 = performance.now();
  const log = (obj: Record<string, unknown>): void => {
    if (!opts.metricsFile) return;
    try {
      appendFileSync(opts.metricsFile, `${JSON.stringify(obj)}\n`);
    } catch (e) {
      // the bare error ('ENOSPC: no space left on device, write') names no file
      throw new Error(fsErrorMessage('cannot append to the metrics log', opts.metricsFile, e), { cause: e });
    }
  };
  if (opts.metricsFile) mkdirSync(dirname(opts.metricsFile), { recursive: true });
  // per-MoE-layer load, entropies, drops and aux losses in each step record's `moe` field (layer-log.ts)
  const layerLog = opts.metricsFile ? new LayerLog(task.model) : null;
  // per-expert training token counts, kept in the checkpoint's trainer state (a resume adds up)
  const counts = new ExpertCountLog(task.model, state.expertTokenCounts);
  let last: Record<string, number> = {};
  let stepsThisCall = 0;
  const guard = new DivergenceGuard({
    model: task.model,
    limits: opts.divergence === undefined ? DEFAULT_DIVERGENCE_LIMITS : opts.divergence,
    checkpointDir: opts.checkpointDir,
    // a resumed run's checkpoint is only claimed when it is really in this run's checkpoint directory
    savedStep: opts.resume && opts.checkpointDir && existsSync(join(opts.checkpointDir, 'state.json')) ? opts.resume.step : null,
    warn: opts.warn ?? ((l) => (progress ? progress.log(l) : process.stderr.write(`${l}\n`))),
  });
  // clipNorm 0 means off, as in PyTorch Lightning and HF Trainer (clipping to 0 would zero every gradient)
  const clipNorm = opts.clipNorm !== null && opts.clipNorm > 0 ? opts.clipNorm : null;
  const checkpoint = (): void => {
    if (!opts.checkpointDir) return;
    saveCheckpoint(opts.checkpointDir, {
      model: task.model, config: opts.config, optimizerState: opts.optimizer.state(), trainerState: withCounts(state, counts),
    });
    guard.saved(state.step);
  };

  task.model.train();
  while (state.epoch < opts.epochs) {
    let i = 0;
    for (const batch of task.batches(state.epoch)) {
      if (i++ < state.batchInEpoch) continue; // consumed before the resume point
      if (opts.maxSteps !== undefined && stepsThisCall >= opts.maxSteps) {
        progress?.done();
        counts.stop();
        layerLog?.stop();
        return { state: withCounts(state, counts), last, test: null, seconds: (performance.now() - t0) / 1000 };
      }
      opts.hooks?.beforeStep?.(state.step);
      const lr = opts.schedule(state.step);
      opts.optimizer.lr = lr;
      task.model.reseedAll(deriveSeed(opts.seed, state.step));
      const stepNo = state.step + 1; // as metrics.jsonl counts
      const out = guard.run(stepNo, lr, () => task.step(batch));
      const layers = layerLog?.take() ?? null;
      const lossValue = out.loss.item();
      guard.checkLoss(stepNo, lr, lossValue);
      guard.run(stepNo, lr, () => out.loss.backward());
      opts.hooks?.afterBackward?.(state.step);
      const gradNorm = clipNorm !== null ? clipGradNorm(params, clipNorm) : NaN;
      guard.checkGradients(stepNo, lr, clipNorm !== null ? gradNorm : globalGradNorm(params));
      opts.optimizer.step();
      opts.optimizer.zeroGrad();
      state.step++;
      state.batchInEpoch++;
      stepsThisCall++;
      last = { step: state.step, epoch: state.epoch, lr, loss: lossValue, ...(Number.isNaN(gradNorm) ? {} : { gradNorm }), ...out.values };
      log({ type: 'step', ...last, ...(layers ? { moe: layers } : {}) });
      opts.onStep?.(last);
      progress?.update(state.step, progressFields(last), started);
    }
    state.epoch++;
    state.batchInEpoch = 0;
    if (opts.evalEvery > 0 && state.epoch % opts.evalEvery === 0) {
      const val = task.evaluate('val');
      if (val) {
        log({ type: 'eval', split: 'val', step: state.step, epoch: state.epoch, ...val });
        progress?.log(`epoch ${state.epoch}: ${Object.entries(val).map(([k, v]) => `val ${k} ${v.toFixed(4)}`).join(', ')}`);
      }
      task.model.train();
    }
    checkpoint();
  }
  progress?.done();
  const test = task.evaluate('test');
  if (test) log({ type: 'eval', split: 'test', step: state.step, epoch: state.epoch, ...test });
  task.model.train();
  counts.stop();
  layerLog?.stop();
  return { state: withCounts(state, counts), last, test, seconds: (performance.now() - t0) / 1000 };
}

/** The state with the counts so far (when the model has MoE layers). */
function withCounts(state: TrainerState, counts: ExpertCountLog): TrainerState {
  const c = counts.snapshot();
  return Object.keys(c.layers).length > 0 ? { ...state, expertTokenCounts: c } : state;
}

/** The few numbers worth a glance on the bar. */
function progressFields(v: Record<string, number>): Record<string, string | number> {
  const f: Record<string, string | number> = { loss: v['loss']! };
  if (v['accuracy'] !== undefined) f['acc'] = `${(100 * v['accuracy']).toFixed(1)}%`;
  if (v['entropy'] !== undefined) f['H'] = v['entropy'];
  if (v['dropFraction'] !== undefined) f['drop'] = `${(100 * v['dropFraction']).toFixed(1)}%`;
  return f;
}
