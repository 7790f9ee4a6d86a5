// Scaling-law fits L = a * N^-alpha (and L = c + a * N^-alpha) with uncertainty: the least-squares
// standard error of alpha in log-log space, and a bootstrap over languages.

import { Rng } from '../../tensor/rng.js';

export interface PowerLawFit {
  a: number;
  alpha: number;
  /** Standard error of alpha from the log-log regression (residual variance with n - 2 degrees of freedom); NaN for n <= 2. */
  alphaSE: number;
  /** Irreducible loss c (0 for the pure power law). */
  c: number;
  /** R^2 of the fit in log space. */
  r2: number;
  n: number;
}

function check(ns: readonly number[], ls: readonly number[], where: string): void {
  if (ns.length !== ls.length) throw new Error(`${where}: ${ns.length} sizes for ${ls.length} losses`);
  if (ns.length < 2) throw new Error(`${where}: needs at least 2 points, got ${ns.length}`);
  ns.forEach((n, i) => {
    if (!(n > 0 && Number.isFinite(n))) throw new Error(`${where}: size ${i} = ${n} must be a positive number`);
    if (!(ls[i]! > 0 && Number.isFinite(ls[i]!))) throw new Error(`${where}: loss ${i} = ${ls[i]} must be a positive number`);
  });
  if (new Set(ns).size < 2) throw new Error(`${where}: needs at least 2 distinct sizes, got only ${ns[0]}`);
}

/** Ordinary least squares y = b0 + b1 x, with the slope's standard error and R^2. */
function ols(x: readonly number[], y: readonly number[]): { b0: number; b1: number; se1: number; r2: number; ssr: number } {
  const n = x.length;
  const mx = x.reduce((s, v) => s + v, 0) / n;
  const my = y.reduce((s, v) => s + v, 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (x[i]! - mx) ** 2;
    sxy += (x[i]! - mx) * (y[i]! - my);
    syy += (y[i]! - my) ** 2;
  }
  const b1 = sxy / sxx;
  const b0 = my - b1 * mx;
  let ssr = 0;
  for (let i = 0; i < n; i++) ssr += (y[i]! - b0 - b1 * x[i]!) ** 2;
  const se1 = n > 2 ? Math.sqrt(ssr / (n - 2) / sxx) : NaN;
  return { b0, b1, se1, r2: syy > 0 ? 1 - ssr / syy : 1, ssr };
}

/** L = a * N^-alpha by least squares on log L = log a - alpha log N (every point weighs the same in relative terms). */
export function fitPowerLaw(ns: readonly number[], ls: readonly number[]): PowerLawFit {
  check(ns, ls, 'fitPowerLaw');
  const f = ols(ns.map(Math.log), ls.map(Math.log));
  return { a: Math.exp(f.b0), alpha: -f.b1, alphaSE: f.se1, c: 0, r2: f.r2, n: ns.length };
}

/**
 * L = c + a * N^-alpha: c is profiled over a grid of `steps` values in [0, min L) (for each c, log(L - c)
 * is a straight line in log N), keeping the c whose fit has the least squared error in L itself.
 * With few sizes c and alpha trade off against each other; alphaSE is conditional on the chosen c.
 */
export function fitPowerLawWithFloor(ns: readonly number[], ls: readonly number[], steps = 400): PowerLawFit {
  check(ns, ls, 'fitPowerLawWithFloor');
  if (new Set(ns).size < 3) throw new Error('fitPowerLawWithFloor: three parameters need at least 3 distinct sizes');
  const minL = Math.min(...ls);
  const lx = ns.map(Math.log);
  let best: PowerLawFit | null = null;
  let bestErr = Infinity;
  for (let i = 0; i < steps; i++) {
    const c = (minL * i) / steps; // below min L, so every log(L - c) is finite
    const f = ols(lx, ls.map((l) => Math.log(l - c)));
    const a = Math.exp(f.b0);
    const alpha = -f.b1;
    let err = 0;
    for (let j = 0; j < ns.length; j++) err += (ls[j]! - c - a * ns[j]! ** -alpha) ** 2;
    if (err < bestErr) {
      bestErr = err;
      best = { a, alpha, alphaSE: f.se1, c, r2: f.r2, n: ns.length };
    }
  }
  return best!;
}

export interface BootstrapSummary {
  /** alpha of the fit on all languages. */
  alpha: number;
  /** Standard deviation of alpha over the resamples. */
  std: number;
  /** 2.5% and 97.5% percentiles of alpha over the resamples. */
  ci95: [number, number];
  resamples: number;
}

/**
 * Bootstrap over languages: `losses[i][j]` is the loss of point i (a size and seed) on language j.
 * Each resample draws the languages with replacement, averages each point's loss over them and refits
 * alpha; the spread says how much alpha depends on which languages the corpus happens to hold.
 */
export function bootstrapAlphaOverLanguages(ns: readonly number[], losses: ReadonlyArray<readonly number[]>, opts: { resamples?: number; seed?: number } = {}): BootstrapSummary {
  const B = opts.resamples ?? 1000;
  if (!(Number.isInteger(B) && B >= 2)) throw new Error(`bootstrapAlphaOverLanguages: resamples must be an integer >= 2, got ${B}`);
  if (losses.length !== ns.length) throw new Error(`bootstrapAlphaOverLanguages: ${ns.length} sizes for ${losses.length} rows of losses`);
  const J = losses[0]?.length ?? 0;
  if (J === 0) throw new Error('bootstrapAlphaOverLanguages: no languages');
  losses.forEach((row, i) => { if (row.length !== J) throw new Error(`bootstrapAlphaOverLanguages: row ${i} has ${row.length} languages, row 0 has ${J}`); });
  const mean = (row: readonly number[], pick: readonly number[]) => pick.reduce((s, j) => s + row[j]!, 0) / pick.length;
  const all = Array.from({ length: J }, (_, j) => j);
  const alpha = fitPowerLaw(ns, losses.map((r) => mean(r, all))).alpha;
  const rng = new Rng(opts.seed ?? 0);
  const alphas: number[] = [];
  for (let b = 0; b < B; b++) {
    const pick = Array.from({ length: J }, () => Math.min(J - 1, Math.floor(rng.next() * J)));
    alphas.push(fitPowerLaw(ns, losses.map((r) => mean(r, pick))).alpha);
  }
  alphas.sort((p, q) => p - q);
  const m = alphas.reduce((s, v) => s + v, 0) / B;
  const std = Math.sqrt(alphas.reduce((s, v) => s + (v - m) ** 2, 0) / (B - 1));
  const q = (p: number) => alphas[Math.min(B - 1, Math.max(0, Math.round(p * (B - 1))))]!;
  return { alpha, std, ci95: [q(0.025), q(0.975)], resamples: B };
}
