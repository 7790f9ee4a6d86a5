// `moe bench decode`: batch-1 prefill and decode tokens/s of a MoE decoder, next to the floor set
// by memory bandwidth (measured in the same run) and the bytes one decoded token must read.

import { Rng, Tensor, ops } from '../src/index.js';
import type { MoEDecoder, Weight } from '../src/models/moe-decoder.js';
import { weightBytes } from '../src/models/moe-decoder-weights.js';
import type { KVCache } from '../src/nn/kv-cache.js';
import { generate } from '../src/infer/generate.js';
import { measure, median } from './timing.js';
import { measureReadBandwidth, nativeInfo } from '../src/backends/native/index.js';

export interface ActiveBytes {
  /** What one decode step must read: non-expert weights + k experts per MoE layer + embedding row + lm_head. */
  total: number;
  /** All weights, for comparison. */
  allWeights: number;
  experts: number;
  nonExpert: number;
  embeddingRow: number;
  lmHead: number;
}

/**
 * Bytes of weights one decoded token reads, as stored: float32, or Q8_0/Q4_0 blocks for a model
 * loaded with a quantised dtype. The KV cache read is not included (it grows with the context;
 * reported apart).
 */
export function activeBytesPerToken(model: MoEDecoder): ActiveBytes {
  const c = model.config;
  const bytesOf = weightBytes;
  const expertTensors = new Set<Weight>();
  for (const layer of model.layers) if (layer.moe) for (const w of [layer.moe.w1, layer.moe.w2, layer.moe.w3]) expertTensors.add(w);
  let experts = 0;
  let nonExpert = 0;
  let all = 0;
  for (const [, p] of model.namedWeights()) {
    all += bytesOf(p);
    if (p === model.embed || p === model.lmHead) continue;
    // every expert's weights take the same bytes, and a token uses k of E of them
    if (expertTensors.has(p)) experts += (bytesOf(p) * c.topK) / c.numExperts;
    else nonExpert += bytesOf(p);
  }
  const lmHead = bytesOf(model.lmHead ?? model.embed);
  // tied: the head reads the whole embedding matrix, which holds the row
  const embeddingRow = model.lmHead ? bytesOf(model.embed) / c.vocabSize : 0;
  return { total: experts + nonExpert + embeddingRow + lmHead, allWeights: all, experts, nonExpert, embeddingRow, lmHead };
}

export interface Bandwidth {
  /** Read-only streaming (the backend's sum over a buffer far larger than the caches), GB/s. */
  readGBs: number;
  /** TypedArray copy, bytes read + written, GB/s. */
  copyGBs: number;
  bufferBytes: number;
  /** The native probe's median: every pool thread reads its part of a 1 GiB buffer (null without the addon). */
  threadedReadGBs: number | null;
}

/** The bandwidth the floor divides by: the threaded read probe (decode's pattern), else the best of read and copy. */
export function floorBandwidthGBs(bw: Bandwidth): number {
  return bw.threadedReadGBs ?? Math.max(bw.readGBs, bw.copyGBs);
}

/** Memory bandwidth now, on this machine: the threaded native read probe, a large read through ops.sum and a large copy. */
export function measureBandwidth(bufferBytes = 512 * 1024 * 1024): Bandwidth {
  const threadedReadGBs = nativeInfo() ? measureReadBandwidth(2 ** 30, 5).medianGBs : null;
  const n = Math.floor(bufferBytes / 4);
  const a = Tensor.empty([n]);
  new Rng(0).fillUniform(a.data as Float32Array, -1, 1);
  const read = measure(() => { ops.sum(a); }, { budgetMs: 1500, minRuns: 3, maxRuns: 10 });
  const dst = new Float32Array(n);
  const src = a.data as Float32Array;
  const copy = measure(() => dst.set(src), { budgetMs: 1500, minRuns: 3, maxRuns: 10 });
  return { readGBs: (4 * n) / (read.medianMs * 1e6), copyGBs: (8 * n) / (copy.medianMs * 1e6), bufferBytes: 4 * n, threadedReadGBs };
}

export interface DecodeBenchOptions {
  promptTokens?: number;
  newTokens?: number;
  seed?: number;
  /** Timed generations, each followed by a bandwidth probe (default 3): decode, prefill and bandwidth are medians. */
  rounds?: number;
  /** The bandwidth probe (default measureBandwidth: ~3 s each); tests pass a cheap one. */
  probe?: () => Bandwidth;
  log?: (line: string) => void;
}

export interface DecodeBenchReport {
  prefillTokensPerSec: number;
  decodeTokensPerSec: number;
  floorTokensPerSec: number;
  bandwidthGBs: number;
  activeBytesPerToken: number;
  details: {
    promptTokens: number;
    newTokens: number;
    readGBs: number;
    copyGBs: number;
    bytes: ActiveBytes;
    /** KV cache bytes read per decoded token at the mean context of the run. */
    kvBytesPerTokenMean: number;
    /** decodeTokensPerSec / floorTokensPerSec. */
    fractionOfFloor: number;
    threads: string;
    /** Every round: its generation's speeds and the probe that followed it. */
    rounds: Array<{ prefillTokensPerSec: number; decodeTokensPerSec: number; bandwidthGBs: number }>;
  };
}

export function benchDecode(model: MoEDecoder, opts: DecodeBenchOptions = {}): DecodeBenchReport {
  const log = opts.log ?? (() => {});
  const c = model.config;
  const P = opts.promptTokens ?? 64;
  const N = opts.newTokens ?? 32;
  if (!(Number.isInteger(P) && P >= 1)) throw new Error(`bench decode: --prompt-tokens must be a positive integer, got ${P}`);
  if (!(Number.isInteger(N) && N >= 2)) throw new Error(`bench decode: --new-tokens must be an integer >= 2 (one prefill token plus decode steps), got ${N}`);
  if (P + N > c.maxPositionEmbeddings) throw new Error(`bench decode: ${P} prompt + ${N} new tokens exceed the model's context of ${c.maxPositionEmbeddings}`);
  const rng = new Rng(opts.seed ?? 0);
  const prompt = Int32Array.from({ length: P }, () => rng.int(c.vocabSize));
  const bytes = activeBytesPerToken(model);
  log(`active bytes per decoded token: ${(bytes.total / 1e6).toFixed(2)} MB (experts ${(bytes.experts / 1e6).toFixed(2)}, other ${(bytes.nonExpert / 1e6).toFixed(2)}, lm_head ${(bytes.lmHead / 1e6).toFixed(2)}) of ${(bytes.allWeights / 1e6).toFixed(1)} MB of weights`);
  // warm-up: first-call costs (kernel setup, page faults on the weights) out of the timed run
  generate<KVCache>(model, prompt.subarray(0, Math.min(P, 8)), { maxNewTokens: 2 });
  // Rounds of (greedy generation, bandwidth probe): one 63-step run and one probe moved by 30-60%
  // between runs on a shared VM (Q8_0 1b: 35 tokens/s in one run, 57-62 in the same minutes in
  // others; the probe 14-19 GB/s), so both are medians over rounds taken alternately.
  const R = opts.rounds ?? 3;
  if (!(Number.isInteger(R) && R >= 1)) throw new Error(`bench decode: --rounds must be a positive integer, got ${R}`);
  const rounds: Array<{ prefillTokensPerSec: number; decodeTokensPerSec: number; bandwidthGBs: number }> = [];
  let bw = null as ReturnType<typeof measureBandwidth> | null;
  for (let r = 0; r < R; r++) {
    // greedy; no EOS, so every run decodes exactly N tokens
    const run = generate<KVCache>(model, prompt, { maxNewTokens: N });
    bw = (opts.probe ?? measureBandwidth)();
    rounds.push({ prefillTokensPerSec: run.prefillTokensPerSec, decodeTokensPerSec: run.decodeTokensPerSec ?? 0, bandwidthGBs: floorBandwidthGBs(bw) });
    const x = rounds.at(-1)!;
    log(`round ${r + 1}/${R}: prefill ${P} tokens ${x.prefillTokensPerSec.toFixed(1)} tokens/s; decode ${N - 1} steps ${x.decodeTokensPerSec.toFixed(2)} tokens/s; bandwidth ${x.bandwidthGBs.toFixed(1)} GB/s`);
  }
  const prefill = median(rounds.map((x) => x.prefillTokensPerSec));
  const decode = median(rounds.map((x) => x.decodeTokensPerSec));
  const bandwidthGBs = median(rounds.map((x) => x.bandwidthGBs));
  bw = bw!;
  const threaded = bw.threadedReadGBs === null ? 'no native probe' : `threaded read (1 GiB, median of 5) ${bw.threadedReadGBs.toFixed(1)} GB/s`;
  log(`memory bandwidth (last probe): ${threaded}; ops.sum read ${bw.readGBs.toFixed(1)} GB/s, copy ${bw.copyGBs.toFixed(1)} GB/s (${(bw.bufferBytes / 2 ** 20).toFixed(0)} MiB buffers)`);
  const floor = (bandwidthGBs * 1e9) / bytes.total;
  const kvPerPos = 2 * c.numLayers * c.numKVHeads * c.headDim * 4;
  return {
    prefillTokensPerSec: prefill,
    decodeTokensPerSec: decode,
    floorTokensPerSec: floor,
    bandwidthGBs,
    activeBytesPerToken: bytes.total,
    details: {
      promptTokens: P, newTokens: N, readGBs: bw.readGBs, copyGBs: bw.copyGBs, bytes,
      kvBytesPerTokenMean: kvPerPos * (P + N / 2),
      fractionOfFloor: decode / floor,
      threads: process.env['MOE_NATIVE_THREADS'] ?? 'default',
      rounds,
    },
  };
}

export function formatDecodeReport(r: DecodeBenchReport): string {
  const d = r.details;
  return [
    `prefill (${d.promptTokens} tokens, batch 1): ${r.prefillTokensPerSec.toFixed(1)} tokens/s (median of ${d.rounds.length})`,
    `decode (${d.newTokens - 1} steps, batch 1):   ${r.decodeTokensPerSec.toFixed(2)} tokens/s (median of ${d.rounds.length}: ${d.rounds.map((x) => x.decodeTokensPerSec.toFixed(1)).join(', ')})`,
    `floor: ${r.floorTokensPerSec.toFixed(1)} tokens/s = ${r.bandwidthGBs.toFixed(1)} GB/s (median probe: ${d.rounds.map((x) => x.bandwidthGBs.toFixed(1)).join(', ')}) / ${(r.activeBytesPerToken / 1e6).toFixed(2)} MB per token`,
    `decode is ${(100 * d.fractionOfFloor).toFixed(1)}% of the floor (KV cache adds ~${(d.kvBytesPerTokenMean / 1e6).toFixed(2)} MB per token at the mean context, not in the floor)`,
  ].join('\n');
}
