// Which records of runs' metrics.jsonl `moe plot` draws: reading the logs, and choosing the split
// (val, train or test) when none is asked for, since many runs (every shipped config but the LM
// ones) have no validation split.

import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

export const PLOT_SPLITS = ['val', 'test', 'train'] as const;
export type PlotSplit = (typeof PLOT_SPLITS)[number];

/** Without --split: validation, else the per-step training curve, else the test evaluations. */
const DEFAULT_ORDER: readonly PlotSplit[] = ['val', 'train', 'test'];

export interface RunLog {
  dir: string;
  file: string;
  /** The run's name in the legend: its directory's base name. */
  name: string;
  records: Array<Record<string, unknown>>;
  /**
   * The 1-based number of a last line that was skipped because its write was cut short (no newline,
   * not a JSON record: a run killed with kill -9, or a full disk, and never resumed); null if none.
   */
  tornLine: number | null;
}

/** A line's record, or null when it is not a JSON object. */
function parseRecord(line: string): Record<string, unknown> | null {
  try {
    const rec: unknown = JSON.parse(line);
    return typeof rec === 'object' && rec !== null && !Array.isArray(rec) ? (rec as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export function readRunLog(dir: string): RunLog {
  const file = join(dir, 'metrics.jsonl');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new Error(`plot: ${file}: cannot read (is ${dir} a run directory?)`);
  }
  const records: Array<Record<string, unknown>> = [];
  const lines = text.split('\n');
  let tornLine: number | null = null;
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    const rec = parseRecord(line);
    if (rec) { records.push(rec); return; }
    // Every record is written with its newline, so only the text after the last newline can be a
    // write cut short; the run's own resume would cut it (rundir.ts), but a run never resumed keeps
    // it. A bad line anywhere else is damage that plotting around would hide.
    if (i === lines.length - 1) { tornLine = i + 1; return; }
    throw new Error(`plot: ${file}:${i + 1}: not a valid JSON record`);
  });
  return { dir, file, name: basename(dir.replace(/\/+$/, '')), records, tornLine };
}

/** The note plot prints for a log whose torn last line it skipped. */
export function tornLineNote(log: RunLog): string | null {
  return log.tornLine === null ? null
    : `plot: ${log.file}:${log.tornLine}: skipped an incomplete last line (a write cut short, e.g. by kill -9; moe train --resume repairs the log)`;
}

function inSplit(rec: Record<string, unknown>, split: PlotSplit): boolean {
  return split === 'train' ? rec['type'] === 'step' : rec['type'] === 'eval' && rec['split'] === split;
}

/** The points of one split: { step, value, run } for every record with a number under `metric`. */
export function splitRows(log: RunLog, split: PlotSplit, metric: string): Array<Record<string, unknown>> {
  return log.records.filter((r) => inSplit(r, split) && typeof r[metric] === 'number').map((r) => ({ step: r['step'], value: r[metric], run: log.name }));
}

/** The splits of a log that have the metric, in the order val, test, train. */
export function splitsWithMetric(log: RunLog, metric: string): PlotSplit[] {
  return PLOT_SPLITS.filter((s) => log.records.some((r) => inSplit(r, s) && typeof r[metric] === 'number'));
}

const listOf = (splits: readonly string[]): string => (splits.length > 0 ? splits.join(', ') : 'none');

/**
 * The split to draw: the one asked for (every run must have it), else the first of val, train,
 * test that every run has, with a note saying so when it is not val.
 */
export function chooseSplit(logs: readonly RunLog[], requested: string | undefined, metric: string): { split: PlotSplit; note: string | null } {
  if (requested !== undefined) {
    if (!(PLOT_SPLITS as readonly string[]).includes(requested)) throw new Error(`plot: --split must be val, test or train, got ${requested}`);
    for (const log of logs) {
      const has = splitsWithMetric(log, metric);
      if (!has.includes(requested as PlotSplit)) throw new Error(`plot: ${log.file} has no ${requested} records with a number '${metric}' (splits with '${metric}' there: ${listOf(has)})`);
    }
    return { split: requested as PlotSplit, note: null };
  }
  const has = logs.map((l) => splitsWithMetric(l, metric));
  const split = DEFAULT_ORDER.find((s) => has.every((h) => h.includes(s)));
  if (split === undefined) {
    throw new Error(`plot: no split has a number '${metric}' in every run (${logs.map((l, i) => `${l.file}: ${listOf(has[i]!)}`).join('; ')}); choose runs, --metric or --split`);
  }
  if (split === 'val') return { split, note: null };
  const without = logs.filter((_, i) => !has[i]!.includes('val')).map((l) => l.file);
  return { split, note: `plot: no val records with '${metric}' in ${without.join(', ')} (data.valFraction is 0?); drawing the ${split} split instead (--split val|test|train chooses)` };
}
