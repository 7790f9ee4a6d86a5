// `moe experiment depth-causal`: Mixture-of-Depths decoded causally. The byte LM with routed blocks
// is trained with and without the predictor of the top-c choice; validation bits/byte under the
// teacher-forced top-c selection (non-causal) and under the predictor's causal selection (what
// KV-cached generation does), and the share of tokens the routed blocks run in each.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ByteLM, type LMConfig } from '../models/lm.js';
import { loadUdhrCorpus } from '../data/udhr-corpus.js';
import type { DepthRouter, DepthSelectionMode } from '../nn/mixture-of-depths.js';
import { writeFileAtomic } from '../io/atomic.js';
import { markdownTable } from '../report/table.js';
import { formatSeconds } from './common.js';
import { trainByteLM, byteLMEvaluator, forEachEvalWindow } from './byte-lm-training.js';

export interface DepthCausalOptions {
  out?: string;
  steps?: number;
  command?: string;
  log?: (line: string) => void;
}

export interface DepthCausalRow {
  model: string;
  selection: DepthSelectionMode;
  valBitsPerByte: number;
  /** Share of tokens the routed blocks ran over the evaluation windows. */
  processed: number;
}

export async function runDepthCausal(opts: DepthCausalOptions = {}): Promise<{ rows: DepthCausalRow[]; seconds: number; out: string }> {
  const t0 = performance.now();
  const steps = opts.steps ?? 200;
  const out = opts.out ?? 'docs/results/depth-causal';
  const log = opts.log ?? ((l: string) => console.log(l));
  const languages = ['eng', 'fra', 'deu_1996', 'spa'];
  const model: Partial<LMConfig> = { dModel: 48, layers: 4, heads: 4, maxSeqLen: 64, positions: 'learned', numExperts: 4, k: 1, dFF: 96, depthCapacity: 0.5, depthEvery: 2 };
  const train = { batchSize: 8, seqLen: 64, lr: 3e-3, clipNorm: 1, evalWindows: 32, seed: 0 };
  const corpus = await loadUdhrCorpus({ languages, valFraction: 0.1 });
  const rows: DepthCausalRow[] = [];
  for (const predictor of [false, true]) {
    const tr = performance.now();
    const lm = new ByteLM({ ...model, depthPredictor: predictor }, train.seed);
    trainByteLM(lm, { ...train, steps, windowSalt: 31, data: corpus.train });
    const routers = lm.blocks.flatMap((b) => (b.depth ? [b.depth] : [])) as DepthRouter[];
    const task = byteLMEvaluator(lm, corpus, train);
    const name = predictor ? 'with predictor' : 'without predictor';
    for (const selection of (predictor ? ['top-c', 'causal'] : ['top-c']) as DepthSelectionMode[]) {
      for (const r of routers) r.selection = selection;
      const val = task.evaluateBytes(corpus.val).bitsPerByte;
      let chosen = 0;
      let seen = 0;
      forEachEvalWindow(lm, task, corpus.val, train.seqLen, () => {
        for (const r of routers) { chosen += r.lastSelection!.rows.length; seen += train.seqLen; }
      });
      rows.push({ model: name, selection, valBitsPerByte: val, processed: chosen / seen });
      log(`  ${name}, ${selection} selection: val ${val.toFixed(3)} bits/byte, routed blocks run ${(100 * chosen / seen).toFixed(1)}% of tokens (${formatSeconds((performance.now() - tr) / 1000)})`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const command = opts.command ?? 'moe experiment depth-causal';
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify({ experiment: 'depth-causal', command, seconds, config: { steps, languages, model, train }, rows }, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), [
    '# Mixture-of-Depths decoded causally: the predictor of the top-c choice',
    '',
    `Command: \`${command}\` (${formatSeconds(seconds)} on this machine).`,
    '',
    `Byte-level MoE LM (d = ${model.dModel}, ${model.layers} blocks, blocks 2 and 4 routed by depth at capacity ${model.depthCapacity}, E = ${model.numExperts}, k = 1, learned positions) on UDHR `
    + `${corpus.languages.join(', ')}; ${steps} steps of Adam (lr ${train.lr}, batch ${train.batchSize} x ${train.seqLen} bytes), seed 0, with and without the predictor. `
    + `Validation bits/byte over ${train.evalWindows} windows: top-c is the teacher-forced, non-causal selection of training; causal is the predictor's per-token choice, `
    + 'which KV-cached generation makes. Processed: share of tokens the routed blocks ran.',
    '',
    markdownTable(['model', 'selection', 'val bits/byte', 'processed'], rows.map((r) => [r.model, r.selection, r.valBitsPerByte.toFixed(3), `${(100 * r.processed).toFixed(1)}%`])),
    '',
  ].join('\n'));
  return { rows, seconds, out };
}
