// Experiment 3: wall-clock cost per batch of the Soft MoE layer (and the patch classifier around
// it) with all n experts against Algorithm 1 keeping k = n/2, n/4, n/8, for large n, in one run.
// Weights and inputs are random: the cost of a forward pass does not depend on trained values,
// except through which experts Algorithm 1 picks, i.e. how evenly the kept rows spread over the
// experts' groups, which changes the grouped GEMM's shapes but not its total work.

import { mkdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { SoftMoEClassifier } from '../models/softmoe-classifier.js';
import { forwardSelected } from '../moe/select.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { getBackend } from '../kernels/registry.js';
import { Progress } from '../train/progress.js';
import { writeFileAtomic } from '../io/atomic.js';
import { lineChart, writePlot } from '../report/plot.js';
import { markdownTable } from '../report/table.js';
import { checkIntList, checkPositiveInt, formatSeconds, rejectUnknownOptions } from './common.js';
import { median } from '../report/stats.js';

const NAME = 'inference-cost';

/** 'classifier': the paper's width h = floor(784/n) (tiny experts at large n); 'wide': every expert h = 196, many large experts. */
export type CostSetting = 'classifier' | 'wide';

export interface InferenceCostOptions {
  /** n = 32, 64 at batch 64 with 3 timed rounds: seconds, for tests and a first look. */
  quick?: boolean;
  out?: string;
  /** Expert counts (default 128, 256, 512). */
  ns?: number[];
  /** Images per batch (default 256, the training batch). */
  batchSize?: number;
  settings?: CostSetting[];
  /** Timed rounds per variant after two warm-up runs (default 7); variants are interleaved within a round. */
  rounds?: number;
  seed?: number;
  progress?: boolean;
  log?: (line: string) => void;
  command?: string;
}

export interface InferenceCostConfig {
  ns: number[];
  batchSize: number;
  settings: CostSetting[];
  rounds: number;
  seed: number;
  quick: boolean;
}

export interface InferenceCostRecord {
  setting: CostSetting;
  n: number;
  hidden: number;
  /** Experts kept per input (n for 'all'). */
  k: number;
  method: 'all' | 'algorithm1';
  /** Median ms per batch: the Soft MoE layer, the whole classifier, and the expert bank alone on the same rows. */
  layerMs: number;
  classifierMs: number;
  expertsMs: number;
  /** Fastest run of the layer: on a shared machine the least disturbed one, a second view next to the median. */
  layerMinMs: number;
  /** 1 - expertsMs / layerMs: routing, slot formation, gathers and combine. */
  outsideExpertsShare: number;
  /** all / this, same component (medians; layerMinSpeedup from the fastest runs). */
  layerSpeedup: number;
  layerMinSpeedup: number;
  classifierSpeedup: number;
  rounds: number;
}

export interface InferenceCostResult {
  dataset: 'synthetic';
  config: InferenceCostConfig;
  environment: { backend: string; cpus: number; cpuModel: string; loadAverageAtStart: number[]; weights: string };
  records: InferenceCostRecord[];
  seconds: number;
  out: string;
}

const KNOWN = ['quick', 'out', 'ns', 'batchSize', 'settings', 'rounds', 'seed', 'progress', 'log', 'command'] as const;

export function resolveInferenceCostOptions(opts: InferenceCostOptions): { config: InferenceCostConfig; out: string } {
  rejectUnknownOptions(NAME, opts, KNOWN);
  const quick = opts.quick ?? false;
  const settings = opts.settings ?? ['classifier', 'wide'];
  for (const s of settings) if (s !== 'classifier' && s !== 'wide') throw new Error(`${NAME}: option settings: unknown setting ${JSON.stringify(s)} (known: classifier, wide)`);
  const config: InferenceCostConfig = {
    ns: checkIntList(NAME, 'ns', opts.ns ?? (quick ? [32, 64] : [128, 256, 512]), 8),
    batchSize: checkPositiveInt(NAME, 'batchSize', opts.batchSize ?? (quick ? 64 : 256)),
    settings,
    rounds: checkPositiveInt(NAME, 'rounds', opts.rounds ?? (quick ? 3 : 7)),
    seed: checkPositiveInt(NAME, 'seed', opts.seed ?? 0, 0),
    quick,
  };
  for (const n of config.ns) if (Math.floor(784 / n) < 1) throw new Error(`${NAME}: option ns: n = ${n} leaves the classifier width floor(784/${n}) = 0`);
  return { config, out: opts.out ?? join('runs', 'experiments', `${NAME}${quick ? '-quick' : ''}`) };
}

/**
 * Medians of interleaved runs: two warm-ups each, then `rounds` rounds that time every variant once.
 * Interleaving matters on a shared machine: a burst of load hits all variants of a round alike, so
 * their ratios stay meaningful where back-to-back blocks of runs would not.
 */
function timeInterleaved(fns: (() => void)[], rounds: number, onRound?: () => void): { median: number[]; min: number[] } {
  for (const f of fns) { f(); f(); }
  const times: number[][] = fns.map(() => []);
  for (let r = 0; r < rounds; r++) {
    fns.forEach((f, i) => {
      const s = performance.now();
      f();
      times[i]!.push(performance.now() - s);
    });
    onRound?.();
  }
  return { median: times.map(median), min: times.map((t) => Math.min(...t)) };
}

export async function runInferenceCost(opts: InferenceCostOptions = {}): Promise<InferenceCostResult> {
  const { config: c, out } = resolveInferenceCostOptions(opts);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const t0 = performance.now();
  mkdirSync(out, { recursive: true });
  const environment = {
    backend: getBackend().name, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', loadAverageAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
    weights: 'random (seeded initialisation, untrained); inputs uniform in [0, 1]',
  };
  log(`${NAME}: backend ${environment.backend}, ${environment.cpus} CPUs, load average ${environment.loadAverageAtStart.join(' ')}; batch ${c.batchSize}, n = ${c.ns.join(', ')}, ${c.rounds} rounds`);
  const rng = new Rng(c.seed);
  const imgData = new Float32Array(c.batchSize * 784);
  rng.fillUniform(imgData);
  const images = new Tensor(imgData, [c.batchSize, 784]);
  const records: InferenceCostRecord[] = [];
  const cases = c.settings.flatMap((s) => c.ns.map((n) => ({ setting: s, n })));
  const progress = (opts.progress ?? true) ? new Progress(cases.length * c.rounds, { label: NAME }) : null;
  let done = 0;
  for (const { setting, n } of cases) {
    const hidden = setting === 'classifier' ? Math.floor(784 / n) : 196;
    const model = new SoftMoEClassifier({ numExperts: n, hidden, patch: 14, slotsPerExpert: 1, normalize: true, imageSize: 28, classes: 10 }, c.seed);
    model.eval();
    const layer = model.moe;
    const tokens = noGrad(() => model.patchify(images));
    const ks = [...new Set([n, Math.floor(n / 2), Math.floor(n / 4), Math.floor(n / 8)])].filter((k) => k >= 1);
    // the expert bank alone on the rows each variant feeds it: B*n slots for all, the kept (input, expert) pairs otherwise
    const expertInputs = ks.map((k) => {
      const groups = new Int32Array(n);
      if (k === n) groups.fill(c.batchSize);
      else for (const j of noGrad(() => forwardSelected(layer, tokens, k)).selected) groups[j]!++;
      const rows = Tensor.empty([c.batchSize * k, layer.dModel]);
      rng.fillUniform(rows.data as Float32Array);
      return { rows, groups };
    });
    const layerFns = ks.map((k) => (k === n ? () => { noGrad(() => layer.forward(tokens)); } : () => { noGrad(() => forwardSelected(layer, tokens, k)); }));
    const classifierFns = ks.map((k) => (k === n ? () => { noGrad(() => model.forward(images)); } : () => { noGrad(() => model.forwardSelected(images, k)); }));
    const expertFns = expertInputs.map(({ rows, groups }) => () => { noGrad(() => layer.experts.forward(rows, groups)); });
    const { median: times, min: mins } = timeInterleaved([...layerFns, ...classifierFns, ...expertFns], c.rounds, () => progress?.update(++done, { n, setting }));
    const L = ks.length;
    for (let i = 0; i < L; i++) {
      const k = ks[i]!;
      const layerMs = times[i]!;
      const classifierMs = times[L + i]!;
      const expertsMs = times[2 * L + i]!;
      records.push({
        setting, n, hidden, k, method: k === n ? 'all' : 'algorithm1', layerMs, classifierMs, expertsMs, layerMinMs: mins[i]!,
        outsideExpertsShare: Math.max(0, 1 - expertsMs / layerMs), layerSpeedup: times[0]! / layerMs, layerMinSpeedup: mins[0]! / mins[i]!,
        classifierSpeedup: times[L]! / classifierMs, rounds: c.rounds,
      });
    }
    progress?.log(`${setting} n=${n} (h=${hidden}): layer ${ks.map((k, i) => `k=${k} ${times[i]!.toFixed(1)} ms`).join(', ')}`);
  }
  progress?.done();
  const result: InferenceCostResult = { dataset: 'synthetic', config: c, environment, records, seconds: (performance.now() - t0) / 1000, out };
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), inferenceCostMarkdown(result, opts.command));
  await writePlot(join(out, 'layer-time-vs-k'), lineChart({
    title: `Soft MoE layer: time per batch of ${c.batchSize} with k of n experts`,
    x: { field: 'k/n', title: 'k / n', scale: 'log' },
    y: { field: 'ms', title: 'median ms per batch', scale: 'log' },
    series: 'n', dash: 'setting', data: records.map((r) => ({ 'k/n': r.k / r.n, ms: r.layerMs, n: r.n, setting: r.setting })), width: 520, height: 320,
  }));
  return result;
}

export function inferenceCostMarkdown(r: InferenceCostResult, command?: string): string {
  const c = r.config;
  const e = r.environment;
  const lines: string[] = ['# Inference cost of Algorithm 1', ''];
  if (command) lines.push('Command:', '', '```', command, '```', '');
  lines.push(`Machine: ${e.cpus} x ${e.cpuModel}, backend ${e.backend}; load average at start ${e.loadAverageAtStart.join(' ')} (other work shared the CPUs, so absolute times are noisy; ratios come from interleaved runs). `
    + `Weights: ${e.weights}. Batch ${c.batchSize} images (4 tokens of 196 pixels); medians of ${c.rounds} interleaved rounds after two warm-up runs each; total ${formatSeconds(r.seconds)}.`, '');
  lines.push('Settings: "classifier" is the paper\'s model at fixed total width (h = floor(784/n), so experts are tiny at large n); "wide" gives every expert h = 196, the regime of many large experts where the paper expects savings. '
    + '"experts" times the expert bank alone on the rows each variant feeds it; "layer min" is the fastest run, a second view where a shared machine disturbs the median; "outside experts" is 1 - experts/layer (routing logits, softmaxes, Csum and the top-k sort, slot formation, gathers and the combine).', '');
  lines.push(markdownTable(['setting', 'n', 'h', 'k', 'layer ms', 'layer speedup', 'layer min ms', 'speedup of mins', 'classifier ms', 'classifier speedup', 'experts ms', 'outside experts'],
    r.records.map((x) => [x.setting, x.n, x.hidden, x.k === x.n ? `${x.k} (all)` : String(x.k), x.layerMs.toFixed(2), `${x.layerSpeedup.toFixed(2)}x`,
      x.layerMinMs.toFixed(2), `${x.layerMinSpeedup.toFixed(2)}x`,
      x.classifierMs.toFixed(2), `${x.classifierSpeedup.toFixed(2)}x`, x.expertsMs.toFixed(2), `${(100 * x.outsideExpertsShare).toFixed(0)}%`]),
    { align: ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'] }));
  lines.push('', '![layer time against k/n](layer-time-vs-k.png)', '');
  return `${lines.join('\n')}\n`;
}
