// Learning-rate schedules: pure functions from the optimizer step (0-based) to a learning rate.

/** Learning rate for optimizer step `step` (0 for the first step); set it with `opt.lr = schedule(opt.steps)`. */
export type Schedule = (step: number) => number;

export interface WarmupDecayOptions {
  /** Peak learning rate, reached at step warmupSteps. */
  lr: number;
  /** Steps of linear warmup from 0; 0 starts at lr. */
  warmupSteps: number;
  /** Step at which the decay reaches minLr; the rate stays at minLr from there on. Must exceed warmupSteps. */
  totalSteps: number;
  /** Final learning rate, 0 <= minLr <= lr; default 0. */
  minLr?: number;
}

function fail(where: string, msg: string): never {
  throw new Error(`${where}: ${msg}`);
}

function checkRate(where: string, field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail(where, `${field} must be a finite number >= 0, got ${String(v)}`);
  return v;
}

function checkSteps(where: string, field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(where, `${field} must be an integer >= 0, got ${String(v)}`);
  return v;
}

// Fractional steps are allowed (plots sample between steps); negative or NaN ones are caller bugs.
function checkStep(where: string, step: number): void {
  if (typeof step !== 'number' || Number.isNaN(step) || step < 0) fail(where, `step must be a number >= 0, got ${String(step)}`);
}

function validate(where: string, o: WarmupDecayOptions): Required<WarmupDecayOptions> {
  if (typeof o !== 'object' || o === null) fail(where, 'options { lr, warmupSteps, totalSteps, minLr? } are required');
  const lr = checkRate(where, 'lr', o.lr);
  const warmupSteps = checkSteps(where, 'warmupSteps', o.warmupSteps);
  const totalSteps = checkSteps(where, 'totalSteps', o.totalSteps);
  if (totalSteps <= warmupSteps) fail(where, `totalSteps (${totalSteps}) must be greater than warmupSteps (${warmupSteps})`);
  const minLr = checkRate(where, 'minLr', o.minLr ?? 0);
  if (minLr > lr) fail(where, `minLr (${minLr}) must not exceed lr (${lr})`);
  return { lr, warmupSteps, totalSteps, minLr };
}

/** The same rate at every step. */
export function constant(lr: number): Schedule {
  checkRate('constant', 'lr', lr);
  return (step) => {
    checkStep('constant', step);
    return lr;
  };
}

/**
 * With W = warmupSteps, T = totalSteps:
 *   s < W:       lr * s / W                                           (0 at step 0, as in HF transformers)
 *   W <= s < T:  minLr + (lr - minLr) * (1 + cos(pi * (s - W) / (T - W))) / 2
 *   s >= T:      minLr
 */
export function warmupCosine(opts: WarmupDecayOptions): Schedule {
  const { lr, warmupSteps: W, totalSteps: T, minLr } = validate('warmupCosine', opts);
  return (s) => {
    checkStep('warmupCosine', s);
    if (s < W) return (lr * s) / W;
    if (s >= T) return minLr;
    return minLr + (lr - minLr) * 0.5 * (1 + Math.cos((Math.PI * (s - W)) / (T - W)));
  };
}

/**
 * With W = warmupSteps, T = totalSteps:
 *   s < W:       lr * s / W
 *   W <= s < T:  lr + (minLr - lr) * (s - W) / (T - W)
 *   s >= T:      minLr
 */
export function warmupLinear(opts: WarmupDecayOptions): Schedule {
  const { lr, warmupSteps: W, totalSteps: T, minLr } = validate('warmupLinear', opts);
  return (s) => {
    checkStep('warmupLinear', s);
    if (s < W) return (lr * s) / W;
    if (s >= T) return minLr;
    return lr + ((minLr - lr) * (s - W)) / (T - W);
  };
}
