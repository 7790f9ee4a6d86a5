// Divergence detection for the training loop. A non-finite or exploding loss, non-finite
// gradients, or a NaN met inside the forward pass (a router's top-k refuses NaN scores before the
// loss exists) all stop training with one message: the step as metrics.jsonl counts it (from 1),
// whether a checkpoint holds earlier weights (only if one was really written), and what to change.
//
// Explosion rule (documented in `moe train --help`): the reference is the first loss of this
// training call, floored at 1 (a fresh classifier's cross-entropy is ln(classes), so the floor
// only matters for a run resumed near zero loss). A loss above warnFactor (100) times the
// reference warns once; above stopFactor (10^4) times it, or not finite, training stops as diverged.

import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';

export class TrainingDivergedError extends Error {
  /** The step that diverged, counted from 1 as in metrics.jsonl. */
  readonly step: number;

  constructor(message: string, step: number, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TrainingDivergedError';
    this.step = step;
  }
}

export interface DivergenceLimits {
  /** Warn once when a loss exceeds this many times the reference loss. */
  warnFactor: number;
  /** Stop as diverged when a loss exceeds this many times the reference loss. */
  stopFactor: number;
}

export const DEFAULT_DIVERGENCE_LIMITS: Readonly<DivergenceLimits> = Object.freeze({ warnFactor: 100, stopFactor: 1e4 });

export interface DivergenceGuardOptions {
  model: Module;
  /** null: only non-finite values stop training (no warning, no explosion limit). */
  limits: DivergenceLimits | null;
  checkpointDir: string | null;
  /** The step of the checkpoint already in checkpointDir (a resumed run's), or null when there is none. */
  savedStep: number | null;
  warn: (line: string) => void;
}

const NON_FINITE_MESSAGE = /\bNaN\b|\binfinit|non-finite|not finite/i;

/** Sum of squares of every gradient, square-rooted (the global norm clipping uses). */
export function globalGradNorm(params: readonly Tensor[]): number {
  let sumSq = 0;
  for (const p of params) {
    const d = p.grad?.data;
    if (d) for (let i = 0; i < d.length; i++) sumSq += d[i]! * d[i]!;
  }
  return Math.sqrt(sumSq);
}

/** The first parameter holding a NaN or an infinity, with the count of such values; null when all are finite. */
export function firstNonFiniteParameter(model: Module): { name: string; count: number; size: number } | null {
  for (const [name, p] of model.namedParameters()) {
    const d = p.data;
    let count = 0;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) count++;
    if (count > 0) return { name, count, size: d.length };
  }
  return null;
}

const fmt = (v: number): string => (Number.isFinite(v) && (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3)) ? v.toExponential(2) : String(Number(v.toPrecision(4))));

export class DivergenceGuard {
  private reference: number | null = null;
  private warned = false;
  private savedStep: number | null;

  constructor(private readonly opts: DivergenceGuardOptions) {
    this.savedStep = opts.savedStep;
  }

  /** Call after every checkpoint written, with the trainer's step count. */
  saved(step: number): void {
    this.savedStep = step;
  }

  /**
   * Runs a step's forward and backward. An error there is a divergence when the weights hold
   * non-finite values, or when the error is about a non-finite value (NaN scores in a router).
   */
  run<T>(step: number, lr: number, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (e instanceof TrainingDivergedError) throw e;
      const bad = firstNonFiniteParameter(this.opts.model);
      const message = (e as Error).message ?? String(e);
      if (bad === null && !NON_FINITE_MESSAGE.test(message)) throw e;
      const where = bad ? `parameter '${bad.name}' holds ${bad.count} non-finite value(s) of ${bad.size}` : 'the weights are finite but the forward pass produced one';
      this.fail(step, lr, `a NaN or infinity reached the forward pass (${message}); ${where}`, e);
    }
  }

  /** Checks a step's loss before its backward pass. */
  checkLoss(step: number, lr: number, loss: number): void {
    if (!Number.isFinite(loss)) this.fail(step, lr, `the loss is ${loss}`);
    const limits = this.opts.limits;
    if (limits === null) return;
    if (this.reference === null) {
      this.reference = Math.max(loss, 1);
      return;
    }
    const ratio = loss / this.reference;
    if (ratio > limits.stopFactor) {
      this.fail(step, lr, `the loss ${fmt(loss)} is ${fmt(ratio)} times the first loss of this run (${fmt(this.reference)}), above the limit of ${fmt(limits.stopFactor)} times`);
    }
    if (ratio > limits.warnFactor && !this.warned) {
      this.warned = true;
      this.opts.warn(`warning: the loss at step ${step} is ${fmt(loss)}, ${fmt(ratio)} times the first loss of this run (${fmt(this.reference)}); training may be diverging (it stops at ${fmt(limits.stopFactor)} times). ${this.advice(lr)}`);
    }
  }

  /** Checks the global gradient norm before the optimizer applies it. */
  checkGradients(step: number, lr: number, norm: number): void {
    if (!Number.isFinite(norm)) this.fail(step, lr, `the gradients hold non-finite values (global norm ${norm})`);
  }

  private advice(lr: number): string {
    return `To fix: lower optim.lr (now ${fmt(lr)}), set optim.clipNorm (e.g. 1), or warm up (optim.schedule=warmup-cosine with optim.warmupSteps).`;
  }

  fail(step: number, lr: number, what: string, cause?: unknown): never {
    const dir = this.opts.checkpointDir;
    let ckpt = '';
    if (dir !== null) {
      ckpt = this.savedStep !== null
        ? ` The checkpoint in ${dir} holds the weights of step ${this.savedStep}, from before the divergence.`
        : ` No checkpoint was written before it (one is written at the end of every epoch).`;
    }
    throw new TrainingDivergedError(`training diverged at step ${step}: ${what}.${ckpt} ${this.advice(lr)}`, step, cause === undefined ? undefined : { cause });
  }
}
