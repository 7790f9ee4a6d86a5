// The bandwidth cost model over batch sizes and expert budgets: time per step = bytes / bandwidth + FLOPs / throughput, fitted to `moe bench expert-cache` rows, with the error per point.
//
// A decode step under a budget reads what an all-resident step reads (non-expert weights, the head,
// each distinct expert once, the KV caches) plus the misses it copies from the model file into slots.
// The seed's form counts both as bytes loaded at one bandwidth; the second fit gives file reads their
// own bandwidth (they are page-cache copies, read and written), to show how much that changes.

import type { MoEDecoder } from '../src/models/moe-decoder.js';
import { activeBytesPerToken } from './decode.js';
import { fitCostModel } from './cost-model.js';

/** What the fit needs from one measured configuration (a TextDecodeResult of a row without low-precision copies). */
export interface CacheCostInput {
  label: string;
  batch: number;
  stepMs: number;
  /** Distinct experts per step, summed over the MoE layers. */
  distinctExpertsPerStep: number;
  meanContext: number;
  /** Expert bytes read from the model file per token (0 all resident). */
  fileBytesPerToken: number;
}

export interface CacheCostPoint extends CacheCostInput {
  memoryBytes: number;
  fileBytes: number;
  flops: number;
  /** The seed's form: (memory + file bytes) / bandwidth + FLOPs / throughput. */
  predictedMs: number;
  relError: number;
  /** File reads at their own bandwidth: memory / bw + file / bwFile + FLOPs / throughput. */
  splitPredictedMs: number;
  splitRelError: number;
}

export interface CacheCostFit {
  points: CacheCostPoint[];
  seed: { bandwidthGBs: number; throughputGflops: number; meanAbsRelError: number; maxAbsRelError: number };
  split: { bandwidthGBs: number; fileBandwidthGBs: number; throughputGflops: number; meanAbsRelError: number; maxAbsRelError: number };
}

/** Non-negative least squares of y = X c over a handful of columns: the best of every column subset whose unconstrained solution is >= 0. */
export function nnls(rows: number[][], y: number[]): number[] {
  const n = rows[0]?.length ?? 0;
  const scale = Array.from({ length: n }, (_, j) => Math.max(...rows.map((r) => Math.abs(r[j]!))) || 1);
  let best: number[] = new Array<number>(n).fill(0);
  let bestErr = y.reduce((s, v) => s + v * v, 0);
  for (let mask = 1; mask < 1 << n; mask++) {
    const cols = Array.from({ length: n }, (_, j) => j).filter((j) => mask & (1 << j));
    const m = cols.length;
    // normal equations on scaled columns, Gaussian elimination with partial pivoting
    const A = cols.map((a) => [...cols.map((b) => rows.reduce((s, r) => s + (r[a]! / scale[a]!) * (r[b]! / scale[b]!), 0)), rows.reduce((s, r, i) => s + (r[a]! / scale[a]!) * y[i]!, 0)]);
    let ok = true;
    for (let c = 0; c < m && ok; c++) {
      let p = c;
      for (let r = c + 1; r < m; r++) if (Math.abs(A[r]![c]!) > Math.abs(A[p]![c]!)) p = r;
      [A[c], A[p]] = [A[p]!, A[c]!];
      if (Math.abs(A[c]![c]!) < 1e-12) { ok = false; break; }
      for (let r = 0; r < m; r++) {
        if (r === c) continue;
        const f = A[r]![c]! / A[c]![c]!;
        for (let k = c; k <= m; k++) A[r]![k]! -= f * A[c]![k]!;
      }
    }
    if (!ok) continue;
    const sol = new Array<number>(n).fill(0);
    cols.forEach((j, i) => { sol[j] = A[i]![m]! / A[i]![i]! / scale[j]!; });
    if (sol.some((v) => v < 0)) continue;
    const err = rows.reduce((s, r, i) => s + (r.reduce((t, v, j) => t + v * sol[j]!, 0) - y[i]!) ** 2, 0);
    if (err < bestErr) { bestErr = err; best = sol; }
  }
  return best;
}

/** Bytes and FLOPs per step from the all-resident model's shapes, fitted both ways; the error at every point. */
export function fitCacheCost(model: MoEDecoder, inputs: CacheCostInput[]): CacheCostFit {
  if (inputs.length < 3) throw new Error(`bench expert-cache --cost-model: ${inputs.length} measured point(s); the fits need at least 3`);
  const c = model.config;
  const a = activeBytesPerToken(model);
  const moeLayers = model.layers.filter((l) => l.moe).length;
  const perExpert = moeLayers > 0 ? a.experts / (c.topK * moeLayers) : 0;
  const kvRow = 2 * c.numKVHeads * c.headDim * 4 * c.numLayers;
  let dense = 0;
  let expertParams = 0;
  for (const [name, w] of model.namedWeights()) {
    const n = w.shape.reduce((x, y) => x * y, 1);
    if (/\.moe\.w[123]$/.test(name)) expertParams += n / c.numExperts;
    else if (name !== 'embed' || !model.lmHead) dense += n;
  }
  const flopsPerToken = 2 * (dense + c.topK * expertParams);
  const attnPerPosition = 4 * c.numHeads * c.headDim * c.numLayers;
  const pts = inputs.map((p) => {
    const memoryBytes = a.nonExpert + a.lmHead + a.embeddingRow * p.batch + p.distinctExpertsPerStep * perExpert + p.batch * p.meanContext * kvRow;
    const fileBytes = p.fileBytesPerToken * p.batch;
    const flops = p.batch * (flopsPerToken + p.meanContext * attnPerPosition);
    return { ...p, memoryBytes, fileBytes, flops };
  });
  const seedFit = fitCostModel(pts.map((p) => ({ bytes: p.memoryBytes + p.fileBytes, flops: p.flops, ms: p.stepMs })));
  const [msMem, msFile, msFlop] = nnls(pts.map((p) => [p.memoryBytes, p.fileBytes, p.flops]), pts.map((p) => p.stepMs)) as [number, number, number];
  const points: CacheCostPoint[] = pts.map((p) => {
    const predictedMs = seedFit.msPerByte * (p.memoryBytes + p.fileBytes) + seedFit.msPerFlop * p.flops;
    const splitPredictedMs = msMem * p.memoryBytes + msFile * p.fileBytes + msFlop * p.flops;
    return { ...p, predictedMs, relError: (predictedMs - p.stepMs) / p.stepMs, splitPredictedMs, splitRelError: (splitPredictedMs - p.stepMs) / p.stepMs };
  });
  const summary = (errs: number[]): { meanAbsRelError: number; maxAbsRelError: number } => ({
    meanAbsRelError: errs.reduce((s, e) => s + Math.abs(e), 0) / errs.length, maxAbsRelError: Math.max(...errs.map(Math.abs)),
  });
  const gbs = (msPerByte: number): number => (msPerByte > 0 ? 1 / (msPerByte * 1e6) : Infinity);
  return {
    points,
    seed: { bandwidthGBs: gbs(seedFit.msPerByte), throughputGflops: gbs(seedFit.msPerFlop), ...summary(points.map((p) => p.relError)) },
    split: { bandwidthGBs: gbs(msMem), fileBandwidthGBs: gbs(msFile), throughputGflops: gbs(msFlop), ...summary(points.map((p) => p.splitRelError)) },
  };
}

export function formatCacheCost(f: CacheCostFit): string {
  const pct = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`;
  const num = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : 'inf');
  const lines = [
    `Seed form: time per step = bytes / ${num(f.seed.bandwidthGBs)} GB/s + FLOPs / ${num(f.seed.throughputGflops)} GFLOP/s (file reads counted as bytes): mean |error| ${(100 * f.seed.meanAbsRelError).toFixed(1)}%, max ${(100 * f.seed.maxAbsRelError).toFixed(1)}%`,
    `File reads apart: memory bytes / ${num(f.split.bandwidthGBs)} GB/s + file bytes / ${num(f.split.fileBandwidthGBs, 2)} GB/s + FLOPs / ${num(f.split.throughputGflops)} GFLOP/s: mean |error| ${(100 * f.split.meanAbsRelError).toFixed(1)}%, max ${(100 * f.split.maxAbsRelError).toFixed(1)}%`,
    '',
    '| point | batch | ms/step | MB from memory | MB from the file | GFLOP | seed form | error | file apart | error |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...f.points.map((p) => `| ${p.label} | ${p.batch} | ${p.stepMs.toFixed(2)} | ${(p.memoryBytes / 1e6).toFixed(1)} | ${(p.fileBytes / 1e6).toFixed(1)} | ${(p.flops / 1e9).toFixed(2)} | ${p.predictedMs.toFixed(2)} | ${pct(p.relError)} | ${p.splitPredictedMs.toFixed(2)} | ${pct(p.splitRelError)} |`),
  ];
  return lines.join('\n');
}

/**
 * The points of `moe bench expert-cache` rows (as measure() makes them, or saved with --json): every
 * cache without copies read on the decoding thread (sync), and the all-resident run interleaved
 * with each (batch, budget, policy) group, once per group.
 */
export function cacheCostInputs(rows: ReadonlyArray<Record<string, unknown>>): CacheCostInput[] {
  const out: CacheCostInput[] = [];
  const groups = new Set<string>();
  for (const r of rows) {
    if (r['refused'] || typeof r['stepMs'] !== 'number' || r['loads'] !== 'sync' || r['low'] !== 'off') continue;
    const budget = `${(100 * (r['budget'] as number)).toFixed(1)}%`;
    const group = `${r['batch']} ${budget} ${r['policy']}`;
    const common = { batch: r['batch'] as number, meanContext: r['meanContext'] as number };
    if (!groups.has(group) && typeof r['residentStepMs'] === 'number') {
      groups.add(group);
      out.push({ ...common, label: `all resident (beside ${budget} ${r['policy']})`, stepMs: r['residentStepMs'] as number, distinctExpertsPerStep: r['residentDistinctExpertsPerStep'] as number, fileBytesPerToken: 0 });
    }
    out.push({ ...common, label: `${budget} ${r['policy']}`, stepMs: r['stepMs'] as number, distinctExpertsPerStep: r['distinctExpertsPerStep'] as number, fileBytesPerToken: r['bytesLoadedPerToken'] as number });
  }
  return out;
}
