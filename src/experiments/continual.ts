// `moe experiment continual`: a byte-level MoE LM trained on one group of UDHR languages, then on a
// second group, with and without growing new experts at the switch (same total steps): forgetting
// of the first group, learning of the second, and how much of each group's routing the new experts take.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ByteLM } from '../models/lm.js';
import { GrowthController } from '../train/growth.js';
import { validateGrowSchedule } from '../moe/grow.js';
import { loadUdhrCorpus, type UdhrCorpus } from '../data/udhr-corpus.js';
import { noGrad } from '../tensor/autograd.js';
import { Tensor } from '../tensor/tensor.js';
import { writeFileAtomic } from '../io/atomic.js';
import { lineChart, writePlot } from '../report/plot.js';
import { markdownTable } from '../report/table.js';
import { formatSeconds } from './common.js';
import { trainByteLM, byteLMEvaluator } from './byte-lm-training.js';

export interface ContinualOptions {
  quick?: boolean;
  /** Output directory (default docs/results/continual[-quick]). */
  out?: string;
  seed?: number;
  /** Steps per phase (default 150; quick 60). */
  steps?: number;
  groupA?: string[];
  groupB?: string[];
  command?: string;
  log?: (line: string) => void;
}

interface Condition {
  name: string;
  experts: number;
  grow: { add: number; freezeOld: boolean } | null;
  doc: string;
}

export interface ConditionResult {
  name: string;
  doc: string;
  expertsEnd: number;
  /** Validation bits per byte of groups A and B every evalEvery steps. */
  curve: Array<{ step: number; bpbA: number; bpbB: number }>;
  afterA: { bpbA: number; bpbB: number };
  final: { bpbA: number; bpbB: number };
  /** final.bpbA - afterA.bpbA: how much group A got worse while training on B. */
  forgettingA: number;
  /** Share of the routing assignments of A's and B's validation tokens that go to experts added by growth (mean over MoE layers); null without growth. */
  newExpertShare: { A: number; B: number } | null;
  seconds: number;
}

export interface ContinualResult {
  experiment: 'continual';
  command: string;
  config: Record<string, unknown>;
  conditions: ConditionResult[];
  seconds: number;
  out: string;
}

const DEFAULT_A = ['eng', 'fra', 'deu_1996', 'spa'];
const DEFAULT_B = ['rus', 'ell_monotonic', 'arb', 'hin'];

/** Share of assignments to experts >= firstNew, averaged over the model's MoE layers, for one eval forward. */
function newShare(model: ByteLM, x: Tensor, firstNew: number): number {
  noGrad(() => model.forward(x));
  const shares = model.moeLayers().map((l) => {
    const tpe = l.lastMetrics!.tokensPerExpert;
    const all = tpe.reduce((a, b) => a + b, 0);
    return all > 0 ? tpe.slice(firstNew).reduce((a, b) => a + b, 0) / all : 0;
  });
  return shares.reduce((a, b) => a + b, 0) / shares.length;
}

/** Evaluation windows of a split as one [B, T] batch (the first `n` non-overlapping windows). */
function windows(bytes: Uint8Array, T: number, n: number): Tensor {
  const count = Math.min(n, Math.floor((bytes.length - 1) / T));
  const x = new Int32Array(count * T);
  for (let b = 0; b < count; b++) for (let t = 0; t < T; t++) x[b * T + t] = bytes[Math.floor((b * (bytes.length - T - 1)) / count) + t]!;
  return new Tensor(x, [count, T]);
}

export async function runContinual(opts: ContinualOptions = {}): Promise<ContinualResult> {
  const t0 = performance.now();
  const quick = opts.quick ?? false;
  const steps = opts.steps ?? (quick ? 60 : 150);
  const seed = opts.seed ?? 0;
  const out = opts.out ?? (quick ? 'docs/results/continual-quick' : 'docs/results/continual');
  const log = opts.log ?? ((l: string) => console.log(l));
  const groupA = opts.groupA ?? DEFAULT_A;
  const groupB = opts.groupB ?? DEFAULT_B;
  const E0 = 4;
  const K = 4;
  const model = { dModel: 64, layers: 2, heads: 4, maxSeqLen: 64, k: 2, dFF: 128 };
  const train = { batchSize: quick ? 8 : 16, seqLen: 64, lr: 3e-3, clipNorm: 1, evalEvery: quick ? 20 : 25, evalWindows: 24, rampSteps: 20 };
  const conditions: Condition[] = [
    { name: 'no-growth', experts: E0, grow: null, doc: `${E0} experts throughout` },
    { name: 'grow', experts: E0, grow: { add: K, freezeOld: false }, doc: `${E0} experts, +${K} when B starts, all trainable` },
    { name: 'grow-freeze', experts: E0, grow: { add: K, freezeOld: true }, doc: `${E0} experts, +${K} when B starts, old experts and their router rows frozen` },
    { name: 'wide', experts: E0 + K, grow: null, doc: `${E0 + K} experts from the start (capacity control)` },
  ];
  const load = (languages: string[]): Promise<UdhrCorpus> => loadUdhrCorpus({ languages, valFraction: 0.1, testFraction: 0 });
  const [A, B] = await Promise.all([load(groupA), load(groupB)]);
  log(`continual: A = ${A.languages.join(', ')} (${A.train.length} training bytes), B = ${B.languages.join(', ')} (${B.train.length}); ${steps} steps each`);
  const results: ConditionResult[] = [];
  for (const c of conditions) {
    const tc = performance.now();
    const lm = new ByteLM({ ...model, numExperts: c.experts }, seed);
    const schedule = c.grow ? validateGrowSchedule([{ step: steps, add: c.grow.add, freezeOld: c.grow.freezeOld, rampSteps: train.rampSteps }], 'grow') : [];
    const ctl = new GrowthController(lm, schedule, seed);
    const evalTask = byteLMEvaluator(lm, A, train, seed);
    const evalBoth = (): { bpbA: number; bpbB: number } => ({ bpbA: evalTask.evaluateBytes(A.val).bitsPerByte, bpbB: evalTask.evaluateBytes(B.val).bitsPerByte });
    const curve: ConditionResult['curve'] = [{ step: 0, ...evalBoth() }];
    let afterA = curve[0]!;
    trainByteLM(lm, {
      ...train, steps: 2 * steps, seed, windowSalt: 11, data: (s) => (s < steps ? A.train : B.train),
      beforeStep: (s, opt) => ctl.beforeStep(s, opt),
      afterBackward: () => ctl.afterBackward(),
      afterStep: (s) => {
        if ((s + 1) % train.evalEvery === 0 || s + 1 === steps || s + 1 === 2 * steps) {
          const point = { step: s + 1, ...evalBoth() };
          if (curve[curve.length - 1]!.step !== point.step) curve.push(point);
          if (s + 1 === steps) afterA = point;
          lm.train();
        }
      },
    });
    const final = curve[curve.length - 1]!;
    lm.eval();
    const share = c.grow ? { A: newShare(lm, windows(A.val, train.seqLen, train.evalWindows), E0), B: newShare(lm, windows(B.val, train.seqLen, train.evalWindows), E0) } : null;
    const r: ConditionResult = {
      name: c.name, doc: c.doc, expertsEnd: lm.moeLayers()[0]!.config.numExperts, curve,
      afterA: { bpbA: afterA.bpbA, bpbB: afterA.bpbB }, final: { bpbA: final.bpbA, bpbB: final.bpbB },
      forgettingA: final.bpbA - afterA.bpbA, newExpertShare: share, seconds: (performance.now() - tc) / 1000,
    };
    results.push(r);
    log(`  ${c.name}: A ${r.afterA.bpbA.toFixed(3)} -> ${r.final.bpbA.toFixed(3)} bits/byte (forgetting ${r.forgettingA.toFixed(3)}), B ${r.afterA.bpbB.toFixed(3)} -> ${r.final.bpbB.toFixed(3)}`
      + `${share ? `; new experts take ${(100 * share.A).toFixed(1)}% of A's, ${(100 * share.B).toFixed(1)}% of B's assignments` : ''} (${formatSeconds(r.seconds)})`);
  }
  const seconds = (performance.now() - t0) / 1000;
  const result: ContinualResult = {
    experiment: 'continual', command: opts.command ?? 'moe experiment continual', seconds, out,
    config: { quick, seed, steps, groupA: A.languages, groupB: B.languages, initialExperts: E0, added: K, model, train, optimizer: 'adam, constant lr' },
    conditions: results,
  };
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), continualMarkdown(result));
  const rows = results.flatMap((r) => r.curve.flatMap((p) => [
    { step: p.step, bpb: p.bpbA, condition: r.name, group: 'A (first)' },
    { step: p.step, bpb: p.bpbB, condition: r.name, group: 'B (second)' },
  ]));
  await writePlot(join(out, 'bits-per-byte'), lineChart({
    title: `Validation bits/byte: A for ${steps} steps, then B for ${steps}`, x: { field: 'step', title: 'step' },
    y: { field: 'bpb', title: 'bits per byte' }, series: 'condition', dash: 'group', data: rows,
  }));
  return result;
}

function continualMarkdown(r: ContinualResult): string {
  const c = r.config as { steps: number; groupA: string[]; groupB: string[]; model: Record<string, number>; train: Record<string, number> };
  const f = (x: number): string => x.toFixed(3);
  const table = markdownTable(
    ['condition', 'experts at end', 'A after phase 1', 'A at end', 'forgetting A', 'B after phase 1', 'B at end', 'new experts: share of A', 'share of B'],
    r.conditions.map((x) => [x.name, x.expertsEnd, f(x.afterA.bpbA), f(x.final.bpbA), f(x.forgettingA), f(x.afterA.bpbB), f(x.final.bpbB),
      x.newExpertShare ? `${(100 * x.newExpertShare.A).toFixed(1)}%` : '-', x.newExpertShare ? `${(100 * x.newExpertShare.B).toFixed(1)}%` : '-']),
  );
  return [
    '# Continual MoE: growing experts for a new group of languages',
    '',
    `Command: \`${r.command}\` (${formatSeconds(r.seconds)} on this machine).`,
    '',
    `A byte-level MoE LM (d = ${c.model['dModel']}, ${c.model['layers']} blocks, k = ${c.model['k']}, expert width ${c.model['dFF']}) trains ${c.steps} steps on group A `
    + `(${c.groupA.join(', ')}), then ${c.steps} steps on group B (${c.groupB.join(', ')}) only; Adam, constant lr ${c.train['lr']}, batch ${c.train['batchSize']} x ${c.train['seqLen']} bytes. `
    + 'Growth adds experts to every MoE block at the switch; their logit offset starts at -30 and ramps to 0 over '
    + `${c.train['rampSteps']} steps. Bits per byte on each group's validation split (${c.train['evalWindows']} windows); lower is better.`,
    '',
    ...r.conditions.map((x) => `- \`${x.name}\`: ${x.doc}`),
    '',
    table,
    '',
    'Share of A / B: of the routing assignments of each group\'s validation tokens after training, the fraction that goes to the added experts (mean over MoE blocks).',
    '',
    '![bits per byte](bits-per-byte.png)',
    '',
  ].join('\n');
}
