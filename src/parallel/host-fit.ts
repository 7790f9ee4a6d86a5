// The simulator's cost model fitted to this host: from measured expert-parallel exchanges (bytes
// per rank pair and time, `moe bench all-to-all`), a "this host" topology (latency per round, link
// bandwidth, the copy of a rank's own rows, a fixed cost per exchange), then the simulator's
// prediction for each measured point against the measurement. Pure functions: the measuring is in
// host-check.ts, so the fitting and the comparison are testable on synthetic points.

import { exchangeCost, type Algorithm, type Topology } from './simulator.js';

/** One measured configuration: N ranks, rows[r][j] rows sent r -> j per exchange, times per training step. */
export interface HostPoint {
  tokens: number;
  dModel: number;
  workers: number;
  /** Rows rank r sent to rank j in one exchange [N][N]. */
  rows: number[][];
  /** Measured ms per training step: the exchange part (4 exchanges), the whole step, and one process's step. */
  exchangeMs: number;
  stepMs: number;
  oneProcessMs: number;
}

/** Exchanges per training step: forward dispatch and combine, backward dispatch and combine. */
export const EXCHANGES_PER_STEP = 4;

/** Coefficients of one exchange's time: seconds = latencyS * rounds + bandwidthTerm / bytesPerS + localBytes / localBytesPerS + overheadS. */
export interface ExchangeFeatures {
  /** Latency terms paid in sequence (the algorithm's rounds). */
  rounds: number;
  /** Bytes on the slowest path, summed over rounds (seconds at 1 byte/s). */
  linkBytes: number;
  /** The largest count of bytes a rank keeps (copied locally). */
  localBytes: number;
}

function byteMatrix(p: { rows: number[][]; dModel: number }): number[][] {
  return p.rows.map((r) => r.map((n) => n * p.dModel * 4));
}

/** The features of a point's exchange, read off the simulator itself under unit topologies. */
export function exchangeFeatures(p: { rows: number[][]; dModel: number }, algo: Algorithm): ExchangeFeatures {
  const D = p.rows.length;
  const bytes = byteMatrix(p);
  const unit = (bandwidthGBs: number, latencyUs: number): Topology => ({
    name: 'unit', source: 'fit', devices: D, devicesPerNode: D, intra: { bandwidthGBs, latencyUs }, inter: { bandwidthGBs, latencyUs },
  });
  // 1 s per message and free bandwidth counts the rounds; no latency and 1 byte/s sums the bytes
  const rounds = exchangeCost(bytes, unit(Infinity, 1e6), algo).seconds;
  const linkBytes = exchangeCost(bytes, unit(1e-9, 0), algo).seconds;
  let localBytes = 0;
  bytes.forEach((r, i) => { localBytes = Math.max(localBytes, r[i]!); });
  return { rounds, linkBytes, localBytes };
}

export interface HostFit {
  /** Seconds per round, seconds per link byte, seconds per local byte, seconds per exchange (all >= 0). */
  latencyS: number;
  sPerLinkByte: number;
  sPerLocalByte: number;
  overheadS: number;
  /** Root mean square relative error of the fitted exchange times. */
  rmsRelError: number;
  algorithm: Algorithm;
}

/**
 * Non-negative least squares of the per-exchange time over the points, each weighted by 1 / its
 * time (so the fit minimises relative errors: the points span ms to 100s of ms). Four unknowns:
 * every subset of them is solved unconstrained and the best one with no negative coefficient kept.
 */
export function fitHost(points: HostPoint[], algo: Algorithm = 'pairwise'): HostFit {
  if (points.length === 0) throw new Error('fitHost: no measured points');
  for (const p of points) {
    if (!(p.exchangeMs > 0)) throw new Error(`fitHost: the point T=${p.tokens} d=${p.dModel} N=${p.workers} has exchangeMs ${p.exchangeMs}; a fit needs positive times`);
  }
  const X = points.map((p) => {
    const f = exchangeFeatures(p, algo);
    return [f.rounds, f.linkBytes, f.localBytes, 1];
  });
  const y = points.map((p) => (p.exchangeMs / EXCHANGES_PER_STEP) * 1e-3);
  let best: { theta: number[]; err: number } | null = null;
  for (let mask = 1; mask < 16; mask++) {
    const cols = [0, 1, 2, 3].filter((c) => mask & (1 << c));
    const sol = weightedLeastSquares(X.map((r) => cols.map((c) => r[c]!)), y);
    if (!sol || sol.some((v) => v < 0)) continue;
    const theta = [0, 0, 0, 0];
    cols.forEach((c, i) => { theta[c] = sol[i]!; });
    const err = rmsRel(X, y, theta);
    if (!best || err < best.err - 1e-15) best = { theta, err };
  }
  if (!best) throw new Error('fitHost: no non-negative fit (the points are degenerate)');
  const [latencyS, sPerLinkByte, sPerLocalByte, overheadS] = best.theta as [number, number, number, number];
  return { latencyS, sPerLinkByte, sPerLocalByte, overheadS, rmsRelError: best.err, algorithm: algo };
}

function rmsRel(X: number[][], y: number[], theta: number[]): number {
  let s = 0;
  X.forEach((r, i) => {
    const pred = r.reduce((a, v, j) => a + v * theta[j]!, 0);
    s += ((pred - y[i]!) / y[i]!) ** 2;
  });
  return Math.sqrt(s / y.length);
}

/** min sum ((X theta - y) / y)^2 by the normal equations; null when singular. */
function weightedLeastSquares(X: number[][], y: number[]): number[] | null {
  const k = X[0]!.length;
  const A = Array.from({ length: k }, () => new Array<number>(k + 1).fill(0));
  X.forEach((r, i) => {
    const w = 1 / (y[i]! * y[i]!);
    for (let a = 0; a < k; a++) {
      for (let b = 0; b < k; b++) A[a]![b]! += w * r[a]! * r[b]!;
      A[a]![k]! += w * r[a]! * y[i]!;
    }
  });
  // the columns differ by orders of magnitude (rounds vs bytes): scale them before eliminating
  const scale = A.map((row, a) => Math.sqrt(row[a]!) || 1);
  for (let a = 0; a < k; a++) {
    for (let b = 0; b < k; b++) A[a]![b]! /= scale[a]! * scale[b]!;
    A[a]![k]! /= scale[a]!;
  }
  for (let c = 0; c < k; c++) {
    let piv = c;
    for (let r = c + 1; r < k; r++) if (Math.abs(A[r]![c]!) > Math.abs(A[piv]![c]!)) piv = r;
    if (Math.abs(A[piv]![c]!) < 1e-12) return null;
    [A[c], A[piv]] = [A[piv]!, A[c]!];
    for (let r = 0; r < k; r++) {
      if (r === c) continue;
      const f = A[r]![c]! / A[c]![c]!;
      for (let j = c; j <= k; j++) A[r]![j]! -= f * A[c]![j]!;
    }
  }
  return A.map((row, a) => row[k]! / row[a]! / scale[a]!);
}

/** Bandwidth standing for "free" where the fit gives a term no cost (JSON has no Infinity). */
const FREE_GBS = 1e9;

/** The fitted figures as a topology of `devices` ranks on one node (the simulator's input). */
export function hostTopology(fit: HostFit, devices: number, source: string): Topology {
  const gbs = (sPerByte: number): number => (sPerByte > 0 ? 1 / (sPerByte * 1e9) : FREE_GBS);
  const link = { bandwidthGBs: gbs(fit.sPerLinkByte), latencyUs: fit.latencyS * 1e6 };
  return {
    name: 'host-fitted', source, devices, devicesPerNode: devices, intra: link, inter: { ...link },
    localCopyGBs: gbs(fit.sPerLocalByte), overheadUs: fit.overheadS * 1e6,
  };
}

export interface HostCheckRow {
  tokens: number;
  dModel: number;
  workers: number;
  /** Whether the point was one the fit saw. */
  fitted: boolean;
  measuredExchangeMs: number;
  predictedExchangeMs: number;
  /** (predicted - measured) / measured. */
  exchangeError: number;
  measuredStepMs: number;
  /** One process's step plus the predicted exchange: the simulator's devices compute as one process would. */
  predictedStepMs: number;
  stepError: number;
}

/** The simulator's prediction on `topo` for each point, against the measurement. */
export function checkHost(points: HostPoint[], topo: Topology, algo: Algorithm, fitted: (p: HostPoint) => boolean): HostCheckRow[] {
  return points.map((p) => {
    const predictedExchangeMs = EXCHANGES_PER_STEP * exchangeCost(byteMatrix(p), { ...topo, devices: p.workers, devicesPerNode: p.workers }, algo).seconds * 1e3;
    const predictedStepMs = p.oneProcessMs + predictedExchangeMs;
    return {
      tokens: p.tokens, dModel: p.dModel, workers: p.workers, fitted: fitted(p),
      measuredExchangeMs: p.exchangeMs, predictedExchangeMs, exchangeError: (predictedExchangeMs - p.exchangeMs) / p.exchangeMs,
      measuredStepMs: p.stepMs, predictedStepMs, stepError: (predictedStepMs - p.stepMs) / p.stepMs,
    };
  });
}
