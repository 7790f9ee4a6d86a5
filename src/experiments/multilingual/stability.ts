// Part 5 of the multilingual study: routing stability over training, the share of probe tokens
// whose top-1 expert changes between checkpoints, per layer (the base runs of part 1, reused).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { markdownTable } from '../../report/table.js';
import { lineChart, writePlot } from '../../report/plot.js';
import { formatSeconds, meanStd } from '../common.js';
import { defaultOut, writeResults, type MultilingualPart, type PartOptions, type PartResult } from './part.js';
import { baseSpec, runsOf, seedsOf, studyCorpus } from './study.js';

const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'n/a');
const pm = (xs: number[]): string => {
  const { mean, std } = meanStd(xs);
  return xs.length > 1 ? `${pct(mean)} ± ${pct(std)}` : pct(mean);
};

export async function runStability(o: PartOptions): Promise<PartResult> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const out = o.out ?? defaultOut('stability', o.quick);
  mkdirSync(out, { recursive: true });
  const corpus = await studyCorpus(o.quick);
  const spec = baseSpec(corpus, o.quick);
  const runs = runsOf(corpus, 'base', spec, seedsOf(o.seeds, o.quick), out, log);
  const steps = runs[0]!.snapshots.steps;
  const layers = runs[0]!.final.language.length;
  const table: Array<Record<string, number | number[]>> = [];
  const rows: (string | number)[][] = [];
  const plotRows: Record<string, unknown>[] = [];
  for (let i = 1; i < steps.length; i++) {
    for (let l = 0; l < layers; l++) {
      const prev = runs.map((r) => r.snapshots.changedSincePrevious[i]![l]!);
      const fin = runs.map((r) => r.snapshots.changedVsFinal[i - 1]![l]!);
      const high = runs.map((r) => r.snapshots.changedSincePreviousByResource.high[i]![l]!);
      const low = runs.map((r) => r.snapshots.changedSincePreviousByResource.low[i]![l]!);
      table.push({ fromStep: steps[i - 1]!, toStep: steps[i]!, layer: l, changedSincePrevious: prev, changedFromStepToFinal: fin, high, low });
      rows.push([`${steps[i - 1]} -> ${steps[i]}`, l, pm(prev), pm(high), pm(low), pm(fin)]);
      // per 100 steps, so unequal checkpoint gaps compare
      plotRows.push({ step: steps[i]!, layer: `layer ${l}`, changed: meanStd(prev).mean, per100: (100 * meanStd(prev).mean) / (steps[i]! - steps[i - 1]!) });
    }
  }
  const plot = await writePlot(join(out, 'top1-changes'), lineChart({
    title: 'Share of probe tokens whose top-1 expert changed since the previous checkpoint', x: { field: 'step', title: 'training step' },
    y: { field: 'changed', title: 'changed share' }, series: 'layer', data: plotRows,
  }));
  const plot100 = await writePlot(join(out, 'top1-changes-per-100-steps'), lineChart({
    title: 'Top-1 changes per 100 steps (changed share / gap x 100)', x: { field: 'step', title: 'training step' },
    y: { field: 'per100', title: 'changed share per 100 steps' }, series: 'layer', data: plotRows,
  }));
  const seconds = (performance.now() - t0) / 1000;
  const md = [
    '# Multilingual study, part 5: routing stability over training',
    '',
    `Command: \`${o.command}\``,
    '',
    `Time: ${formatSeconds(seconds)} for this report; the training runs (the base runs of part 1, ${runs.map((r) => formatSeconds(r.trainSeconds)).join(', ')}) are cached and shared.`,
    '',
    `Probe: the first ${spec.probeWindowsPerLanguage} validation windows of ${spec.seqLen} bytes of each language (${corpus.languages.length} languages), routed in eval mode at steps ${steps.join(', ')}. Seeds ${runs.map((r) => r.seed).join(', ')} (mean ± std). "high" / "low": probe tokens of high- / low-resource languages. "-> final": share whose top-1 at the earlier checkpoint differs from the end of training.`,
    '',
    markdownTable(['checkpoints', 'layer', 'changed', 'high-resource', 'low-resource', 'earlier checkpoint -> final'], rows),
    '',
    `Plots: ${plot.png.split('/').pop()}, ${plot100.png.split('/').pop()}`,
    '',
  ].join('\n');
  writeResults(out, { part: 'stability', command: o.command, seconds, spec, seeds: runs.map((r) => r.seed), steps, changes: table, plots: [plot.png, plot100.png].map((p) => p.split('/').pop()) }, md);
  const last = table.filter((r) => r['toStep'] === steps[steps.length - 1]).map((r) => pct(meanStd(r['changedSincePrevious'] as number[]).mean)).join('/');
  return { out, seconds, summary: `stability: top-1 changed in the last checkpoint gap ${last} (per layer); ${out}/results.md` };
}

export const stabilityPart: MultilingualPart = {
  help: 'stability: share of probe tokens whose top-1 expert changes between checkpoints, per layer, over training (reuses the specialisation runs)',
  run: (o) => runStability(o),
};
