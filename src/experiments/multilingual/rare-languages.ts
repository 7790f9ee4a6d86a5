// Part 4 of the multilingual study: do low-resource languages reach under-trained experts, what is
// their loss gap, and what do two remedies (temperature language sampling; a stronger
// load-balance loss as a minimum-traffic rule) buy them and cost the high-resource languages?
//
// "Rarely trained expert" is src/infer/rare-experts.ts's definition (training share < t / E).

import type { MultilingualCorpus } from '../../data/multilingual-corpus.js';
import { RareExperts } from '../../infer/rare-experts.js';
import { markdownTable } from '../../report/table.js';
import { formatSeconds, meanStd } from '../common.js';
import { defaultOut, writeResults, type MultilingualPart, type PartOptions, type PartResult } from './part.js';
import type { RunRecord, RunSpec } from './routed-lm.js';
import { baseSpec, runsOf, seedsOf, studyCorpus } from './study.js';

export const THRESHOLDS = [0.25, 0.5];

/** The cells: the base run and the two remedies, each a change of the base spec. */
export function remedySpecs(base: RunSpec): Array<{ name: string; what: string; spec: RunSpec }> {
  return [
    { name: 'base', what: 'language sampled in proportion to its training bytes; load-balance coefficient 0.01', spec: base },
    { name: 'temperature', what: `languages sampled with p ∝ bytes^(1/5) (temperature 5)`, spec: { ...base, temperature: 5 } },
    { name: 'balance', what: 'minimum-traffic rule: load-balance coefficient 0.1 (10x), pushing every expert towards its 1/E share', spec: { ...base, model: { ...base.model, loadBalanceCoef: 0.1 } } },
  ];
}

export interface RareMeasures {
  meanLoss: Record<'high' | 'low' | 'lowWithRelative' | 'lowAlone', number>;
  /** Per threshold: rare experts (summed over layers) and the share of each group's validation assignments that reach them. */
  rare: Array<{ threshold: number; rareExperts: number; shareHigh: number; shareLow: number }>;
  /** Mean over a group's assignments of (training share of the chosen expert) x E: 1 = an expert trained as much as average. */
  relTrainShare: Record<'high' | 'low', number>;
  /** Share of training windows drawn from low-resource languages. */
  lowTrainWindowShare: number;
}

/** Low-resource languages that share a genus with a high-resource language of the corpus. */
export function hasHighRelative(corpus: MultilingualCorpus, code: string): boolean {
  const l = corpus.languages.find((x) => x.code === code)!;
  return corpus.languages.some((o) => o.resource === 'high' && o.genus === l.genus);
}

export function rareMeasures(r: RunRecord, corpus: MultilingualCorpus): RareMeasures {
  const E = r.trainCounts[0]!.length;
  const k = (r.spec.model.k ?? 2);
  const groups = { high: [] as number[], low: [] as number[], lowWithRelative: [] as number[], lowAlone: [] as number[] };
  for (const l of corpus.languages) {
    const loss = r.valLoss[l.code]!;
    if (l.resource === 'high') groups.high.push(loss);
    else {
      groups.low.push(loss);
      (hasHighRelative(corpus, l.code) ? groups.lowWithRelative : groups.lowAlone).push(loss);
    }
  }
  const mean = (xs: number[]) => (xs.length > 0 ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
  const assigned = (res: 'high' | 'low', weight: (layer: number, e: number) => number) => {
    let num = 0;
    let den = 0;
    r.final.language.forEach((layer, li) => corpus.languages.forEach((l) => {
      if (l.resource !== res) return;
      layer[l.id]!.forEach((c, e) => { num += c * weight(li, e); den += c; });
    }));
    return den > 0 ? num / den : NaN;
  };
  const counts = { tokens: 0, layers: r.trainCounts };
  const rare = THRESHOLDS.map((threshold) => {
    const re = new RareExperts(counts, { numExperts: E, topK: Math.min(k, E), threshold });
    return {
      threshold, rareExperts: re.trackedLayers.reduce((s, l) => s + re.rareCount(l), 0),
      shareHigh: assigned('high', (l, e) => (re.isRare(l, e) ? 1 : 0)), shareLow: assigned('low', (l, e) => (re.isRare(l, e) ? 1 : 0)),
    };
  });
  const share = r.trainCounts.map((c) => {
    const s = c.reduce((a, b) => a + b, 0);
    return c.map((v) => (s > 0 ? (v / s) * E : 0));
  });
  const windows = r.trainWindowsPerLanguage.reduce((a, b) => a + b, 0);
  return {
    meanLoss: { high: mean(groups.high), low: mean(groups.low), lowWithRelative: mean(groups.lowWithRelative), lowAlone: mean(groups.lowAlone) },
    rare,
    relTrainShare: { high: assigned('high', (l, e) => share[l]![e]!), low: assigned('low', (l, e) => share[l]![e]!) },
    lowTrainWindowShare: corpus.languages.filter((l) => l.resource === 'low').reduce((s, l) => s + r.trainWindowsPerLanguage[l.id]!, 0) / windows,
  };
}

const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
const pm = (xs: number[], f = f3): string => {
  const { mean, std } = meanStd(xs);
  return xs.length > 1 ? `${f(mean)} ± ${f(std)}` : f(mean);
};
const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'n/a');

export async function runRareLanguages(o: PartOptions): Promise<PartResult> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const out = o.out ?? defaultOut('rare', o.quick);
  const corpus = await studyCorpus(o.quick);
  const seeds = seedsOf(o.seeds, o.quick);
  const cells = remedySpecs(baseSpec(corpus, o.quick)).map((c) => {
    const runs = runsOf(corpus, c.name, c.spec, seeds, out, log);
    return { ...c, runs, measures: runs.map((r) => rareMeasures(r, corpus)) };
  });
  // control: the same model and languages trained with no low-resource cut, so each language's
  // loss gap is measured against itself (scripts differ widely in nats per byte)
  const fullCorpus = await studyCorpus(o.quick, true);
  const fullRuns = runsOf(fullCorpus, 'full-data', baseSpec(fullCorpus, o.quick), seeds, out, log);
  const vsFull = (runs: RunRecord[], res: 'high' | 'low') => runs.map((r, i) => {
    const ls = corpus.languages.filter((l) => l.resource === res);
    return ls.reduce((acc, l) => acc + r.valLoss[l.code]! - fullRuns[i]!.valLoss[l.code]!, 0) / ls.length;
  });
  const base = cells[0]!;
  const rows = cells.map((c) => {
    const m = c.measures;
    const delta = (k: 'high' | 'low') => m.map((x, i) => x.meanLoss[k] - base.measures[i]!.meanLoss[k]);
    return [c.name, pm(m.map((x) => x.meanLoss.high)), pm(m.map((x) => x.meanLoss.low)), pm(vsFull(c.runs, 'low')), pm(vsFull(c.runs, 'high')),
      pm(m.map((x) => x.meanLoss.lowWithRelative)), pm(m.map((x) => x.meanLoss.lowAlone)),
      c === base ? '' : pm(delta('high')), c === base ? '' : pm(delta('low')), pm(m.map((x) => x.lowTrainWindowShare), pct)];
  });
  const rareRows = cells.flatMap((c) => THRESHOLDS.map((t, ti) => [c.name, t, pm(c.measures.map((x) => x.rare[ti]!.rareExperts)),
    pm(c.measures.map((x) => x.rare[ti]!.shareHigh), pct), pm(c.measures.map((x) => x.rare[ti]!.shareLow), pct),
    ti === 0 ? pm(c.measures.map((x) => x.relTrainShare.high)) : '', ti === 0 ? pm(c.measures.map((x) => x.relTrainShare.low)) : '']));
  const perLang = corpus.languages.filter((l) => l.resource === 'low').map((l) => [l.code, l.genus, hasHighRelative(corpus, l.code) ? 'yes' : 'no',
    pm(fullRuns.map((r) => r.valLoss[l.code]!)), ...cells.map((c) => pm(c.runs.map((r, i) => r.valLoss[l.code]! - fullRuns[i]!.valLoss[l.code]!)))]);
  const seconds = (performance.now() - t0) / 1000;
  const s0 = base.runs[0]!.spec;
  const md = [
    '# Multilingual study, part 4: rare (low-resource) languages',
    '',
    `Command: \`${o.command}\``,
    '',
    `Time: ${formatSeconds(seconds)} (training per run: full-data control ${fullRuns.map((r) => formatSeconds(r.trainSeconds)).join(', ')}; ${cells.map((c) => `${c.name} ${c.runs.map((r) => formatSeconds(r.trainSeconds)).join(', ')}`).join('; ')}; the base runs are shared with part 1).`,
    '',
    `Model and training as in part 1 (${JSON.stringify(s0.model)}, ${s0.steps} steps of ${s0.batchSize} x ${s0.seqLen} bytes); seeds ${seeds.join(', ')} (mean ± std).`,
    `Low-resource languages (1/${corpus.options.lowRatio} of their training text; validation untouched): ${corpus.options.lowResource.join(', ')}.`,
    '',
    'Cells:',
    '',
    ...cells.map((c) => `- **${c.name}**: ${c.what}`),
    '',
    '## Loss (validation nats/byte, mean over the languages of each group)',
    '',
    '"gap vs full data": the mean over a group\'s languages of (loss in the cell - loss of the same language in the control run trained with no low-resource cut, same seed): what having 1/20 of the text costs a language, measured against itself. Δ = the cell minus the base run of the same seed: Δ high is what the remedy costs (or gives) the high-resource languages, Δ low what it gives the low-resource ones. "with relative": a low-resource language sharing its genus with a high-resource one (cat, ukr, mar, est, xho); "alone": none (eus, kat).',
    '',
    markdownTable(['cell', 'high', 'low', 'low: gap vs full data', 'high: gap vs full data', 'low with relative', 'low alone', 'Δ high', 'Δ low', 'low share of training windows'], rows),
    '',
    '## Routing of validation tokens to rarely trained experts',
    '',
    'An expert is rarely trained when its share of the training assignments is below t / E (src/infer/rare-experts.ts). Shares count top-k assignments of validation tokens over all MoE layers. "rel. training share": the mean over a group\'s assignments of (training share of the chosen expert) x E, where 1 is an averagely trained expert.',
    '',
    markdownTable(['cell', 't', 'rare experts (all layers)', 'share of high-resource assignments', 'share of low-resource assignments', 'rel. training share, high', 'rel. training share, low'], rareRows),
    '',
    '## Per low-resource language: loss with full data, and each cell\'s gap to it (validation nats/byte)',
    '',
    markdownTable(['language', 'genus', 'high-resource relative', 'full data', ...cells.map((c) => `${c.name} - full`)], perLang),
    '',
  ].join('\n');
  writeResults(out, {
    part: 'rare', command: o.command, seconds, seeds, lowResource: corpus.options.lowResource, lowRatio: corpus.options.lowRatio, thresholds: THRESHOLDS,
    fullData: fullRuns.map((r) => ({ seed: r.seed, trainSeconds: r.trainSeconds, valLoss: r.valLoss })),
    cells: cells.map((c) => ({ name: c.name, what: c.what, spec: c.spec, runs: c.runs.map((r, i) => ({ seed: r.seed, trainSeconds: r.trainSeconds, valLoss: r.valLoss, trainCounts: r.trainCounts, measures: c.measures[i] })) })),
  }, md);
  const gap = cells.map((c) => `${c.name} ${f3(meanStd(vsFull(c.runs, 'low')).mean)}`).join(', ');
  return { out, seconds, summary: `rare: low-resource loss gap vs full data (nats/byte) ${gap}; ${out}/results.md` };
}

export const rareLanguagesPart: MultilingualPart = {
  help: 'rare: low-resource languages vs rarely trained experts and the loss gap; remedies: temperature sampling, stronger load balance (minimum traffic)',
  run: (o) => runRareLanguages(o),
};
