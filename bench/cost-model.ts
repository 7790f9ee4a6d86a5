// `moe bench cost-model`: the seed's inference cost model, time per step = bytes loaded / bandwidth
// + FLOPs / throughput, fitted to decode steps measured on this machine at several batch sizes, with
// the error of the fit at every point; and the roofline form, fixed + max(bytes / bandwidth, FLOPs /
// throughput), side by side.
//
// A decode step of B sequences reads the non-expert weights once, each expert that at least one of
// the B tokens chose (once, however many chose it: tokens routed to the same expert share its
// grouped GEMM), the LM head, and each sequence's KV cache. Its FLOPs grow with B. Batch 1 is
// memory-bound; larger batches read few more bytes (experts overlap) for B times the FLOPs, which
// is the MoE-specific gain of batching the fit makes visible.

import { Rng } from '../src/index.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import type { KVCache } from '../src/nn/kv-cache.js';
import { argmax } from '../src/infer/sampler.js';
import { activeBytesPerToken, floorBandwidthGBs, measureBandwidth } from './decode.js';
import { median } from './timing.js';

export interface CostPoint {
  batch: number;
  /** Median over the measured steps. */
  stepMs: number;
  /** Mean over the measured steps: weights (distinct experts per layer) + KV cache read. */
  bytesPerStep: number;
  flopsPerStep: number;
  /** Mean distinct experts per MoE layer per step (k at batch 1). */
  distinctExperts: number;
  predictedMs: number;
  /** (predicted - measured) / measured. */
  relError: number;
  /** The roofline fit's prediction and error at this point. */
  rooflinePredictedMs: number;
  rooflineRelError: number;
  tokensPerSec: number;
}

export interface CostModelReport {
  points: CostPoint[];
  /** Fitted: bytes / bandwidthGBs + flops / throughputGflops (ms from GB/s and GFLOP/s). */
  fit: { bandwidthGBs: number; throughputGflops: number; maxAbsRelError: number; meanAbsRelError: number };
  /** Fitted: fixedMs + max(bytes / bandwidthGBs, flops / throughputGflops) (fitRoofline). */
  roofline: { bandwidthGBs: number; throughputGflops: number; fixedMs: number; maxAbsRelError: number; meanAbsRelError: number };
  /** The bandwidth probe of the same run, for comparison with the fitted bandwidth. */
  measuredBandwidthGBs: number;
  promptTokens: number;
  steps: number;
}

export interface CostModelOptions {
  batches?: number[];
  promptTokens?: number;
  steps?: number;
  seed?: number;
  log?: (line: string) => void;
}

/** What a step's cost is made of, per model (computed once, not per step). */
interface ModelCost {
  /** Bytes every step reads whatever the routing: non-expert weights and the LM head. */
  fixedBytes: number;
  /** One embedding row per sequence (0 when tied: the head reads the table). */
  embeddingRow: number;
  /** One expert's three projections in one layer. */
  perExpert: number;
  /** K and V of one cached position over all layers, float32. */
  kvRow: number;
  /** 2 per weight one token uses: dense weights and its k experts. */
  flopsPerToken: number;
  /** Attention FLOPs per token and cached position: q.K and p.V over all heads and layers. */
  attnFlopsPerPosition: number;
}

function modelCost(model: MoEDecoder): ModelCost {
  const c = model.config;
  const a = activeBytesPerToken(model);
  // a.experts counts k experts per MoE layer
  const moeLayers = model.layers.filter((l) => l.moe).length;
  let dense = 0;
  let expertParams = 0;
  for (const [name, w] of model.namedWeights()) {
    const n = w.shape.reduce((x, y) => x * y, 1);
    if (/\.moe\.w[123]$/.test(name)) expertParams += n / c.numExperts;
    else if (name !== 'embed' || !model.lmHead) dense += n;
  }
  return {
    fixedBytes: a.nonExpert + a.lmHead,
    embeddingRow: a.embeddingRow,
    perExpert: moeLayers > 0 ? a.experts / (c.topK * moeLayers) : 0,
    kvRow: 2 * c.numKVHeads * c.headDim * 4 * c.numLayers,
    flopsPerToken: 2 * (dense + (moeLayers > 0 ? c.topK * expertParams : 0)),
    attnFlopsPerPosition: 4 * c.numHeads * c.headDim * c.numLayers,
  };
}

/** Bytes and FLOPs of one decode step from the routing it used (distinct experts per layer) and the context lengths. */
function stepCost(m: ModelCost, distinct: number[], contexts: number[]): { bytes: number; flops: number } {
  let bytes = m.fixedBytes + m.embeddingRow * contexts.length;
  for (const n of distinct) bytes += n * m.perExpert;
  let flops = m.flopsPerToken * contexts.length;
  for (const L of contexts) {
    bytes += L * m.kvRow;
    flops += L * m.attnFlopsPerPosition;
  }
  return { bytes, flops };
}

/** Least squares of t = x1 * bytes + x2 * flops over the points (no intercept), both coefficients >= 0. */
export function fitCostModel(points: Array<{ bytes: number; flops: number; ms: number }>): { msPerByte: number; msPerFlop: number } {
  // Scale the columns so the 2x2 normal equations are well conditioned.
  const sb = Math.max(...points.map((p) => p.bytes)) || 1;
  const sf = Math.max(...points.map((p) => p.flops)) || 1;
  let aa = 0, ab = 0, bb = 0, ay = 0, by = 0;
  for (const p of points) {
    const a = p.bytes / sb, b = p.flops / sf;
    aa += a * a; ab += a * b; bb += b * b; ay += a * p.ms; by += b * p.ms;
  }
  const det = aa * bb - ab * ab;
  let x1 = det > 1e-12 * aa * bb ? (ay * bb - by * ab) / det : -1;
  let x2 = det > 1e-12 * aa * bb ? (aa * by - ab * ay) / det : -1;
  // A negative coefficient means one term explains the points alone: fit that term by itself.
  if (x1 < 0 || x2 < 0) {
    const only1 = aa > 0 ? ay / aa : 0;
    const only2 = bb > 0 ? by / bb : 0;
    const err = (c1: number, c2: number): number => points.reduce((s, p) => s + (c1 * p.bytes / sb + c2 * p.flops / sf - p.ms) ** 2, 0);
    [x1, x2] = err(only1, 0) <= err(0, only2) ? [only1, 0] : [0, only2];
  }
  return { msPerByte: x1 / sb, msPerFlop: x2 / sf };
}

/**
 * The roofline form: t = fixed + max(bytes * msPerByte, flops * msPerFlop): a step is bound by
 * whichever of reading weights and arithmetic takes longer (they overlap, not add), plus a fixed
 * cost per step (JS, kernel hand-offs). Fitted by minimising the squared relative error over a log
 * grid of bandwidths (0.5-200 GB/s) and throughputs (1-2000 GFLOP/s), 1% apart, the fixed term in
 * closed form for each (>= 0). Needs at least 3 points to mean anything.
 */
export function fitRoofline(points: Array<{ bytes: number; flops: number; ms: number }>): { msPerByte: number; msPerFlop: number; fixedMs: number; sqRelError: number } {
  const grid = (lo: number, hi: number): number[] => {
    const out: number[] = [];
    for (let v = lo; v <= hi; v *= 1.01) out.push(v);
    return out;
  };
  let best = { msPerByte: 0, msPerFlop: 0, fixedMs: 0, sqRelError: Infinity };
  const bws = grid(0.5, 200).map((gbs) => 1 / (gbs * 1e6));
  const tps = grid(1, 2000).map((gf) => 1 / (gf * 1e6));
  const w = points.map((p) => 1 / (p.ms * p.ms));
  const wSum = w.reduce((a, b) => a + b, 0);
  for (const a of bws) {
    for (const b of tps) {
      let num = 0;
      const m = points.map((p) => Math.max(p.bytes * a, p.flops * b));
      for (let i = 0; i < points.length; i++) num += w[i]! * (points[i]!.ms - m[i]!);
      const c = Math.max(0, num / wSum);
      let err = 0;
      for (let i = 0; i < points.length; i++) err += ((c + m[i]! - points[i]!.ms) / points[i]!.ms) ** 2;
      if (err < best.sqRelError) best = { msPerByte: a, msPerFlop: b, fixedMs: c, sqRelError: err };
    }
  }
  return best;
}

export function benchCostModel(model: MoEDecoder, opts: CostModelOptions = {}): CostModelReport {
  const log = opts.log ?? (() => {});
  const batches = opts.batches ?? [1, 2, 4, 8, 16];
  const P = opts.promptTokens ?? 32;
  const S = opts.steps ?? 12;
  const c = model.config;
  if (!(Number.isInteger(P) && P >= 1)) throw new Error(`bench cost-model: --prompt-tokens must be a positive integer, got ${P}`);
  if (!(Number.isInteger(S) && S >= 2)) throw new Error(`bench cost-model: --steps must be an integer >= 2, got ${S}`);
  for (const b of batches) if (!(Number.isInteger(b) && b >= 1 && b <= 256)) throw new Error(`bench cost-model: batch size ${b} must be an integer in [1, 256]`);
  if (P + S + 1 > c.maxPositionEmbeddings) throw new Error(`bench cost-model: ${P} prompt tokens + ${S + 1} steps exceed the model's context of ${c.maxPositionEmbeddings}`);
  const rng = new Rng(opts.seed ?? 0);
  const cost0 = modelCost(model);
  const previousHook = model.onRouting;
  const points: Array<Omit<CostPoint, 'predictedMs' | 'relError' | 'rooflinePredictedMs' | 'rooflineRelError'>> = [];
  try {
    for (const B of batches) {
      const caches: KVCache[] = Array.from({ length: B }, () => model.newCache(P + S + 2));
      // prefill each sequence alone (not timed), then B-token decode steps
      let next = caches.map((cache) => {
        const logits = model.forwardBatch([{ ids: Int32Array.from({ length: P }, () => rng.int(c.vocabSize)), cache }])[0]!;
        return argmax(logits.data, logits.size - c.vocabSize, c.vocabSize);
      });
      const perLayer = new Map<number, Set<number>>();
      model.onRouting = (layer, experts) => {
        let s = perLayer.get(layer);
        if (!s) perLayer.set(layer, (s = new Set()));
        for (const e of experts) s.add(e);
      };
      const ms: number[] = [];
      let bytes = 0, flops = 0, distinctSum = 0;
      for (let step = 0; step <= S; step++) {
        perLayer.clear();
        const contexts = caches.map((cache) => cache.length + 1);
        const t0 = performance.now();
        const out = model.forwardBatch(caches.map((cache, i) => ({ ids: Int32Array.of(next[i]!), cache })));
        const dt = performance.now() - t0;
        next = out.map((l) => argmax(l.data, l.size - c.vocabSize, c.vocabSize));
        if (step === 0) continue; // warm-up step: first touches, JIT
        const distinct = [...perLayer.values()].map((s) => s.size);
        const cost = stepCost(cost0, distinct, contexts);
        ms.push(dt);
        bytes += cost.bytes;
        flops += cost.flops;
        distinctSum += distinct.length ? distinct.reduce((a, b) => a + b, 0) / distinct.length : 0;
      }
      const stepMs = median(ms);
      const p = { batch: B, stepMs, bytesPerStep: bytes / S, flopsPerStep: flops / S, distinctExperts: distinctSum / S, tokensPerSec: (1000 * B) / stepMs };
      points.push(p);
      log(`batch ${B}: ${stepMs.toFixed(2)} ms per step (${p.tokensPerSec.toFixed(1)} tokens/s), ${(p.bytesPerStep / 1e6).toFixed(1)} MB and ${(p.flopsPerStep / 1e9).toFixed(2)} GFLOP per step, ${p.distinctExperts.toFixed(1)} distinct experts per layer`);
    }
  } finally {
    model.onRouting = previousHook;
  }
  const { msPerByte, msPerFlop } = fitCostModel(points.map((p) => ({ bytes: p.bytesPerStep, flops: p.flopsPerStep, ms: p.stepMs })));
  const full = points.map((p) => {
    const predictedMs = msPerByte * p.bytesPerStep + msPerFlop * p.flopsPerStep;
    return { ...p, predictedMs, relError: (predictedMs - p.stepMs) / p.stepMs };
  });
  const errs = full.map((p) => Math.abs(p.relError));
  const rf = fitRoofline(points.map((p) => ({ bytes: p.bytesPerStep, flops: p.flopsPerStep, ms: p.stepMs })));
  const rfErr = points.map((p) => {
    const predictedMs = rf.fixedMs + Math.max(rf.msPerByte * p.bytesPerStep, rf.msPerFlop * p.flopsPerStep);
    return { predictedMs, relError: (predictedMs - p.stepMs) / p.stepMs };
  });
  const rfAbs = rfErr.map((e) => Math.abs(e.relError));
  const bw = measureBandwidth();
  return {
    points: full.map((p, i) => ({ ...p, rooflinePredictedMs: rfErr[i]!.predictedMs, rooflineRelError: rfErr[i]!.relError })),
    roofline: {
      bandwidthGBs: 1 / (rf.msPerByte * 1e6),
      throughputGflops: 1 / (rf.msPerFlop * 1e6),
      fixedMs: rf.fixedMs,
      maxAbsRelError: Math.max(...rfAbs),
      meanAbsRelError: rfAbs.reduce((a, b) => a + b, 0) / rfAbs.length,
    },
    fit: {
      bandwidthGBs: msPerByte > 0 ? 1 / (msPerByte * 1e6) : Infinity,
      throughputGflops: msPerFlop > 0 ? 1 / (msPerFlop * 1e6) : Infinity,
      maxAbsRelError: Math.max(...errs),
      meanAbsRelError: errs.reduce((a, b) => a + b, 0) / errs.length,
    },
    measuredBandwidthGBs: floorBandwidthGBs(bw),
    promptTokens: P,
    steps: S,
  };
}

export function formatCostModelReport(r: CostModelReport): string {
  const f = r.fit;
  const lines = [
    `fit: time per step = bytes / ${f.bandwidthGBs.toFixed(1)} GB/s + FLOPs / ${f.throughputGflops.toFixed(1)} GFLOP/s` +
      ` (bandwidth probe of this run: ${r.measuredBandwidthGBs.toFixed(1)} GB/s)`,
    `error: mean ${(100 * f.meanAbsRelError).toFixed(1)}%, max ${(100 * f.maxAbsRelError).toFixed(1)}% over ${r.points.length} batch sizes`,
    `roofline fit: time per step = ${r.roofline.fixedMs.toFixed(2)} ms + max(bytes / ${r.roofline.bandwidthGBs.toFixed(1)} GB/s, FLOPs / ${r.roofline.throughputGflops.toFixed(1)} GFLOP/s)` +
      `; error: mean ${(100 * r.roofline.meanAbsRelError).toFixed(1)}%, max ${(100 * r.roofline.maxAbsRelError).toFixed(1)}%`,
    '',
    'batch  ms/step  predicted  error  roofline  error   tokens/s  MB/step  GFLOP/step  experts/layer',
  ];
  for (const p of r.points) {
    lines.push(`${String(p.batch).padStart(5)}  ${p.stepMs.toFixed(2).padStart(7)}  ${p.predictedMs.toFixed(2).padStart(9)}  ${(100 * p.relError).toFixed(1).padStart(5)}%  ` +
      `${p.rooflinePredictedMs.toFixed(2).padStart(8)}  ${(100 * p.rooflineRelError).toFixed(1).padStart(5)}%  ` +
      `${p.tokensPerSec.toFixed(1).padStart(8)}  ${(p.bytesPerStep / 1e6).toFixed(1).padStart(7)}  ${(p.flopsPerStep / 1e9).toFixed(2).padStart(10)}  ${p.distinctExperts.toFixed(1).padStart(13)}`);
  }
  return lines.join('\n');
}
