// Timing for benchmarks: warm up, then the median of repeated runs within a time budget.

import { median } from '../src/report/stats.js';

export interface Timing {
  medianMs: number;
  runs: number;
}

/**
 * Runs fn once to warm up, then repeats it until minRuns runs and budgetMs have both passed
 * (at most maxRuns), and returns the median. A single run longer than the budget is timed once.
 */
export function measure(fn: () => void, opts: { budgetMs?: number; minRuns?: number; maxRuns?: number } = {}): Timing {
  const budget = opts.budgetMs ?? 1000;
  const minRuns = opts.minRuns ?? 5;
  const maxRuns = opts.maxRuns ?? 50;
  const t0 = performance.now();
  fn();
  const warm = performance.now() - t0;
  const times: number[] = [];
  const start = performance.now();
  while (times.length < maxRuns) {
    if (times.length >= minRuns && performance.now() - start >= budget) break;
    if (times.length >= 1 && warm > budget) break;
    const s = performance.now();
    fn();
    times.push(performance.now() - s);
  }
  return { medianMs: median(times), runs: times.length };
}

export { median } from '../src/report/stats.js';

/** Right-aligned table for terminal output. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
