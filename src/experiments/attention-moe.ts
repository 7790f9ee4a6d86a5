// `moe experiment attention-moe`: SwitchHead attention-MoE against dense multi-head attention in the
// byte-level LM on UDHR, at (nearly) equal parameters: validation bits/byte and the share of
// attention FLOPs per token saved. Every block's feed-forward is the same dense MLP, so the models
// differ in their attention only.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ByteLM, type LMConfig } from '../models/lm.js';
import type { AttentionConfig } from '../models/attention-config.js';
import { loadUdhrCorpus } from '../data/udhr-corpus.js';
import { writeFileAtomic } from '../io/atomic.js';
import { markdownTable } from '../report/table.js';
import { formatSeconds } from './common.js';
import { trainByteLM, byteLMEvaluator, type SeededByteLMExperimentOptions } from './byte-lm-training.js';

/** Default 200 steps, 2 seeds; quick: 40 steps, 1 seed. */
export type AttentionMoEOptions = SeededByteLMExperimentOptions;

/**
 * Forward FLOPs (2 x multiply-adds) per token of one block's attention in a causal sequence of T
 * tokens (n = (T + 1) / 2 keys on average): dense, 8 d^2 for the q, k, v, o projections (+ biases
 * ignored) and 4 n d for scores and weighted values; SwitchHead with H heads of hd, E experts, k
 * chosen: 4 d H hd for q and k, 4 d H E for the two gates, 4 k d H hd for the chosen value and output
 * experts, 4 n H hd for scores and weighted values.
 */
export function attentionFlopsPerToken(att: AttentionConfig, d: number, heads: number, T: number): number {
  const n = (T + 1) / 2;
  if (att.type === 'mha') return 8 * d * d + 4 * n * d;
  const H = att.heads ?? heads;
  const hd = att.headDim ?? d / H;
  const E = att.experts ?? 4;
  const k = att.k ?? 2;
  return 4 * d * H * hd + 4 * d * H * E + 4 * k * d * H * hd + 4 * n * H * hd;
}

export interface AttentionMoERun {
  name: string;
  attention: AttentionConfig;
  seed: number;
  attentionParams: number;
  totalParams: number;
  attentionFlopsPerToken: number;
  relativeAttentionFlops: number;
  valBitsPerByte: number;
  trainLossLast10: number;
  seconds: number;
}

export async function runAttentionMoE(opts: AttentionMoEOptions = {}): Promise<{ runs: AttentionMoERun[]; seconds: number; out: string }> {
  const t0 = performance.now();
  const quick = opts.quick ?? false;
  const steps = opts.steps ?? (quick ? 40 : 200);
  const seeds = opts.seeds ?? (quick ? 1 : 2);
  const out = opts.out ?? (quick ? 'docs/results/attention-moe-quick' : 'docs/results/attention-moe');
  const log = opts.log ?? ((l: string) => console.log(l));
  const languages = ['eng', 'fra', 'deu_1996', 'spa'];
  const model: Partial<LMConfig> = { dModel: 64, layers: 2, heads: 4, maxSeqLen: 64, positions: 'rope', ffn: 'dense', denseHidden: 128 };
  const train = { batchSize: 8, seqLen: 64, lr: 3e-3, clipNorm: 1, evalWindows: 32 };
  // dense: 4 heads of 16. SwitchHead: 2 heads of 16 with E = 3 value and output experts each, about
  // the dense attention's parameters (17.2k against 16.6k per block); k = 1 and k = 2 of 3. The
  // control at SwitchHead k = 1's FLOPs: the same 2 heads with one (gated) expert, i.e. a narrow
  // dense attention with half the parameters: does the expert choice buy anything at equal compute?
  const variants: Array<[string, AttentionConfig]> = [
    ['dense MHA, 4 heads', { type: 'mha' }],
    ['SwitchHead, 2 heads, E 3, k 1', { type: 'switchhead', heads: 2, headDim: 16, experts: 3, k: 1 }],
    ['SwitchHead, 2 heads, E 3, k 2', { type: 'switchhead', heads: 2, headDim: 16, experts: 3, k: 2 }],
    ['narrow control: 2 heads, E 1 (k 1)', { type: 'switchhead', heads: 2, headDim: 16, experts: 1, k: 1 }],
  ];
  const corpus = await loadUdhrCorpus({ languages, valFraction: 0.1 });
  const denseFlops = attentionFlopsPerToken({ type: 'mha' }, model.dModel!, model.heads!, train.seqLen);
  const runs: AttentionMoERun[] = [];
  for (let seed = 0; seed < seeds; seed++) {
    for (const [name, attention] of variants) {
      const tr = performance.now();
      const lm = new ByteLM({ ...model, attention }, seed);
      const losses = trainByteLM(lm, { ...train, steps, seed, windowSalt: 31, data: corpus.train });
      const task = byteLMEvaluator(lm, corpus, train);
      const val = task.evaluateBytes(corpus.val).bitsPerByte;
      const attentionParams = lm.blocks.reduce((s, b) => s + b.attn.numParameters(), 0) / lm.blocks.length;
      const flops = attentionFlopsPerToken(attention, model.dModel!, model.heads!, train.seqLen);
      const last = losses.slice(-10);
      const r: AttentionMoERun = {
        name, attention, seed, attentionParams, totalParams: lm.totalParameters(), attentionFlopsPerToken: flops, relativeAttentionFlops: flops / denseFlops,
        valBitsPerByte: val, trainLossLast10: last.reduce((a, b) => a + b, 0) / last.length, seconds: (performance.now() - tr) / 1000,
      };
      runs.push(r);
      log(`  ${name}, seed ${seed}: ${attentionParams} attention params/block, ${(100 * r.relativeAttentionFlops).toFixed(1)}% attention FLOPs, val ${val.toFixed(3)} bits/byte (${formatSeconds(r.seconds)})`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const command = opts.command ?? 'moe experiment attention-moe';
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify({ experiment: 'attention-moe', command, seconds, config: { quick, steps, seeds, languages, model, train, variants }, runs }, null, 1)}\n`);
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  const rows = variants.map(([name]) => {
    const rs = runs.filter((r) => r.name === name);
    const mean = (f: (r: AttentionMoERun) => number): number => rs.reduce((s, r) => s + f(r), 0) / rs.length;
    const vals = rs.map((r) => r.valBitsPerByte.toFixed(3)).join(' / ');
    return [name, rs[0]!.attentionParams, rs[0]!.totalParams, (rs[0]!.attentionFlopsPerToken / 1e3).toFixed(1), pct(rs[0]!.relativeAttentionFlops),
      `${mean((r) => r.valBitsPerByte).toFixed(3)}${rs.length > 1 ? ` (${vals})` : ''}`, mean((r) => r.trainLossLast10).toFixed(3), formatSeconds(mean((r) => r.seconds))];
  });
  writeFileAtomic(join(out, 'results.md'), [
    '# Attention-MoE (SwitchHead) against dense attention',
    '',
    `Command: \`${command}\` (${formatSeconds(seconds)} on this machine).`,
    '',
    `Byte-level LM (d = ${model.dModel}, ${model.layers} blocks, dense MLP feed-forwards of ${model.denseHidden}, rotary positions) on UDHR ${corpus.languages.join(', ')}; `
    + `${steps} steps of Adam (lr ${train.lr}, batch ${train.batchSize} x ${train.seqLen} bytes), seeds 0..${seeds - 1}, the same data order for every model. `
    + `Validation bits/byte over ${train.evalWindows} windows. Attention FLOPs per token are counted analytically (forward, causal T = ${train.seqLen}; see attentionFlopsPerToken) `
    + 'and relative to the dense attention. Dense and both E = 3 SwitchHead models have nearly equal parameters (matched parameters); '
    + 'the narrow control (2 heads, one gated value and output projection each) has about the attention FLOPs of SwitchHead k = 1 (matched compute) and half the attention parameters.',
    '',
    markdownTable(['attention', 'attention params / block', 'model params', 'attention kFLOP/token', 'vs dense', 'val bits/byte', 'train loss, last 10 steps (nats)', 'time / run'], rows),
    '',
  ].join('\n'));
  return { runs, seconds, out };
}
