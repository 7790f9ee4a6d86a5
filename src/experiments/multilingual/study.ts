// The corpus and run sizes shared by the specialisation, stability and rare-language parts (full and --quick).
//
// Sizes are chosen for a 2-core machine shared with other work: a 2-layer byte LM, d = 64, 8
// experts top-2, 300 steps of 16 x 64 bytes (~0.3M training bytes, about half an epoch of the
// 0.53 MB corpus). This is a small-model study; what it cannot show is listed in
// docs/results/multilingual.md.

import { dirname, join } from 'node:path';
import { loadMultilingualCorpus, type MultilingualCorpus } from '../../data/multilingual-corpus.js';
import { trainedRun, type RunRecord, type RunSpec } from './routed-lm.js';

export const QUICK_LANGUAGES = ['eng', 'fra', 'rus', 'eus'];

/** The study's corpus; fullData: the same languages with no low-resource cut (the rare-language part's control). */
export async function studyCorpus(quick: boolean, fullData = false): Promise<MultilingualCorpus> {
  const base = quick ? { languages: QUICK_LANGUAGES, lowResource: ['eus'], lowRatio: 10 } : {};
  return loadMultilingualCorpus(fullData ? { ...base, lowResource: [] } : base);
}

/** The base run: top-k routing, data-proportional language sampling. */
export function baseSpec(corpus: MultilingualCorpus, quick: boolean): RunSpec {
  const data = { languages: corpus.options.languages, lowResource: corpus.options.lowResource, lowRatio: corpus.options.lowRatio };
  if (quick) {
    return {
      model: { dModel: 16, layers: 1, heads: 2, maxSeqLen: 16, ffn: 'moe', numExperts: 4, k: 2, dFF: 16, router: { type: 'topk' } },
      steps: 6, batchSize: 4, seqLen: 16, lr: 3e-3, temperature: 1, snapshotSteps: [0, 3, 6], evalWindowsPerLanguage: 2, probeWindowsPerLanguage: 1, ...data,
    };
  }
  return {
    model: { dModel: 64, layers: 2, heads: 4, maxSeqLen: 64, ffn: 'moe', numExperts: 8, k: 2, dFF: 128, router: { type: 'topk' } },
    steps: 300, batchSize: 16, seqLen: 64, lr: 3e-3, temperature: 1, snapshotSteps: [0, 10, 25, 50, 100, 150, 200, 250, 300],
    evalWindowsPerLanguage: 8, probeWindowsPerLanguage: 4, ...data,
  };
}

/** Runs are cached next to the parts' output directories, so parts share them. */
export function cacheDirOf(out: string): string {
  return join(dirname(out), 'runs');
}

export function seedsOf(seeds: number | undefined, quick: boolean): number[] {
  const n = seeds ?? (quick ? 1 : 2);
  if (!(Number.isInteger(n) && n >= 1)) throw new Error(`multilingual: --seeds must be an integer >= 1, got ${n}`);
  return Array.from({ length: n }, (_, i) => i);
}

export function runsOf(corpus: MultilingualCorpus, name: string, spec: RunSpec, seeds: number[], out: string, log: (l: string) => void): RunRecord[] {
  return seeds.map((s) => trainedRun(corpus, name, spec, s, cacheDirOf(out), log));
}
