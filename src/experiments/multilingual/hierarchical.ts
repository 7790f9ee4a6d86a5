// Part 3 of the multilingual study: hierarchical (cluster, then experts inside it) against flat
// top-k routing at equal experts and expert parameters: quality per language after equal
// training, routing FLOPs, and measured inference time of the router and of the whole model.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import type { LMConfig } from '../../models/lm.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { PartialResults, meanStd } from '../common.js';
import { trainCell, type CellRecord, type TrainSpec } from './lm-cell.js';
import { lmCompute, routerShareOfMoELayer } from './flops.js';
import { measureRouting, type TimingRequest, type TimingResult } from './hierarchical-timing.js';
import { loadStudyCorpus } from './pareto.js';
import { hierarchicalMarkdown, hierarchicalPlots } from './hierarchical-report.js';
import { defaultOut, type MultilingualPart } from './part.js';

export interface HierarchicalOptions {
  out?: string;
  quick?: boolean;
  seeds?: number[];
  steps?: number;
  /** Lock file the timing runs under (flock); null: time in this process without a lock. Default /tmp/bench.lock. */
  benchLock?: string | null;
  command?: string;
  log?: (line: string) => void;
}

export interface HierarchicalConfig {
  dModel: number;
  layers: number;
  numExperts: number;
  groups: number;
  k: number;
  dFF: number;
  variants: Record<string, Partial<LMConfig>>;
  seeds: number[];
  train: TrainSpec;
  languages: string[];
  lowResource: string[];
  timing: Omit<TimingRequest, 'models'>;
}

export interface VariantGap {
  code: string;
  family: string;
  resource: 'high' | 'low';
  variant: string;
  flat: number[];
  other: number[];
  /** mean(other) - mean(flat): > 0 where the variant is worse than flat. */
  gap: number;
  verdict: 'better' | 'worse' | 'overlap';
}

export interface HierarchicalResult {
  config: HierarchicalConfig;
  cells: CellRecord[];
  gaps: VariantGap[];
  /** Per-token multiply-adds of each variant's forward at the training window, by part (flops.ts). */
  macs: Record<string, ReturnType<typeof lmCompute>['macs']>;
  /** Router share of an MoE layer's multiply-adds over a grid of E and expert widths (k, m as configured; G = sqrt(E) rounded to a divisor). */
  shareGrid: Array<{ E: number; G: number; dFF: number; k: number; matrices: number; flatShare: number; hierShare: number; maxLayerSpeedup: number }>;
  timing: TimingResult | null;
  timingLocked: string | null;
  seconds: number;
  loadavg: number[];
  command: string;
  out: string;
}

export function resolveHierarchicalConfig(o: HierarchicalOptions, corpus: { languages: string[]; lowResource: string[] }): HierarchicalConfig {
  const quick = o.quick ?? false;
  const [dModel, layers, numExperts, groups, k, dFF] = quick ? [32, 1, 16, 4, 2, 8] : [64, 2, 64, 8, 2, 32];
  const base: Partial<LMConfig> = { dModel, layers, heads: dModel / 16, numExperts, k, dFF, ffn: 'moe' };
  const steps = o.steps ?? (quick ? 6 : 300);
  return {
    dModel, layers, numExperts, groups, k, dFF,
    variants: {
      flat: { ...base, router: { type: 'topk' } },
      hierarchical: { ...base, router: { type: 'hierarchical', groups } },
      'hierarchical-family': { ...base, router: { type: 'hierarchical', groups, supervised: true } },
    },
    seeds: o.seeds ?? (quick ? [0] : [0, 1]),
    train: quick ? { steps, batchSize: 4, seqLen: 32, lr: 3e-3, evalWindowsPerLanguage: 2 } : { steps, batchSize: 16, seqLen: 64, lr: 3e-3, evalWindowsPerLanguage: 24 },
    ...corpus,
    timing: quick ? { batchSize: 2, seqLen: 16, decodeTokens: 4, rounds: 2, warmupRounds: 1 } : { batchSize: 16, seqLen: 64, decodeTokens: 32, rounds: 9, warmupRounds: 2 },
  };
}

/** Largest divisor of E not above sqrt(E): the G that minimises G + E/G among divisors. */
export function bestGroups(E: number): number {
  let g = 1;
  for (let c = 1; c * c <= E; c++) if (E % c === 0) g = c;
  return g;
}

export function shareGrid(k: number, matrices: number): HierarchicalResult['shareGrid'] {
  const rows: HierarchicalResult['shareGrid'] = [];
  for (const E of [8, 64, 256, 1024, 4096]) {
    for (const dFF of [16, 64, 256, 1024, 4096]) {
      const G = bestGroups(E);
      const flatShare = routerShareOfMoELayer({ E, d: 1, dFF, k, matrices });
      const hierShare = routerShareOfMoELayer({ E, d: 1, dFF, k, matrices, groups: G });
      // layer time if it followed FLOPs: (E + k m dFF) / (G + E/G + k m dFF)
      rows.push({ E, G, dFF, k, matrices, flatShare, hierShare, maxLayerSpeedup: (E + k * matrices * dFF) / (G + E / G + k * matrices * dFF) });
    }
  }
  return rows;
}

/** Times the variants in a child process under `flock lock`, or in this process when lock is null. */
function timeVariants(config: HierarchicalConfig, lock: string | null, out: string): TimingResult {
  const req: TimingRequest = { models: { flat: config.variants['flat']!, hierarchical: config.variants['hierarchical']! }, ...config.timing };
  if (lock === null) return measureRouting(req);
  const reqPath = join(out, '.timing-request.json');
  writeFileAtomic(reqPath, JSON.stringify(req));
  const main = fileURLToPath(new URL('./hierarchical-timing-main.js', import.meta.url));
  const r = spawnSync('flock', [lock, process.execPath, main, reqPath], { encoding: 'utf8', maxBuffer: 1 << 26 });
  rmSync(reqPath, { force: true });
  if (r.error) throw new Error(`multilingual hierarchical: could not run flock ${lock} (${r.error.message}); pass --bench-lock none to time without a lock`);
  if (r.status !== 0) throw new Error(`multilingual hierarchical: the timing child exited with ${r.status}: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout) as TimingResult;
}

export async function runHierarchical(o: HierarchicalOptions = {}): Promise<HierarchicalResult> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const quick = o.quick ?? false;
  const out = o.out ?? defaultOut('hierarchical', quick);
  const corpus = await loadStudyCorpus(quick);
  const config = resolveHierarchicalConfig(o, { languages: corpus.languages.map((l) => l.code), lowResource: [...corpus.options.lowResource] });
  mkdirSync(out, { recursive: true });
  const { seeds: _seeds, timing: _timing, ...key } = config;
  const partial = new PartialResults<CellRecord>(join(out, 'results.partial.json'), key as unknown as Record<string, unknown>, 'multilingual hierarchical');
  for (const seed of config.seeds) {
    for (const [name, model] of Object.entries(config.variants)) {
      if (partial.units.some((u) => u.name === name && u.seed === seed)) continue;
      const { record } = trainCell(name, model, seed, corpus, config.train);
      partial.add(record);
      log(`${name} seed ${seed}: mean val ${record.meanVal.toFixed(4)} nats/byte, ${record.trainSeconds.toFixed(1)} s`);
    }
  }
  const cells = partial.units.filter((u) => config.seeds.includes(u.seed));
  // timing is kept beside the cells: a rerun re-times only when asked to (delete timing.json)
  const timingPath = join(out, 'timing.json');
  const lock = o.benchLock === undefined ? '/tmp/bench.lock' : o.benchLock;
  let timing: TimingResult;
  if (existsSync(timingPath)) timing = JSON.parse(readFileSync(timingPath, 'utf8')) as TimingResult;
  else {
    log(`timing flat vs hierarchical${lock ? ` under flock ${lock}` : ''}...`);
    timing = timeVariants(config, lock, out);
    writeFileAtomic(timingPath, `${JSON.stringify(timing, null, 1)}\n`);
  }
  const macs = Object.fromEntries(Object.entries(config.variants).map(([n, m]) => [n, lmCompute({ ...m, maxSeqLen: config.train.seqLen }, config.train.seqLen).macs]));
  const result: HierarchicalResult = {
    config, cells, gaps: variantGaps(cells, corpus.languages, config), macs, shareGrid: shareGrid(config.k, 2), timing, timingLocked: lock,
    seconds: cells.reduce((s, c) => s + c.trainSeconds, 0), loadavg: loadavg(), command: o.command ?? '', out,
  };
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), hierarchicalMarkdown(result, (performance.now() - t0) / 1000));
  await hierarchicalPlots(result, out);
  return result;
}

export function variantGaps(cells: CellRecord[], languages: Array<{ code: string; family: string; resource: 'high' | 'low' }>, config: HierarchicalConfig): VariantGap[] {
  const gaps: VariantGap[] = [];
  const of = (name: string) => config.seeds.map((s) => cells.find((c) => c.name === name && c.seed === s)).filter((c): c is CellRecord => c !== undefined);
  const flat = of('flat');
  for (const variant of Object.keys(config.variants).filter((v) => v !== 'flat')) {
    const cs = of(variant);
    if (cs.length === 0 || flat.length === 0) continue;
    for (const l of languages) {
      const f = flat.map((c) => c.val[l.code]!);
      const h = cs.map((c) => c.val[l.code]!);
      const verdict = Math.max(...h) < Math.min(...f) ? 'better' : Math.min(...h) > Math.max(...f) ? 'worse' : 'overlap';
      gaps.push({ code: l.code, family: l.family, resource: l.resource, variant, flat: f, other: h, gap: meanStd(h).mean - meanStd(f).mean, verdict });
    }
  }
  return gaps;
}

export const hierarchicalPart: MultilingualPart = {
  help: 'hierarchical: flat top-k vs two-level routing (learned clusters, and supervised by language family) at E = 64: loss per language, routing FLOPs, measured router and model time per token (under flock /tmp/bench.lock), and when "40% faster" could hold',
  async run(o) {
    const t0 = performance.now();
    const r = await runHierarchical({
      quick: o.quick, command: o.command, ...(o.out !== undefined ? { out: o.out } : {}),
      ...(o.seeds !== undefined ? { seeds: Array.from({ length: o.seeds }, (_, i) => i) } : {}), ...(o.log ? { log: o.log } : {}),
    });
    const m = (v: string) => meanStd(r.cells.filter((c) => c.name === v).map((c) => c.meanVal)).mean.toFixed(4);
    const ratio = r.timing ? (r.timing.timings['hierarchical']!['modelBatch']!.median / r.timing.timings['flat']!['modelBatch']!.median).toFixed(2) : '-';
    return { out: r.out, seconds: (performance.now() - t0) / 1000, summary: `hierarchical: val loss flat ${m('flat')}, hierarchical ${m('hierarchical')}, family ${m('hierarchical-family')}; model time hierarchical/flat ${ratio}; ${r.out}/results.md` };
  },
};
