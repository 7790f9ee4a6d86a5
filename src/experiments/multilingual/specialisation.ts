// Part 1 of the multilingual study: do experts specialise by language, family, script or function?
// Trains the base run per seed (shared with the stability part), then reports mutual information,
// expert profiles, language clusters against families and heatmaps.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { corpusTable, type MultilingualCorpus } from '../../data/multilingual-corpus.js';
import { markdownTable } from '../../report/table.js';
import { formatSeconds, meanStd } from '../common.js';
import { BYTE_CLASSES } from './byte-classes.js';
import { writeHeatmap } from './heatmap.js';
import { defaultOut, writeResults, type MultilingualPart, type PartOptions, type PartResult } from './part.js';
import { LABELS, specialisationOf, type Label, type Specialisation } from './specialisation-metrics.js';
import { baseSpec, runsOf, seedsOf, studyCorpus } from './study.js';
import type { RunRecord } from './routed-lm.js';

const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
const pm = (xs: number[]): string => {
  const { mean, std } = meanStd(xs);
  return xs.length > 1 ? `${f3(mean)} ± ${f3(std)}` : f3(mean);
};
const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;

export function corpusMarkdown(corpus: MultilingualCorpus): string {
  const rows = corpusTable(corpus).map((r) => [r.code, r.name, r.family, r.genus, r.script, r.resource, r.train, r.val, r.test] as (string | number)[]);
  const tot = (k: 'train' | 'val' | 'test') => corpus.languages.reduce((s, l) => s + l[k].length, 0);
  rows.push(['**all**', `${corpus.languages.length} languages`, `${corpus.families.length} families`, `${corpus.genera.length} genera`, `${corpus.scripts.length} scripts`, '', tot('train'), tot('val'), tot('test')]);
  return markdownTable(['code', 'name', 'family', 'genus', 'script', 'resource', 'train bytes', 'val bytes', 'test bytes'], rows);
}

async function plots(out: string, run: RunRecord, corpus: MultilingualCorpus): Promise<string[]> {
  const files: string[] = [];
  const E = run.final.language[0]![0]!.length;
  const experts = Array.from({ length: E }, (_, e) => `e${e}`);
  // languages sorted by family, then genus, so related rows sit together
  const order = [...corpus.languages].sort((a, b) => a.family.localeCompare(b.family) || a.genus.localeCompare(b.genus) || a.id - b.id);
  for (let layer = 0; layer < run.final.language.length; layer++) {
    const norm = (row: number[]) => {
      const s = row.reduce((a, b) => a + b, 0);
      return row.map((v) => (s > 0 ? v / s : 0));
    };
    files.push(await writeHeatmap(join(out, `language-expert-layer${layer}`), {
      title: `P(expert | language), layer ${layer}, seed ${run.seed}`, rows: order.map((l) => `${l.code} (${l.genus}, ${l.script})`), cols: experts,
      values: order.map((l) => norm(run.final.language[layer]![l.id]!)), rowTitle: 'language (family order)', colTitle: 'expert', colorTitle: 'P(e | language)',
    }));
    files.push(await writeHeatmap(join(out, `class-expert-layer${layer}`), {
      title: `P(expert | byte class), layer ${layer}, seed ${run.seed}`, rows: [...BYTE_CLASSES], cols: experts,
      values: run.final.byteClass[layer]!.map(norm), rowTitle: 'byte class', colTitle: 'expert', colorTitle: 'P(e | class)',
    }));
  }
  return files;
}

function markdown(o: { command: string; seconds: number; corpus: MultilingualCorpus; runs: RunRecord[]; spec: Specialisation[]; initSpec: Specialisation[]; plots: string[] }): string {
  const { runs, spec, initSpec } = o;
  const r0 = runs[0]!;
  const layers = spec[0]!.layers.length;
  const lines: string[] = [
    '# Multilingual study, part 1: expert specialisation',
    '',
    `Command: \`${o.command}\``,
    '',
    `Time: ${formatSeconds(o.seconds)} (training ${runs.map((r) => formatSeconds(r.trainSeconds)).join(', ')} per seed; runs are cached and shared with the stability part).`,
    '',
    `Model: byte-level LM (src/models/lm.ts) ${JSON.stringify(r0.spec.model)}; ${r0.spec.steps} steps of ${r0.spec.batchSize} x ${r0.spec.seqLen} bytes, Adam lr ${r0.spec.lr} warmup-cosine, language sampling temperature ${r0.spec.temperature}; seeds ${runs.map((r) => r.seed).join(', ')}.`,
    `Corpus: ${o.corpus.languages.length} UDHR languages (${o.corpus.families.length} families, ${o.corpus.scripts.length} scripts), split by article; low-resource (1/${o.corpus.options.lowRatio} of the training text): ${o.corpus.options.lowResource.join(', ') || 'none'}.`,
    `Usage matrices count the top-${r0.spec.model.k ?? 2} assignments of ${r0.spec.evalWindowsPerLanguage} validation windows of ${r0.spec.seqLen} bytes per language (fewer where the split is shorter).`,
    '',
    `Mean training loss over the last 10% of steps: ${pm(runs.map((r) => r.finalTrainLoss))} nats/byte; mean validation loss over languages: ${pm(runs.map((r) => meanLoss(r)))} nats/byte.`,
    '',
    '## Mutual information of expert choice with each label (bits; mean ± std over seeds)',
    '',
    'NMI = 2 I / (H(label) + H(expert)); U = I / H(expert), the share of the expert choice the label explains. "init" is the same measurement on the untrained model (byte identity alone); "bias" the Miller-Madow estimate of the upward bias of I from finite counts.',
    '',
  ];
  const rows: (string | number)[][] = [];
  for (let l = 0; l < layers; l++) {
    for (const k of LABELS) {
      const at = (f: (s: Specialisation) => number) => pm(spec.map(f));
      rows.push([l, k, at((s) => s.layers[l]!.final[k].mi), at((s) => s.layers[l]!.final[k].nmi), at((s) => s.layers[l]!.final[k].uColGivenRow),
        at((s) => s.layers[l]!.init[k].mi), at((s) => s.layers[l]!.init[k].uColGivenRow), at((s) => s.layers[l]!.biasBits[k]), f3(spec[0]!.layers[l]!.final[k].hRow)]);
    }
    const lat = (k: 'genus' | 'family') => [l, `${k}, Latin-script languages only`, pm(spec.map((s) => s.layers[l]!.latin[k].mi)), pm(spec.map((s) => s.layers[l]!.latin[k].nmi)), pm(spec.map((s) => s.layers[l]!.latin[k].uColGivenRow)), '', '', '', f3(spec[0]!.layers[l]!.latin[k].hRow)];
    rows.push(lat('genus'), lat('family'));
  }
  lines.push(markdownTable(['layer', 'label', 'I', 'NMI', 'U', 'I init', 'U init', 'bias', 'H(label)'], rows), '');
  lines.push('## Experts (seed ' + runs[0]!.seed + ')', '', 'For each expert: its share of the layer\'s assignments, and the language, family, script and byte class that send it the largest share of its tokens, against that label\'s share of all tokens (what an unspecialised expert would get).', '');
  const erows: (string | number)[][] = [];
  for (const L of spec[0]!.layers) {
    for (const e of L.experts) {
      erows.push([L.layer, e.expert, pct(e.load), `${e.topLanguage} ${pct(e.topLanguageShare)}`, `${e.topFamily} ${pct(e.topFamilyShare)} (base ${pct(e.topFamilyBase)})`,
        `${e.topScript} ${pct(e.topScriptShare)} (base ${pct(e.topScriptBase)})`, `${e.topClass} ${pct(e.topClassShare)} (base ${pct(e.topClassBase)})`]);
    }
  }
  lines.push(markdownTable(['layer', 'expert', 'load', 'top language', 'top family', 'top script', 'top byte class'], erows), '');
  lines.push('## Languages clustered by routing profile, against labels (adjusted Rand index)', '',
    'Each language\'s profile is P(expert | language) of every layer; average-linkage clustering under Jensen-Shannon divergence, cut at K = the number of distinct labels. Null: the same clusters against randomly permuted labels (500 permutations). "ARI init": the same measurement on the untrained model\'s routing (what byte statistics alone give).', '');
  const c = (k: keyof Specialisation['clusters']) => [k === 'latinGenus' ? 'genus (Latin script only)' : k, spec[0]!.clusters[k].K, pm(spec.map((s) => s.clusters[k].ari)), pm(initSpec.map((s) => s.clusters[k].ari)), pm(spec.map((s) => s.clusters[k].nullMean)), pm(spec.map((s) => s.clusters[k].null95))];
  lines.push(markdownTable(['label', 'K', 'ARI', 'ARI init', 'null mean', 'null 95th pct'], [c('family'), c('genus'), c('script'), c('latinGenus')]), '');
  lines.push('## Do related languages route alike?', '', 'Mean Jensen-Shannon divergence (bits) between routing profiles of language pairs. p: permutation test (genus labels shuffled among the Latin-script languages, 1000 permutations) of "same-genus pairs are closer than other pairs".', '');
  const sh = (k: keyof Specialisation['sharing']) => [pm(spec.map((s) => s.sharing[k])), pm(initSpec.map((s) => s.sharing[k]))];
  lines.push(markdownTable(['pairs', 'mean JS', 'mean JS, untrained'], [
    ['Latin script, same genus', ...sh('latinSameGenus')],
    ['Latin script, other genus', ...sh('latinOtherGenus')],
    ['permutation p (per seed)', spec.map((s) => f3(s.sharing.latinPermutationP)).join(', '), initSpec.map((s) => f3(s.sharing.latinPermutationP)).join(', ')],
    ['same script (all)', ...sh('sameScript')],
    ['other script (all)', ...sh('otherScript')],
  ]), '');
  lines.push('## Plots', '', ...o.plots.map((p) => `- ${p.split('/').pop()}`), '', '## Corpus', '', corpusMarkdown(o.corpus));
  return lines.join('\n');
}

export function meanLoss(r: RunRecord): number {
  const v = Object.values(r.valLoss);
  return v.reduce((a, b) => a + b, 0) / v.length;
}

export async function runSpecialisation(o: PartOptions): Promise<PartResult & { runs: RunRecord[]; specialisation: Specialisation[] }> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const out = o.out ?? defaultOut('specialisation', o.quick);
  mkdirSync(out, { recursive: true });
  const corpus = await studyCorpus(o.quick);
  const spec = baseSpec(corpus, o.quick);
  const runs = runsOf(corpus, 'base', spec, seedsOf(o.seeds, o.quick), out, log);
  const specialisation = runs.map((r) => specialisationOf(r, corpus));
  // the untrained model's routing through the same measurements: what byte statistics alone give
  const initSpec = runs.map((r) => specialisationOf({ ...r, final: r.init }, corpus));
  const files = await plots(out, runs[0]!, corpus);
  const seconds = (performance.now() - t0) / 1000;
  const summary = Object.fromEntries(LABELS.map((k: Label) => [k, specialisation[0]!.layers.map((_, l) => meanStd(specialisation.map((s) => s.layers[l]!.final[k].mi)))]));
  writeResults(out, {
    part: 'specialisation', command: o.command, seconds, spec, seeds: runs.map((r) => r.seed),
    corpus: corpusTable(corpus), lowResource: corpus.options.lowResource,
    runs: runs.map((r, i) => ({ seed: r.seed, trainSeconds: r.trainSeconds, finalTrainLoss: r.finalTrainLoss, meanValLoss: meanLoss(r), valLoss: r.valLoss, usage: r.final, usageInit: r.init, specialisation: specialisation[i], specialisationUntrained: { clusters: initSpec[i]!.clusters, sharing: initSpec[i]!.sharing } })),
    summary: { miBitsPerLayer: summary }, plots: files.map((f) => f.split('/').pop()),
  }, markdown({ command: o.command, seconds, corpus, runs, spec: specialisation, initSpec, plots: files }));
  const mi = specialisation.map((s) => s.layers.map((l) => l.final.language.mi.toFixed(3)).join('/')).join(', ');
  return { out, seconds, summary: `specialisation: I(expert; language) per layer ${mi} bits; ${out}/results.md`, runs, specialisation };
}

export const specialisationPart: MultilingualPart = {
  help: 'specialisation: expert x language / family / genus / script / byte-class usage per layer, mutual information, language clusters vs families (ARI), heatmaps',
  run: (o) => runSpecialisation(o),
};
