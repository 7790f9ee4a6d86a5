// Shared pieces of the experiments: partial-result files for resuming, option checks, statistics.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';

/** Raised for a bad experiment option; the message names the option. */
export class ExperimentOptionError extends Error {
  constructor(experiment: string, option: string, message: string) {
    super(`${experiment}: option ${option}: ${message}`);
    this.name = 'ExperimentOptionError';
  }
}

/** Throws ExperimentOptionError naming every key of `given` outside `known`. */
export function rejectUnknownOptions(experiment: string, given: object, known: readonly string[]): void {
  const bad = Object.keys(given).filter((k) => !known.includes(k));
  if (bad.length > 0) throw new ExperimentOptionError(experiment, bad.join(', '), `unknown (known: ${known.join(', ')})`);
}

export function checkPositiveInt(experiment: string, option: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ExperimentOptionError(experiment, option, `must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}

export function checkPositiveNumber(experiment: string, option: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ExperimentOptionError(experiment, option, `must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

export function checkIntList(experiment: string, option: string, v: unknown, min = 1): number[] {
  if (!Array.isArray(v) || v.length === 0) throw new ExperimentOptionError(experiment, option, `must be a non-empty list of integers, got ${JSON.stringify(v)}`);
  for (const x of v) checkPositiveInt(experiment, option, x, min);
  if (new Set(v).size !== v.length) throw new ExperimentOptionError(experiment, option, `has repeated values: ${v.join(', ')}`);
  return [...(v as number[])].sort((a, b) => a - b);
}

/** Mean and sample standard deviation (0 for a single value). */
export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const n = xs.length;
  if (n === 0) return { mean: NaN, std: NaN };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n === 1) return { mean, std: 0 };
  const v = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
  return { mean, std: Math.sqrt(v) };
}

/**
 * A JSON file of finished units (trained models, ...) that a rerun continues from. `config` is what
 * makes units comparable: a rerun with a different one must not mix into old results, so it is an
 * error that names the differing keys.
 */
export class PartialResults<U> {
  readonly units: U[];

  constructor(readonly path: string, readonly config: Record<string, unknown>, readonly experiment: string) {
    this.units = [];
    if (!existsSync(path)) return;
    let saved: { config?: Record<string, unknown>; units?: U[] };
    try {
      saved = JSON.parse(readFileSync(path, 'utf8')) as typeof saved;
    } catch (e) {
      throw new Error(`${experiment}: ${path} is not valid JSON (${(e as Error).message}); delete it to start over`);
    }
    const old = saved.config ?? {};
    const keys = new Set([...Object.keys(old), ...Object.keys(config)]);
    const differ = [...keys].filter((k) => JSON.stringify(old[k]) !== JSON.stringify(config[k]));
    if (differ.length > 0) {
      throw new Error(`${experiment}: ${path} holds results of a different configuration (${differ.map((k) => `${k}: ${JSON.stringify(old[k])} there, ${JSON.stringify(config[k])} now`).join('; ')}); choose another --out or delete it to start over`);
    }
    this.units.push(...(saved.units ?? []));
  }

  add(unit: U): void {
    this.units.push(unit);
    mkdirSync(dirname(this.path), { recursive: true });
    writeFileAtomic(this.path, `${JSON.stringify({ config: this.config, units: this.units }, null, 1)}\n`);
  }
}

/** Shell-quotes an argument list so that results.md shows a command one can paste. */
export function shellCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export function formatSeconds(s: number): string {
  if (s < 59.95) return `${s.toFixed(1)} s`;
  // round first so that 539.7 s reads 9 min 0 s, not 8 min 60 s
  const whole = Math.round(s);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  const minutes = Math.round(s / 60);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}
