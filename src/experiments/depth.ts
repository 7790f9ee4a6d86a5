// `moe experiment depth`: Mixture-of-Depths on the byte-level MoE LM. The same model trained at
// depth capacities 1 (no skipping), 0.5, 0.25, 0.125 for the same steps: forward FLOPs per token
// against validation bits/byte (testing the seed's "60% fewer FLOPs with minimal accuracy loss"),
// and which bytes the routed blocks process: word starts, word-internal bytes, spaces/punctuation.
// Evaluation is teacher-forced with the non-causal top-c selection of training (see nn/mixture-of-depths.ts).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ByteLM, lmConfig as lmConfigOf, type LMConfig } from '../models/lm.js';
import { loadUdhrCorpus } from '../data/udhr-corpus.js';
import { depthCapacityTokens } from '../nn/mixture-of-depths.js';
import { writeFileAtomic } from '../io/atomic.js';
import { lineChart, writePlot } from '../report/plot.js';
import { markdownTable } from '../report/table.js';
import { formatSeconds } from './common.js';
import { trainByteLM, byteLMEvaluator, forEachEvalWindow } from './byte-lm-training.js';

export interface DepthExperimentOptions {
  quick?: boolean;
  out?: string;
  steps?: number;
  capacities?: number[];
  /** Route every this many blocks (default 2: blocks 2 and 4). */
  depthEvery?: number;
  command?: string;
  log?: (line: string) => void;
}

type ByteType = 'word-start' | 'word-internal' | 'space-punct';
const TYPES: ByteType[] = ['word-start', 'word-internal', 'space-punct'];

export interface DepthRun {
  capacity: number;
  flopsPerToken: number;
  relativeFlops: number;
  valBitsPerByte: number;
  /** Share of the bytes of each type that the routed blocks process (mean over routed blocks). */
  processedShare: Record<ByteType, number>;
  seconds: number;
}

/** Space, punctuation and control bytes below 0x80 separate words; UTF-8 bytes count as letters. */
function isSeparator(b: number): boolean {
  return b < 0x80 && !/[A-Za-z0-9]/.test(String.fromCharCode(b));
}

function byteType(prev: number | undefined, b: number): ByteType {
  if (isSeparator(b)) return 'space-punct';
  return prev === undefined || isSeparator(prev) ? 'word-start' : 'word-internal';
}

/**
 * Forward multiply-adds x 2 per token of a byte LM, counting what runs: per block the four attention
 * projections (8 d^2), scores and weighted values (4 d n per token with n = (L + 1) / 2 keys on average
 * for L tokens in the causal sequence), the k experts (4 k d dFF, x 1.5 for swiglu) and the router
 * (2 d E); a routed block runs on C = ceil(c T) of T tokens, plus its depth router (2 d); and the head 2 d 256.
 */
export function lmFlopsPerToken(c: LMConfig, T: number): number {
  const d = c.dModel;
  const ffn = (c.activation === 'swiglu' ? 6 : 4) * c.k * d * c.dFF + 2 * d * c.numExperts;
  const block = (L: number): number => 8 * d * d + 4 * d * ((L + 1) / 2) + ffn;
  let total = 2 * d * 256;
  for (let i = 0; i < c.layers; i++) {
    const routed = c.depthCapacity < 1 && (i + 1) % c.depthEvery === 0;
    const C = routed ? depthCapacityTokens(c.depthCapacity, T) : T;
    total += (C / T) * block(C) + (routed ? 2 * d : 0);
  }
  return total;
}

export async function runDepth(opts: DepthExperimentOptions = {}): Promise<{ runs: DepthRun[]; seconds: number; out: string }> {
  const t0 = performance.now();
  const quick = opts.quick ?? false;
  const steps = opts.steps ?? (quick ? 50 : 200);
  const capacities = opts.capacities ?? [1, 0.5, 0.25, 0.125];
  const out = opts.out ?? (quick ? 'docs/results/depth-quick' : 'docs/results/depth');
  const log = opts.log ?? ((l: string) => console.log(l));
  const languages = ['eng', 'fra', 'deu_1996', 'spa'];
  const depthEvery = opts.depthEvery ?? 2;
  const model: Partial<LMConfig> = { dModel: 48, layers: 4, heads: 4, maxSeqLen: 64, positions: 'learned', numExperts: 4, k: 1, dFF: 96, depthEvery };
  const train = { batchSize: 8, seqLen: 64, lr: 3e-3, clipNorm: 1, evalWindows: 32, seed: 0 };
  const corpus = await loadUdhrCorpus({ languages, valFraction: 0.1 });
  const runs: DepthRun[] = [];
  for (const capacity of capacities) {
    const tr = performance.now();
    const lm = new ByteLM({ ...model, depthCapacity: capacity }, train.seed);
    trainByteLM(lm, { ...train, steps, windowSalt: 31, data: corpus.train });
    const task = byteLMEvaluator(lm, corpus, train);
    const val = task.evaluateBytes(corpus.val).bitsPerByte;
    // which bytes the routed blocks take, over the evaluation windows
    const counts = Object.fromEntries(TYPES.map((t) => [t, { seen: 0, processed: 0 }])) as Record<ByteType, { seen: number; processed: number }>;
    const routed = lm.blocks.filter((b) => b.depth !== null);
    const T = train.seqLen;
    forEachEvalWindow(lm, task, corpus.val, T, (bytes) => {
      const types = Array.from(bytes, (b, t) => byteType(t > 0 ? bytes[t - 1] : undefined, b));
      for (const t of types) counts[t].seen += Math.max(1, routed.length);
      if (routed.length === 0) { for (const t of types) counts[t].processed++; return; }
      for (const b of routed) for (const r of b.depth!.lastSelection!.rows) counts[types[r]!].processed++;
    });
    const flops = lmFlopsPerToken(lm.config, T);
    const r: DepthRun = {
      capacity, flopsPerToken: flops, relativeFlops: NaN, valBitsPerByte: val, seconds: (performance.now() - tr) / 1000,
      processedShare: Object.fromEntries(TYPES.map((t) => [t, counts[t].seen > 0 ? counts[t].processed / counts[t].seen : 0])) as Record<ByteType, number>,
    };
    runs.push(r);
    log(`  capacity ${capacity}: ${(flops / 1e6).toFixed(3)} MFLOP/token, val ${val.toFixed(3)} bits/byte; routed blocks take ${TYPES.map((t) => `${t} ${(100 * r.processedShare[t]).toFixed(0)}%`).join(', ')} (${formatSeconds(r.seconds)})`);
  }
  // relative to the same model without skipping (computed, not trained, when capacity 1 is not in the list)
  const full = lmFlopsPerToken(lmConfigOf({ ...model, depthCapacity: 1 }), train.seqLen);
  for (const r of runs) r.relativeFlops = r.flopsPerToken / full;
  const seconds = (performance.now() - t0) / 1000;
  const command = opts.command ?? 'moe experiment depth';
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify({ experiment: 'depth', command, seconds, config: { quick, steps, capacities, languages, model, train }, runs }, null, 1)}\n`);
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  writeFileAtomic(join(out, 'results.md'), [
    '# Mixture-of-Depths: FLOPs per token against validation loss',
    '',
    `Command: \`${command}\` (${formatSeconds(seconds)} on this machine).`,
    '',
    `Byte-level MoE LM (d = ${model.dModel}, ${model.layers} blocks, ${depthEvery === 1 ? 'every block' : `every ${depthEvery}${depthEvery === 2 ? 'nd' : 'th'} block`} routed by depth, E = ${model.numExperts}, k = 1, learned positions) on UDHR `
    + `${corpus.languages.join(', ')}; ${steps} steps of Adam (lr ${train.lr}, batch ${train.batchSize} x ${train.seqLen} bytes), seed 0, one run per capacity. `
    + 'FLOPs are counted analytically (forward, per token; see lmFlopsPerToken). Validation is teacher-forced with the same non-causal top-c selection as training, '
    + `so it is an optimistic estimate for autoregressive use. Processed share: of the bytes of each type in ${train.evalWindows} validation windows, the fraction a routed block ran (mean over routed blocks).`,
    '',
    markdownTable(['capacity', 'MFLOP/token', 'FLOPs vs c = 1', 'val bits/byte', ...TYPES.map((t) => `processed: ${t}`)],
      runs.map((r) => [r.capacity, (r.flopsPerToken / 1e6).toFixed(3), pct(r.relativeFlops), r.valBitsPerByte.toFixed(3), ...TYPES.map((t) => pct(r.processedShare[t]))])),
    '',
    '![bits per byte against FLOPs](loss-vs-flops.png)',
    '',
  ].join('\n'));
  await writePlot(join(out, 'loss-vs-flops'), lineChart({
    title: 'Mixture-of-Depths: validation bits/byte against forward FLOPs per token', x: { field: 'relativeFlops', title: 'FLOPs per token, relative to capacity 1' },
    y: { field: 'valBitsPerByte', title: 'val bits per byte' }, series: 'model', data: runs.map((r) => ({ ...r, model: 'MoD byte LM' })),
  }));
  return { runs, seconds, out };
}
