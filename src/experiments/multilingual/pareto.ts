// Part 2 of the multilingual study: MoE and dense byte LMs at matched active parameters and several
// sizes, trained alike; validation loss per language against training and inference FLOPs; the
// scaling law L = a * N_active^-alpha fitted for each, with its uncertainty.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import type { LMConfig } from '../../models/lm.js';
import { loadMultilingualCorpus, type MultilingualCorpus } from '../../data/multilingual-corpus.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { PartialResults, meanStd } from '../common.js';
import { trainCell, type CellRecord, type TrainSpec } from './lm-cell.js';
import { bootstrapAlphaOverLanguages, fitPowerLaw, fitPowerLawWithFloor, type BootstrapSummary, type PowerLawFit } from './power-law.js';
import { paretoMarkdown, paretoPlots } from './pareto-report.js';
import { defaultOut, type MultilingualPart } from './part.js';

export interface ParetoOptions {
  out?: string;
  quick?: boolean;
  /** Channel widths d of the sizes (heads = d / 16, expert width d, dense width k d). */
  sizes?: number[];
  seeds?: number[];
  steps?: number;
  /** The command line that reproduces the run, for results.md. */
  command?: string;
  log?: (line: string) => void;
}

export interface ParetoConfig {
  sizes: number[];
  seeds: number[];
  layers: number;
  numExperts: number;
  k: number;
  train: TrainSpec;
  languages: string[];
  lowResource: string[];
}

export interface ScalingFit {
  kind: 'moe' | 'dense';
  /** Which parameter count is N: Kaplan's (no embedding and head) or every active parameter. */
  n: 'activeNonEmbedding' | 'activeParams';
  /** Fit over the (size, seed) points of the language-mean loss, with the least-squares standard error. */
  fit: PowerLawFit;
  /** Languages resampled with replacement; the same points. */
  bootstrap: BootstrapSummary;
  /** L = c + a N^-alpha (profiled c); null when fewer than 3 sizes. */
  withFloor: PowerLawFit | null;
}

export interface LanguageGap {
  code: string;
  family: string;
  script: string;
  resource: 'high' | 'low';
  size: number;
  moe: number[];
  dense: number[];
  /** mean(dense) - mean(moe): > 0 where MoE is better. */
  gap: number;
  /** 'moe' when every MoE seed beats every dense seed, 'dense' for the converse, 'overlap' otherwise. */
  verdict: 'moe' | 'dense' | 'overlap';
}

export interface ParetoResult {
  config: ParetoConfig;
  cells: CellRecord[];
  fits: ScalingFit[];
  gaps: LanguageGap[];
  seconds: number;
  loadavg: number[];
  command: string;
  out: string;
}

export const PARETO_LAYERS = 2;
export const PARETO_EXPERTS = 8;
export const PARETO_K = 2;

/** MoE and dense configs of one size: dense width k * dFF, so both have the same active parameters but the router's d E per block. */
export function paretoModels(d: number, c: { layers: number; numExperts: number; k: number }): { moe: Partial<LMConfig>; dense: Partial<LMConfig> } {
  const heads = Math.max(1, Math.round(d / 16));
  if (d % heads !== 0 || (d / heads) % 2 !== 0) throw new Error(`multilingual pareto: size d = ${d} must be a multiple of 16 (or 8 below 16), for rotary heads of width 16`);
  const base: Partial<LMConfig> = { dModel: d, layers: c.layers, heads, dFF: d, numExperts: c.numExperts, k: c.k, router: { type: 'topk' } };
  return { moe: { ...base, ffn: 'moe' }, dense: { ...base, ffn: 'dense' } };
}

export function resolveParetoConfig(o: ParetoOptions, corpus: { languages: string[]; lowResource: string[] }): ParetoConfig {
  const quick = o.quick ?? false;
  const sizes = o.sizes ?? (quick ? [16, 32, 48] : [16, 32, 48, 64]);
  const seeds = o.seeds ?? (quick ? [0] : [0, 1]);
  if (sizes.length < 2) throw new Error(`multilingual pareto: --sizes needs at least 2 sizes to fit a slope, got ${sizes.join(', ')}`);
  if (seeds.length < 1) throw new Error('multilingual pareto: --seeds is empty');
  const steps = o.steps ?? (quick ? 6 : 300);
  const train: TrainSpec = quick
    ? { steps, batchSize: 4, seqLen: 32, lr: 3e-3, evalWindowsPerLanguage: 2 }
    : { steps, batchSize: 16, seqLen: 64, lr: 3e-3, evalWindowsPerLanguage: 24 };
  return { sizes, seeds, layers: PARETO_LAYERS, numExperts: PARETO_EXPERTS, k: PARETO_K, train, ...corpus };
}

/** Languages of the quick variant: one per family of a few, one low-resource (seconds in the test suite). */
export const QUICK_LANGUAGES = ['eng', 'fra', 'rus', 'ukr', 'fin', 'cmn_hans'];

export async function loadStudyCorpus(quick: boolean): Promise<MultilingualCorpus> {
  return loadMultilingualCorpus(quick ? { languages: QUICK_LANGUAGES } : {});
}

export async function runPareto(o: ParetoOptions = {}): Promise<ParetoResult> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const quick = o.quick ?? false;
  const out = o.out ?? defaultOut('pareto', quick);
  const corpus = await loadStudyCorpus(quick);
  const config = resolveParetoConfig(o, { languages: corpus.languages.map((l) => l.code), lowResource: [...corpus.options.lowResource] });
  mkdirSync(out, { recursive: true });
  // sizes and seeds are independent cells: a rerun may add some; what must match is how each cell is trained and scored
  const { sizes: _sizes, seeds: _seeds, ...key } = config;
  const partial = new PartialResults<CellRecord>(join(out, 'results.partial.json'), key as unknown as Record<string, unknown>, 'multilingual pareto');
  for (const d of config.sizes) {
    const models = paretoModels(d, config);
    for (const seed of config.seeds) {
      for (const kind of ['moe', 'dense'] as const) {
        const name = `${kind}-d${d}`;
        if (partial.units.some((u) => u.name === name && u.seed === seed)) continue;
        const { record } = trainCell(name, models[kind], seed, corpus, config.train);
        partial.add(record);
        log(`${name} seed ${seed}: N ${record.activeNonEmbedding}, mean val ${record.meanVal.toFixed(4)} nats/byte, ${record.trainSeconds.toFixed(1)} s`);
      }
    }
  }
  const cells = partial.units.filter((u) => config.seeds.includes(u.seed) && config.sizes.some((d) => u.name.endsWith(`-d${d}`)));
  const result: ParetoResult = {
    config, cells, fits: scalingFits(cells, config), gaps: languageGaps(cells, corpus, config),
    seconds: cells.reduce((s, c) => s + c.trainSeconds, 0), loadavg: loadavg(), command: o.command ?? '', out,
  };
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), paretoMarkdown(result, (performance.now() - t0) / 1000));
  await paretoPlots(result, out);
  return result;
}

function cellsOf(cells: CellRecord[], kind: string, config: ParetoConfig): CellRecord[] {
  return config.sizes.flatMap((d) => config.seeds.map((s) => {
    const c = cells.find((u) => u.name === `${kind}-d${d}` && u.seed === s);
    if (!c) throw new Error(`multilingual pareto: no result for ${kind}-d${d} seed ${s}`);
    return c;
  }));
}

export function scalingFits(cells: CellRecord[], config: ParetoConfig): ScalingFit[] {
  const fits: ScalingFit[] = [];
  for (const kind of ['moe', 'dense'] as const) {
    const pts = cellsOf(cells, kind, config);
    for (const n of ['activeNonEmbedding', 'activeParams'] as const) {
      const ns = pts.map((p) => p[n]);
      const ls = pts.map((p) => p.meanVal);
      fits.push({
        kind, n, fit: fitPowerLaw(ns, ls),
        bootstrap: bootstrapAlphaOverLanguages(ns, pts.map((p) => config.languages.map((l) => p.val[l]!)), { resamples: 1000, seed: 1 }),
        withFloor: config.sizes.length >= 3 ? fitPowerLawWithFloor(ns, ls) : null,
      });
    }
  }
  return fits;
}

export function languageGaps(cells: CellRecord[], corpus: MultilingualCorpus, config: ParetoConfig): LanguageGap[] {
  const gaps: LanguageGap[] = [];
  for (const d of config.sizes) {
    const moe = config.seeds.map((s) => cells.find((c) => c.name === `moe-d${d}` && c.seed === s)!);
    const dense = config.seeds.map((s) => cells.find((c) => c.name === `dense-d${d}` && c.seed === s)!);
    for (const l of corpus.languages) {
      const m = moe.map((c) => c.val[l.code]!);
      const de = dense.map((c) => c.val[l.code]!);
      const verdict = Math.max(...m) < Math.min(...de) ? 'moe' : Math.max(...de) < Math.min(...m) ? 'dense' : 'overlap';
      gaps.push({ code: l.code, family: l.family, script: l.script, resource: l.resource, size: d, moe: m, dense: de, gap: meanStd(de).mean - meanStd(m).mean, verdict });
    }
  }
  return gaps;
}

export const paretoPart: MultilingualPart = {
  help: 'pareto: MoE and dense byte LMs at 4 sizes (matched active parameters), loss per language vs training/inference FLOPs, L = a N^-alpha fitted for each with SE and a bootstrap over languages',
  async run(o) {
    const t0 = performance.now();
    const r = await runPareto({
      quick: o.quick, command: o.command, ...(o.out !== undefined ? { out: o.out } : {}),
      ...(o.seeds !== undefined ? { seeds: Array.from({ length: o.seeds }, (_, i) => i) } : {}), ...(o.log ? { log: o.log } : {}),
    });
    const alpha = (k: string) => r.fits.find((x) => x.kind === k && x.n === 'activeNonEmbedding')!.fit;
    return { out: r.out, seconds: (performance.now() - t0) / 1000, summary: `pareto: ${r.cells.length} cells; alpha MoE ${alpha('moe').alpha.toFixed(3)} +- ${alpha('moe').alphaSE.toFixed(3)}, dense ${alpha('dense').alpha.toFixed(3)} +- ${alpha('dense').alphaSE.toFixed(3)}; ${r.out}/results.md` };
  },
};
