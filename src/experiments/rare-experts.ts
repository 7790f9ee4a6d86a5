// Rare inputs reach under-trained experts: trains a small MoEDecoder on UDHR bytes of a high- and a low-resource language, recording per-expert token counts, then measures how much held-out text of each language routes to rarely trained experts.
//
// The model is saved as an HF directory (config.json carries the counts) and read back before the
// evaluation, so the numbers come from what `moe serve --model DIR` would load. MoEDecoder has no
// auxiliary load-balancing loss in its forward: routing is learned from the language-model loss
// alone, as the model's autograd path gives it.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadUdhr, encodeBytes } from '../data/text.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { crossEntropy } from '../ops/index.js';
import { AdamW, clipGradNorm } from '../train/optim.js';
import { MemoryTensorSource } from '../formats/tensor-source.js';
import { writeHFDir } from '../formats/hf/write.js';
import { BYTE_BOS_ID, BYTE_EOS_ID, byteLevelTokenizerConfig, byteLevelTokenizerJson } from '../formats/hf/byte-tokenizer.js';
import { presetConfig, randomHFTensors } from '../models/moe-decoder-create.js';
import { decoderConfigToHF, type MoEDecoderConfig } from '../models/moe-decoder-config.js';
import { fromHF, toHF } from '../models/moe-decoder-hf.js';
import type { MoEDecoder } from '../models/moe-decoder.js';
import { loadLM } from '../models/load-lm.js';
import { ExpertTokenCounter, expertTokenCountsOf, setExpertTokenCounts, type ExpertTokenCounts } from '../models/expert-token-counts.js';
import { RareExperts, addTally, emptyTally, rareShare, type RareTally } from '../infer/rare-experts.js';
import { writeFileAtomic } from '../io/atomic.js';
import { checkPositiveInt, checkPositiveNumber } from './common.js';

export interface RareExpertsOptions {
  /** Output directory: model/ (HF directory with counts), results.json, results.md. */
  out: string;
  /** udhr code of the high-resource language (default eng). */
  high?: string;
  /** udhr code of the low-resource language (default swh). */
  low?: string;
  /** Languages never trained on, evaluated as controls (default fin, rus). */
  unseen?: string[];
  /** The low-resource language gets this many times fewer training bytes than the high one (default 20). */
  lowRatio?: number;
  /** The end of each text held out for evaluation (default 0.2). */
  heldOutFraction?: number;
  steps?: number;
  seqLen?: number;
  lr?: number;
  seed?: number;
  numLayers?: number;
  numExperts?: number;
  topK?: number;
  /** Rare thresholds reported (fractions of the uniform share 1/E; default 0.1, 0.25, 0.5). */
  thresholds?: number[];
  log?: (line: string) => void;
}

export interface LanguageResult {
  language: string;
  role: 'high' | 'low' | 'unseen';
  trainBytes: number;
  heldOutBytes: number;
  /** Held-out next-byte loss in bits per byte. */
  bitsPerByte: number;
  /** Per threshold: the tally and its two shares. */
  rare: Array<{ threshold: number; rareShare: number; rareTokenShare: number; tally: RareTally }>;
}

export interface RareExpertsResult {
  config: MoEDecoderConfig;
  options: Required<Omit<RareExpertsOptions, 'log'>>;
  trainSeconds: number;
  finalTrainLoss: number;
  counts: ExpertTokenCounts;
  /** Per threshold: rarely trained experts per MoE layer. */
  rareExperts: Array<{ threshold: number; perLayer: number[][] }>;
  languages: LanguageResult[];
}

/** Moves a cut forward past UTF-8 continuation bytes, so no part starts mid-character. */
function charBoundary(b: Uint8Array, i: number): number {
  while (i < b.length && (b[i]! & 0xc0) === 0x80) i++;
  return i;
}

function resolve(o: RareExpertsOptions): Required<Omit<RareExpertsOptions, 'log'>> {
  const r = {
    out: o.out, high: o.high ?? 'eng', low: o.low ?? 'swh', unseen: o.unseen ?? ['fin', 'rus'], lowRatio: o.lowRatio ?? 20,
    heldOutFraction: o.heldOutFraction ?? 0.2, steps: o.steps ?? 1200, seqLen: o.seqLen ?? 128, lr: o.lr ?? 3e-3, seed: o.seed ?? 0,
    numLayers: o.numLayers ?? 2, numExperts: o.numExperts ?? 8, topK: o.topK ?? 2, thresholds: o.thresholds ?? [0.1, 0.25, 0.5],
  };
  for (const k of ['steps', 'seqLen', 'numLayers', 'numExperts', 'topK'] as const) checkPositiveInt('rare-experts', k, r[k]);
  for (const k of ['lowRatio', 'lr'] as const) checkPositiveNumber('rare-experts', k, r[k]);
  if (!(r.heldOutFraction > 0 && r.heldOutFraction < 1)) throw new Error(`rare-experts: heldOutFraction must be in (0, 1), got ${r.heldOutFraction}`);
  if (r.topK > r.numExperts) throw new Error(`rare-experts: topK ${r.topK} exceeds numExperts ${r.numExperts}`);
  for (const t of r.thresholds) if (!(t > 0 && t <= 1)) throw new Error(`rare-experts: thresholds must be in (0, 1], got ${t}`);
  return r;
}

/** Held-out loss and routing tallies of bytes, in non-overlapping windows of seqLen (+1 target byte). */
function evaluate(model: MoEDecoder, bytes: Uint8Array, seqLen: number, rare: RareExperts[]): { bitsPerByte: number; tallies: RareTally[] } {
  const tallies = rare.map(() => emptyTally());
  let lossSum = 0;
  let n = 0;
  const routing: Array<Int32Array | null> = [];
  const prev = model.onRouting;
  model.onRouting = (l, e) => { routing[l] = e; };
  try {
    noGrad(() => {
      for (let s = 0; s + 1 < bytes.length; s += seqLen) {
        const T = Math.min(seqLen, bytes.length - 1 - s);
        const ids = Int32Array.from(bytes.subarray(s, s + T));
        routing.length = 0;
        const logits = model.forward(ids);
        const loss = crossEntropy(logits, Int32Array.from(bytes.subarray(s + 1, s + T + 1)));
        lossSum += (loss.data[0] as number) * T;
        n += T;
        rare.forEach((r, i) => addTally(tallies[i]!, r.tally(routing, T)));
      }
    });
  } finally {
    model.onRouting = prev;
  }
  return { bitsPerByte: n > 0 ? lossSum / n / Math.LN2 : NaN, tallies };
}

export async function runRareExperts(opts: RareExpertsOptions): Promise<RareExpertsResult> {
  const o = resolve(opts);
  const log = opts.log ?? (() => {});
  const langs = [o.high, o.low, ...o.unseen];
  const texts = await loadUdhr({ languages: langs });
  const parts = texts.map((t) => {
    const b = encodeBytes(t.text);
    const cut = charBoundary(b, b.length - Math.round(b.length * o.heldOutFraction));
    return { language: t.language, train: b.subarray(0, cut), heldOut: b.subarray(cut) };
  });
  const high = parts[0]!;
  const lowAll = parts[1]!;
  const low = { ...lowAll, train: lowAll.train.subarray(0, charBoundary(lowAll.train, Math.round(high.train.length / o.lowRatio))) };
  // one training stream; windows are drawn uniformly over it, so each language gets tokens in proportion to its bytes
  const corpus = new Uint8Array(high.train.length + 1 + low.train.length);
  corpus.set(high.train, 0);
  corpus[high.train.length] = 0x0a;
  corpus.set(low.train, high.train.length + 1);
  if (corpus.length < o.seqLen + 2) throw new Error(`rare-experts: the training text (${corpus.length} bytes) is shorter than seqLen + 2`);
  log(`train: ${high.language} ${high.train.length} bytes, ${low.language} ${low.train.length} bytes (1/${o.lowRatio}); held out: ${parts.map((p) => `${p.language} ${p.heldOut.length}`).join(', ')}`);

  const base = presetConfig('mixtral', 'tiny');
  const config: MoEDecoderConfig = { ...base, numLayers: o.numLayers, numExperts: o.numExperts, topK: o.topK, slidingWindow: null, maxPositionEmbeddings: Math.max(512, o.seqLen) };
  const hf = { ...decoderConfigToHF(config), bos_token_id: BYTE_BOS_ID, eos_token_id: BYTE_EOS_ID };
  const model = fromHF(hf, new MemoryTensorSource(randomHFTensors(config, o.seed)));
  const counter = new ExpertTokenCounter(config);
  counter.attach(model);
  const params = model.namedParameters();
  const opt = new AdamW(params, { lr: o.lr, weightDecay: 0.01 });
  const rng = new Rng(o.seed + 1);
  const warmup = Math.min(50, Math.floor(o.steps / 10));
  let ema = NaN;
  const t0 = performance.now();
  for (let step = 0; step < o.steps; step++) {
    // linear warm-up, then cosine decay to a tenth
    const p = step < warmup ? (step + 1) / warmup : (step - warmup) / Math.max(1, o.steps - warmup);
    opt.lr = step < warmup ? o.lr * p : o.lr * (0.1 + 0.45 * (1 + Math.cos(Math.PI * p)));
    const s = rng.int(corpus.length - o.seqLen - 1);
    const logits = model.forward(Int32Array.from(corpus.subarray(s, s + o.seqLen)));
    const loss = crossEntropy(logits, Int32Array.from(corpus.subarray(s + 1, s + o.seqLen + 1)));
    loss.backward();
    const norm = clipGradNorm(params.map(([, t]) => t), 1);
    if (Number.isFinite(norm)) opt.step();
    opt.zeroGrad();
    const l = loss.data[0] as number;
    ema = Number.isNaN(ema) ? l : 0.98 * ema + 0.02 * l;
    if ((step + 1) % 200 === 0 || step + 1 === o.steps) log(`step ${step + 1}/${o.steps}: loss ${ema.toFixed(3)} nats (EMA), ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const trainSeconds = (performance.now() - t0) / 1000;
  model.onRouting = undefined;
  const counts = counter.counts();
  setExpertTokenCounts(model, counts);

  const dir = join(o.out, 'model');
  mkdirSync(dir, { recursive: true });
  const { config: cfg, tensors } = toHF(model);
  writeHFDir(dir, { config: cfg, tensors, tokenizerJson: byteLevelTokenizerJson(), tokenizerConfig: byteLevelTokenizerConfig() });
  // evaluate what a server would load: the directory read back, counts included
  const lm = await loadLM(dir);
  const loaded = expertTokenCountsOf(lm.model, join(dir, 'config.json'));
  if (!loaded || JSON.stringify(loaded) !== JSON.stringify(counts)) throw new Error(`rare-experts: ${dir}/config.json does not give back the recorded counts`);
  const rare = o.thresholds.map((threshold) => new RareExperts(loaded, { numExperts: config.numExperts, topK: config.topK, threshold }));

  const roles: Array<LanguageResult['role']> = ['high', 'low', ...o.unseen.map(() => 'unseen' as const)];
  const languages = parts.map((p, i): LanguageResult => {
    const ev = evaluate(lm.model, p.heldOut, o.seqLen, rare);
    const trainBytes = i === 0 ? high.train.length : i === 1 ? low.train.length : 0;
    return {
      language: p.language, role: roles[i]!, trainBytes, heldOutBytes: p.heldOut.length, bitsPerByte: ev.bitsPerByte,
      rare: ev.tallies.map((t, j) => ({ threshold: o.thresholds[j]!, rareShare: rareShare(t), rareTokenShare: t.tokens > 0 ? t.rareTokens / t.tokens : 0, tally: t })),
    };
  });
  const result: RareExpertsResult = {
    config, options: o, trainSeconds, finalTrainLoss: ema, counts,
    rareExperts: rare.map((r) => ({ threshold: r.threshold, perLayer: r.rare.map((x) => (x ? Array.from(x).flatMap((v, e) => (v ? [e] : [])) : [])) })),
    languages,
  };
  writeFileAtomic(join(o.out, 'results.json'), `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(join(o.out, 'results.md'), rareExpertsMarkdown(result));
  return result;
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

export function rareExpertsMarkdown(r: RareExpertsResult): string {
  const c = r.config;
  const lines = [
    `MoEDecoder (mixtral layout, ${c.numLayers} layers, d = ${c.hiddenSize}, ${c.numExperts} experts top-${c.topK}), ${r.options.steps} steps of ${r.options.seqLen} bytes, ${r.trainSeconds.toFixed(1)} s, final training loss ${r.finalTrainLoss.toFixed(3)} nats/byte (EMA).`,
    '',
    'Training share of each expert per MoE layer (uniform = ' + pct(1 / c.numExperts) + '):',
    '',
    ...r.counts.layers.map((l, i) => {
      if (!l) return `- layer ${i}: dense`;
      const tot = l.reduce((a, b) => a + b, 0);
      return `- layer ${i}: ${l.map((x) => pct(x / tot)).join(', ')}`;
    }),
    '',
    `| language | role | train bytes | held-out bytes | bits/byte | ${r.options.thresholds.map((t) => `rare share (t=${t}) | rare tokens (t=${t})`).join(' | ')} |`,
    `| --- | --- | ---: | ---: | ---: | ${r.options.thresholds.map(() => '---: | ---:').join(' | ')} |`,
    ...r.languages.map((l) => `| ${l.language} | ${l.role} | ${l.trainBytes} | ${l.heldOutBytes} | ${l.bitsPerByte.toFixed(2)} | ${l.rare.map((x) => `${pct(x.rareShare)} | ${pct(x.rareTokenShare)}`).join(' | ')} |`),
    '',
    `Rarely trained experts (share < t / ${c.numExperts}) per layer: ${r.rareExperts.map((x) => `t=${x.threshold}: ${x.perLayer.map((p, l) => `L${l} [${p.join(', ')}]`).join(' ')}`).join('; ')}.`,
    '',
  ];
  return lines.join('\n');
}
