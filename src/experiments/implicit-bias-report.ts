// The implicit-bias experiment's figures across training seeds: per-run records merged into one
// record per (n, k, method), the Algorithm 1 vs random verdict against both spreads (random subsets
// and training seeds), and results.md with its plot.

import type { SoftMoERecipe } from '../models/softmoe-classifier.js';
import { lineChart } from '../report/plot.js';
import { markdownTable } from '../report/table.js';
import { formatSeconds, meanStd } from './common.js';
import type { AccuracyRecord, ImplicitBiasResult, RunRecord } from './implicit-bias.js';

/**
 * One record per (n, k, method) from the records of several training runs of the same n (each run
 * with the same (k, method) list, in the same order): the means over the runs, the spread of the
 * accuracy across them, and each run's accuracy.
 */
export function aggregateRuns(runs: readonly (readonly RunRecord[])[], recipe: SoftMoERecipe): AccuracyRecord[] {
  if (runs.length === 0) return [];
  const first = runs[0]!;
  for (const r of runs) {
    if (r.length !== first.length || r.some((x, i) => x.n !== first[i]!.n || x.k !== first[i]!.k || x.method !== first[i]!.method)) {
      throw new Error(`implicit-bias: the training runs of n = ${first[0]?.n} do not hold the same (k, method) records; were they made by different versions?`);
    }
  }
  return first.map((base, i) => {
    const cell = runs.map((r) => r[i]!);
    const acc = meanStd(cell.map((x) => x.accuracy));
    const shares = cell.map((x) => x.keptShare);
    const rec: AccuracyRecord = {
      n: base.n, k: base.k, method: base.method, recipe, trainingSeeds: runs.length,
      accuracy: acc.mean, accuracyStd: meanStd(cell.map((x) => x.accuracyStd)).mean, seeds: base.seeds, trainingStd: acc.std,
      runs: cell.map((x) => x.accuracy),
    };
    if (shares.every((s) => s !== undefined)) rec.keptShare = meanStd(shares as number[]).mean;
    return rec;
  });
}

export type Verdict = 'better' | 'worse' | 'within noise';

export interface Comparison {
  n: number;
  k: number;
  algorithm1: AccuracyRecord;
  random: AccuracyRecord;
  /** Mean over training runs of Algorithm 1's accuracy minus random's. */
  difference: number;
  /** Spread of random selection: the sample std over random subsets, averaged over the training runs. */
  randomStd: number;
  /** Spread across training seeds: the sample std of the per-run difference; null with one run. */
  trainingStd: number | null;
  /**
   * 'better' / 'worse' when |difference| exceeds two of each spread; with one training run only the
   * random spread can be checked (trainingStd null), and the verdict says nothing about seed noise.
   */
  verdict: Verdict;
}

/** Algorithm 1 against random selection at every evaluated k < n. */
export function compareSelections(records: readonly AccuracyRecord[]): Comparison[] {
  const out: Comparison[] = [];
  for (const a of records) {
    if (a.method !== 'algorithm1' || a.k >= a.n) continue;
    const r = records.find((x) => x.n === a.n && x.k === a.k && x.method === 'random');
    if (!r) continue;
    const difference = a.accuracy - r.accuracy;
    const ra = a.runs ?? [a.accuracy];
    const rr = r.runs ?? [r.accuracy];
    const trainingStd = ra.length > 1 ? meanStd(ra.map((v, i) => v - rr[i]!)).std : null;
    const margin = 2 * Math.max(r.accuracyStd, trainingStd ?? 0);
    const verdict: Verdict = difference > margin ? 'better' : difference < -margin ? 'worse' : 'within noise';
    out.push({ n: a.n, k: a.k, algorithm1: a, random: r, difference, randomStd: r.accuracyStd, trainingStd, verdict });
  }
  return out;
}

/** Training runs of each n, in the order of the records (1 for results from before training seeds existed). */
export function trainingRunsPerN(r: ImplicitBiasResult): Map<number, number> {
  const m = new Map<number, number>();
  for (const rec of r.records) if (!m.has(rec.n)) m.set(rec.n, Math.max(1, r.models.filter((x) => x.n === rec.n).length));
  return m;
}

/** "0, 1, 2" when every n has the same seeds, else "0, 1, 2 for n = 16, 64; 0 for n = 256". */
function seedList(r: ImplicitBiasResult): string {
  const first = r.config.seed;
  const byCount = new Map<number, number[]>();
  for (const [n, t] of trainingRunsPerN(r)) byCount.set(t, [...(byCount.get(t) ?? []), n]);
  const seeds = (t: number) => Array.from({ length: t }, (_, i) => first + i).join(', ');
  if (byCount.size <= 1) return seeds([...byCount.keys()][0] ?? 1);
  return [...byCount].sort((a, b) => b[0] - a[0]).map(([t, ns]) => `${seeds(t)} for n = ${ns.join(', ')}`).join('; ');
}

export function accuracyPlot(r: ImplicitBiasResult) {
  const rows: Record<string, unknown>[] = [];
  for (const rec of r.records) {
    const base = { 'k/n': rec.k / rec.n, accuracy: rec.accuracy, n: rec.n };
    if (rec.method === 'algorithm1' && rec.k < rec.n) rows.push({ ...base, selection: 'Algorithm 1' });
    if (rec.method === 'random') rows.push({ ...base, selection: 'random' });
    // both lines end at the full model
    if (rec.method === 'all') rows.push({ ...base, selection: 'Algorithm 1' }, { ...base, selection: 'random' });
  }
  const counts = [...new Set(trainingRunsPerN(r).values())];
  const seeds = counts.length > 1 ? `, mean of ${Math.min(...counts)}-${Math.max(...counts)} training seeds per n` : counts[0]! > 1 ? `, mean of ${counts[0]!} training seeds` : '';
  return lineChart({
    title: `Soft MoE on ${r.dataset} (recipe ${r.recipe ?? 'moe-ts'}${seeds}): test accuracy with k of n experts`,
    x: { field: 'k/n', title: 'k / n (fraction of experts kept)', scale: 'log' },
    y: { field: 'accuracy', title: 'test accuracy' },
    series: 'n', dash: 'selection', data: rows, width: 560, height: 340,
  });
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
const pts = (x: number) => (100 * x).toFixed(2);

const RECIPE_TEXT: Record<SoftMoERecipe, string> = {
  'moe-ts': 'recipe moe-ts: slots formed from the raw tokens, Phi ~ N(0, 1/d), a decoder bias, training batches reshuffled every epoch and a step on every batch',
  authors: 'recipe authors (Chung et al.\'s code): slots formed from the l2-normalised tokens, Phi ~ U[-1, 1], no decoder bias, training batches in the data\'s order, no optimizer step in the first epoch',
};

export function implicitBiasMarkdown(r: ImplicitBiasResult, command?: string): string {
  const c = r.config;
  const recipe = r.recipe ?? 'moe-ts';
  const runsOf = trainingRunsPerN(r);
  const S = Math.max(1, ...runsOf.values());
  const single = [...runsOf].filter(([, t]) => t === 1).map(([n]) => n);
  const lines: string[] = [];
  lines.push(`# Implicit bias of Soft MoE: expert-subset selection on ${r.dataset} (recipe ${recipe})`, '');
  if (command) lines.push('Command:', '', '```', command, '```', '');
  lines.push(`Data: ${r.data.note}.`, '');
  lines.push(`Model: Soft MoE patch classifier (4 tokens of 14x14 pixels, one slot per expert, experts Linear-ReLU-Linear without biases, hidden h = floor(784/n)); ${RECIPE_TEXT[recipe]}. `
    + `${c.epochs} epochs of Adam (lr ${c.lr}, batch ${c.batchSize}); training seeds ${seedList(r)} (each seeds the model's initialisation${c.shuffle === false ? '' : ' and the batch order'}). `
    + `Algorithm 1 keeps, per input, the k experts with the largest Csum (the combine weights C summed over tokens and the expert's slots) and combines with the unchanged C; `
    + `"random" keeps k experts drawn uniformly per input, ${c.randomSeeds} draws per trained model. `
    + (S > 1
      ? `Every figure is the mean over ${new Set(runsOf.values()).size > 1 ? 'the training runs of its n (column "training runs" below)' : `the ${S} training runs`}; "± tr." is the sample standard deviation across training runs, "± rnd." that over the random draws (averaged over the runs). `
      + 'The verdict counts Algorithm 1 better (or worse) than random only where the difference exceeds twice the random spread and twice the training-seed spread of the per-run difference. '
      + (single.length > 0 ? `n = ${single.join(', ')} ${single.length > 1 ? 'are one training run each: their verdicts check' : 'is one training run: its verdict checks'} the difference only against twice the random spread, so ${single.length > 1 ? 'they say' : 'it says'} nothing about training noise. ` : '')
      : 'Each n is one training run (one seed): the verdict checks the difference only against twice the random spread, so it says nothing about training noise. ')
    + `Not in the paper: "renorm." is Algorithm 1 with C divided, per token, by the weight of the kept slots, and "C kept" the mean share of the combine weight the Algorithm 1 subset holds (a random subset holds k/n on average). `
    + 'The trained weights are in models/n<N>.safetensors (the first training seed) and models/n<N>-seed<S>.safetensors of the run directory.', '');
  const sum = (f: (m: ImplicitBiasResult['models'][number]) => number) => r.models.reduce((a, m) => a + f(m), 0);
  lines.push(`Time on this machine: ${formatSeconds(sum((m) => m.trainSeconds))} training and ${formatSeconds(sum((m) => m.evalSeconds))} evaluating (sums over the runs below; a resumed run adds up the parts).`, '');
  lines.push('## Training runs', '');
  lines.push(markdownTable(['n', 'training seed', 'hidden h', 'parameters', 'steps', 'train time', 'eval time', 'all experts'],
    r.models.map((m) => {
      const all = r.records.find((x) => x.n === m.n && x.method === 'all')!;
      const i = (m.seed ?? c.seed) - c.seed;
      return [m.n, m.seed ?? c.seed, m.hidden, m.parameters, m.steps, formatSeconds(m.trainSeconds), formatSeconds(m.evalSeconds), pct(all.runs?.[i] ?? all.accuracy)];
    })));
  const cmp = compareSelections(r.records);
  lines.push('', '## Algorithm 1 against random, per n', '');
  const ns = [...new Set(r.records.map((x) => x.n))];
  lines.push(markdownTable(['n', 'training runs', 'all experts', 'evaluated k < n', 'Alg. 1 better', 'Alg. 1 worse', 'within noise'],
    ns.map((n) => {
      const all = r.records.find((x) => x.n === n && x.method === 'all')!;
      const c2 = cmp.filter((x) => x.n === n);
      const count = (v: string) => c2.filter((x) => x.verdict === v).length;
      const t = runsOf.get(n) ?? 1;
      return [n, t, t > 1 ? `${pct(all.accuracy)} ± ${pts(all.trainingStd ?? 0)}` : pct(all.accuracy), c2.length, count('better'), count('worse'), count('within noise')];
    }), { align: ['r', 'r', 'r', 'r', 'r', 'r', 'r'] }));
  lines.push('', '## Accuracy with k of n experts', '');
  const rows: (string | number)[][] = [];
  for (const n of ns) {
    const all = r.records.find((x) => x.n === n && x.method === 'all')!;
    for (const rec of r.records.filter((x) => x.n === n && x.method === 'algorithm1')) {
      const cp = cmp.find((x) => x.n === n && x.k === rec.k);
      const ren = r.records.find((x) => x.n === n && x.k === rec.k && x.method === 'algorithm1-renormalized');
      const tr = (x: AccuracyRecord) => ((runsOf.get(n) ?? 1) > 1 ? ` ± ${pts(x.trainingStd ?? 0)} tr.` : '');
      rows.push([n, rec.k, (rec.k / n).toFixed(3), `${pct(rec.accuracy)}${tr(rec)}`,
        cp ? `${pct(cp.random.accuracy)}${tr(cp.random)} ± ${pts(cp.randomStd)} rnd.` : '(= all)',
        cp ? `${pts(cp.difference)}${cp.trainingStd !== null ? ` ± ${pts(cp.trainingStd)} tr.` : ''}` : '', cp ? cp.verdict : '',
        ren ? pct(ren.accuracy) : '', rec.keptShare !== undefined ? pct(rec.keptShare) : '', pct(all.accuracy)]);
    }
  }
  lines.push(markdownTable(['n', 'k', 'k/n', 'Algorithm 1', 'random', 'Alg. 1 − random (points)', 'verdict', 'Alg. 1 renorm.', 'C kept by Alg. 1', 'all experts'], rows,
    { align: ['r', 'r', 'r', 'r', 'r', 'r', 'l', 'r', 'r', 'r'] }));
  lines.push('', 'Rows with k = n run Algorithm 1 keeping every expert, a check that it equals the full layer.', '');
  lines.push('![accuracy against k/n](accuracy-vs-k.png)', '');
  return `${lines.join('\n')}\n`;
}
