// Run directories for the dashboard: checking one at start, and parsing metrics.jsonl lines into records.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';

/** One line of metrics.jsonl: a 'step' or 'eval' record (see src/train/trainer.ts), other kinds passed through. */
export type MetricsRecord = Record<string, unknown> & { type: string };

export interface RunInfo {
  /** Display name: the directory's base name, made unique across the runs given. */
  name: string;
  dir: string;
  metricsFile: string;
  /** config.json's model.numExperts when it has one (log E on the entropy chart), else null. */
  numExperts: number | null;
  /** config.json's model.type, for the legend. */
  modelType: string | null;
}

/** Checks a run directory written by `moe train`; throws naming the directory and what is wrong. */
export function openRun(dirArg: string): RunInfo {
  const dir = resolve(dirArg);
  if (!existsSync(dir)) throw new Error(`dashboard: run directory ${dirArg} does not exist`);
  if (!statSync(dir).isDirectory()) throw new Error(`dashboard: ${dirArg} is not a directory (give a run directory written by moe train)`);
  const configFile = join(dir, 'config.json');
  if (!existsSync(configFile)) throw new Error(`dashboard: ${dirArg} has no config.json; is it a run directory written by moe train?`);
  let config: unknown;
  try {
    config = JSON.parse(readFileSync(configFile, 'utf8'));
  } catch (e) {
    throw new Error(`dashboard: ${configFile} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof config !== 'object' || config === null) throw new Error(`dashboard: ${configFile} is not a JSON object`);
  const model = (config as Record<string, unknown>)['model'];
  const m = typeof model === 'object' && model !== null ? (model as Record<string, unknown>) : {};
  const e = m['numExperts'];
  const metricsFile = join(dir, 'metrics.jsonl');
  // a run that has just started may not have logged a step yet: the tail picks the file up when it appears
  if (existsSync(metricsFile) && !statSync(metricsFile).isFile()) throw new Error(`dashboard: ${metricsFile} is not a file`);
  return {
    name: basename(dir), dir, metricsFile,
    numExperts: typeof e === 'number' && Number.isInteger(e) && e >= 1 ? e : null,
    modelType: typeof m['type'] === 'string' ? m['type'] : null,
  };
}

/** Opens every run, refusing the first bad one by name; names are made unique (a/run, b/run -> run, run#2). */
export function openRuns(dirs: readonly string[]): RunInfo[] {
  if (dirs.length === 0) throw new Error('dashboard: give at least one run directory (moe dashboard RUN...)');
  const runs = dirs.map(openRun);
  const seen = new Map<string, number>();
  for (const r of runs) {
    const n = (seen.get(r.name) ?? 0) + 1;
    seen.set(r.name, n);
    if (n > 1) r.name = `${r.name}#${n}`;
  }
  return runs;
}

/**
 * Parses complete lines of metrics.jsonl. A line that is not a JSON object with a string `type`
 * is counted in `bad` and skipped rather than failing the page: a hand-edited or foreign line
 * should not hide the rest of the run.
 */
export function parseLines(lines: readonly string[]): { records: MetricsRecord[]; bad: number } {
  const records: MetricsRecord[] = [];
  let bad = 0;
  for (const line of lines) {
    if (line.trim() === '') continue;
    try {
      const v: unknown = JSON.parse(line);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) { bad++; continue; }
      const o = v as { type?: unknown; kind?: unknown };
      // `kind` is accepted for `type` (the expertLanguage record was first specified with it)
      if (typeof o.type !== 'string' && typeof o.kind === 'string') o.type = o.kind;
      if (typeof o.type === 'string') records.push(v as MetricsRecord);
      else bad++;
    } catch {
      bad++;
    }
  }
  return { records, bad };
}

/**
 * Splits text read from the log into complete lines and the unterminated rest: the trainer
 * appends whole lines, but a read can land in the middle of one.
 */
export function splitComplete(text: string): { lines: string[]; rest: string } {
  const end = text.lastIndexOf('\n');
  if (end < 0) return { lines: [], rest: text };
  return { lines: text.slice(0, end).split('\n'), rest: text.slice(end + 1) };
}
