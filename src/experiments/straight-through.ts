// `moe experiment straight-through`: three ways to train a hard-routed byte-level MoE LM's router,
// at equal steps and seeds: the gate-only gradient (topk: the gate is the chosen probability), the
// straight-through estimator (hard 1/k gates, gradient of the soft probabilities) and the
// differentiable top-k (sigmoid gates around a per-token threshold). Loss after N steps, 2 seeds.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ByteLM } from '../models/lm.js';
import { loadUdhrCorpus } from '../data/udhr-corpus.js';
import type { RouterConfig } from '../moe/routers/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import { lineChart, writePlot } from '../report/plot.js';
import { markdownTable } from '../report/table.js';
import { formatSeconds, meanStd } from './common.js';
import { trainByteLM, byteLMEvaluator, type SeededByteLMExperimentOptions } from './byte-lm-training.js';

/** Default 150 steps (quick 40), 2 seeds. */
export type StraightThroughExperimentOptions = SeededByteLMExperimentOptions;

export interface STRun { method: string; seed: number; curve: Array<{ step: number; loss: number }>; valBitsPerByte: number; finalTrainLoss: number; seconds: number }

export interface STResult {
  experiment: 'straight-through';
  command: string;
  config: Record<string, unknown>;
  runs: STRun[];
  summary: Array<{ method: string; valBitsPerByte: { mean: number; std: number }; finalTrainLoss: { mean: number; std: number } }>;
  seconds: number;
  out: string;
}

const METHODS: Array<{ method: string; router: RouterConfig; doc: string }> = [
  { method: 'gate-only', router: { type: 'topk', k: 1, normalize: false }, doc: 'topk k = 1, gate = the chosen softmax probability; the router learns through it (Switch)' },
  { method: 'straight-through', router: { type: 'straight-through', k: 1 }, doc: 'forward gate 1, backward d p_chosen / d z (plain ST, tau = 1)' },
  { method: 'st-gumbel', router: { type: 'straight-through', k: 1, gumbel: true, temperature: 1 }, doc: 'as straight-through, selecting on z + Gumbel noise in training' },
  { method: 'differentiable-topk', router: { type: 'differentiable-topk', k: 1, temperature: 0.1 }, doc: 'g = sigmoid((z - tau)/0.1), tau between the 1st and 2nd logit' },
];

export async function runStraightThrough(opts: StraightThroughExperimentOptions = {}): Promise<STResult> {
  const t0 = performance.now();
  const quick = opts.quick ?? false;
  const steps = opts.steps ?? (quick ? 40 : 150);
  const seeds = opts.seeds ?? 2;
  const out = opts.out ?? (quick ? 'docs/results/straight-through-quick' : 'docs/results/straight-through');
  const log = opts.log ?? ((l: string) => console.log(l));
  const languages = ['eng', 'fra', 'deu_1996', 'spa'];
  const model = { dModel: 48, layers: 2, heads: 4, maxSeqLen: 64, numExperts: 4, dFF: 96, loadBalanceCoef: 0.01 };
  const train = { batchSize: 8, seqLen: 64, lr: 3e-3, clipNorm: 1, logEvery: 10, evalWindows: 32 };
  const corpus = await loadUdhrCorpus({ languages, valFraction: 0.1 });
  const runs: STRun[] = [];
  for (const m of METHODS) {
    for (let seed = 0; seed < seeds; seed++) {
      const tr = performance.now();
      const lm = new ByteLM({ ...model, k: 1, router: m.router }, seed);
      const curve: STRun['curve'] = [];
      let acc = 0;
      let n = 0;
      let last = NaN;
      trainByteLM(lm, {
        ...train, steps, seed, windowSalt: 21, data: corpus.train,
        afterStep: (s, loss) => {
          last = loss;
          acc += last;
          n++;
          if ((s + 1) % train.logEvery === 0) { curve.push({ step: s + 1, loss: acc / n }); acc = 0; n = 0; }
        },
      });
      const evalTask = byteLMEvaluator(lm, corpus, train, seed);
      const val = evalTask.evaluateBytes(corpus.val).bitsPerByte;
      const r = { method: m.method, seed, curve, valBitsPerByte: val, finalTrainLoss: curve[curve.length - 1]?.loss ?? last, seconds: (performance.now() - tr) / 1000 };
      runs.push(r);
      log(`  ${m.method} seed ${seed}: val ${val.toFixed(3)} bits/byte, train loss (last ${train.logEvery} steps) ${r.finalTrainLoss.toFixed(3)} (${formatSeconds(r.seconds)})`);
    }
  }
  const summary = METHODS.map((m) => {
    const rs = runs.filter((r) => r.method === m.method);
    return { method: m.method, valBitsPerByte: meanStd(rs.map((r) => r.valBitsPerByte)), finalTrainLoss: meanStd(rs.map((r) => r.finalTrainLoss)) };
  });
  const seconds = (performance.now() - t0) / 1000;
  const result: STResult = {
    experiment: 'straight-through', command: opts.command ?? 'moe experiment straight-through', seconds, out, runs, summary,
    config: { quick, steps, seeds, languages: corpus.languages, model, train, methods: METHODS },
  };
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  const f = (x: { mean: number; std: number }): string => `${x.mean.toFixed(3)} ± ${x.std.toFixed(3)}`;
  writeFileAtomic(join(out, 'results.md'), [
    '# Straight-through routing against the gate-only gradient and the differentiable top-k',
    '',
    `Command: \`${result.command}\` (${formatSeconds(seconds)} on this machine).`,
    '',
    `Byte-level MoE LM (d = ${model.dModel}, ${model.layers} blocks, E = ${model.numExperts}, k = 1, expert width ${model.dFF}) on UDHR ${corpus.languages.join(', ')}; `
    + `${steps} steps of Adam (lr ${train.lr}, batch ${train.batchSize} x ${train.seqLen} bytes), seeds 0..${seeds - 1}. Validation bits per byte over ${train.evalWindows} windows; `
    + `train loss is the mean over the last ${train.logEvery} steps (nats). Mean ± std over seeds.`,
    '',
    ...METHODS.map((m) => `- \`${m.method}\`: ${m.doc}`),
    '',
    markdownTable(['method', 'val bits/byte', 'train loss (nats)'], summary.map((s) => [s.method, f(s.valBitsPerByte), f(s.finalTrainLoss)])),
    '',
    '![training loss](train-loss.png)',
    '',
  ].join('\n'));
  await writePlot(join(out, 'train-loss'), lineChart({
    title: `Training loss (mean of ${train.logEvery} steps)`, x: { field: 'step', title: 'step' }, y: { field: 'loss', title: 'loss (nats)' },
    series: 'method', dash: 'seed', data: runs.flatMap((r) => r.curve.map((p) => ({ ...p, method: r.method, seed: `seed ${r.seed}` }))),
  }));
  return result;
}
