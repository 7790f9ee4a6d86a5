// `moe bench moe-layer`: tokens per second of the MoE layer forward and forward+backward, the share
// of time in GEMM kernels, flatness as E grows at fixed active parameters, peak memory and the
// bytes the autograd graph keeps per token for backward.

import { Rng, Tensor, noGrad, ops, moe, profileKernels, getBackend, savedForBackward, type KernelProfile, type SavedEntry } from '../src/index.js';
import { measure, formatTable } from './timing.js';

export interface MoELayerCase {
  numExperts: number;
  forwardTokensPerSec: number;
  forwardBackwardTokensPerSec: number;
  forwardMs: number;
  forwardBackwardMs: number;
  /** Share of forward+backward time inside matmul / groupedMatmul kernels. */
  gemmShare: number;
  /** Share of forward+backward time in the grouped GEMM alone. */
  groupedGemmShare: number;
  /** Time per kernel in one profiled forward+backward (ms). */
  kernels: KernelProfile;
  /** Bytes the autograd graph keeps for backward after forward, per token (parameters and input excluded). */
  keptBytesPerToken: number;
  /** The largest kept buffers: op and shape. */
  kept: SavedEntry[];
}

export interface MoELayerReport {
  backend: string;
  tokens: number;
  dModel: number;
  dFF: number;
  k: number;
  forwardTokensPerSec: number;
  forwardBackwardTokensPerSec: number;
  peakRssMiB: number;
  /** Minimum bytes per token that backward needs (see formatMoELayerReport). */
  minimumBytesPerToken: number;
  cases: MoELayerCase[];
}

export function benchMoELayer(opts: { tokens?: number; experts?: number[]; log?: (l: string) => void } = {}): MoELayerReport {
  const T = opts.tokens ?? 4096;
  const d = 512;
  const dFF = 2048;
  const k = 2;
  const log = opts.log ?? (() => {});
  const rng = new Rng(0);
  const x = Tensor.empty([T, d]);
  rng.fillNormal(x.data as Float32Array);
  const g = Tensor.empty([T, d]);
  rng.fillNormal(g.data as Float32Array);
  const cases: MoELayerCase[] = [];
  for (const E of opts.experts ?? [8, 32, 128]) {
    const layer = new moe.MoELayer({ dModel: d, dFF, numExperts: E, router: { type: 'topk', k }, activation: 'gelu', seed: 1 });
    const fwd = measure(() => { noGrad(() => layer.forward(x)); }, { budgetMs: 3000, minRuns: 5 });
    const fb = measure(() => {
      const xr = x.detach().requireGrad();
      const out = layer.forward(xr);
      ops.add(ops.sum(ops.mul(out.y, g)), out.auxLoss).backward();
      layer.zeroGrad();
    }, { budgetMs: 4000, minRuns: 5 });
    const { profile } = profileKernels(() => {
      const out = layer.forward(x.detach().requireGrad());
      ops.add(ops.sum(ops.mul(out.y, g)), out.auxLoss).backward();
      layer.zeroGrad();
    });
    const total = Object.values(profile).reduce((s, p) => s + p.ms, 0);
    const gemm = (profile['matmul']?.ms ?? 0) + (profile['groupedMatmul']?.ms ?? 0) + (profile['groupedMatmulWeightGrad']?.ms ?? 0);
    const grouped = (profile['groupedMatmul']?.ms ?? 0) + (profile['groupedMatmulWeightGrad']?.ms ?? 0);
    // what the graph holds for backward, as declared by each op (parameters and the input live anyway)
    const xr = x.detach().requireGrad();
    const out = layer.forward(xr);
    const kept = savedForBackward([out.y, out.auxLoss], [xr, ...layer.parameters()]);
    const c: MoELayerCase = {
      numExperts: E,
      forwardTokensPerSec: T / (fwd.medianMs / 1000),
      forwardBackwardTokensPerSec: T / (fb.medianMs / 1000),
      forwardMs: fwd.medianMs,
      forwardBackwardMs: fb.medianMs,
      gemmShare: gemm / total,
      groupedGemmShare: grouped / total,
      kernels: profile,
      keptBytesPerToken: kept.bytes / T,
      kept: kept.entries.sort((a, b) => b.bytes - a.bytes).slice(0, 8),
    };
    cases.push(c);
    log(`E=${E}: forward ${c.forwardTokensPerSec.toFixed(0)} tok/s, forward+backward ${c.forwardBackwardTokensPerSec.toFixed(0)} tok/s, GEMM ${(100 * c.gemmShare).toFixed(0)}% of kernel time, kept ${(c.keptBytesPerToken / 1024).toFixed(1)} KiB/token`);
  }
  const first = cases[0]!;
  // backward needs, per token: k hidden pre-activations (k*dFF floats, to differentiate and to
  // recompute the activation) and the layer input (d floats); rows and outputs can be re-gathered
  const minimumBytesPerToken = 4 * (k * dFF + d);
  return {
    backend: getBackend().name, tokens: T, dModel: d, dFF, k,
    forwardTokensPerSec: first.forwardTokensPerSec, forwardBackwardTokensPerSec: first.forwardBackwardTokensPerSec,
    peakRssMiB: process.resourceUsage().maxRSS / 1024, minimumBytesPerToken, cases,
  };
}

export function formatMoELayerReport(r: MoELayerReport): string {
  const rows = r.cases.map((c) => [
    String(c.numExperts), c.forwardTokensPerSec.toFixed(0), c.forwardBackwardTokensPerSec.toFixed(0), c.forwardMs.toFixed(1),
    c.forwardBackwardMs.toFixed(1), `${(100 * c.gemmShare).toFixed(1)}%`, `${(c.keptBytesPerToken / 1024).toFixed(1)}`,
  ]);
  const top = Object.entries(r.cases[0]!.kernels).sort((a, b) => b[1].ms - a[1].ms).slice(0, 8)
    .map(([n, p]) => `${n} ${p.ms.toFixed(1)} ms (${p.calls})`).join(', ');
  return [
    `MoE layer, backend ${r.backend}: T=${r.tokens}, d=${r.dModel}, d_ff=${r.dFF}, top-${r.k} softmax, GELU experts, float32`,
    formatTable(['E', 'fwd tok/s', 'fwd+bwd tok/s', 'fwd ms', 'fwd+bwd ms', 'GEMM share', 'kept KiB/tok'], rows),
    '',
    `kernels at E=${r.cases[0]!.numExperts} (one forward+backward): ${top}`,
    `largest buffers kept for backward at E=${r.cases[0]!.numExperts}: ${r.cases[0]!.kept.map((e) => `${e.op} [${e.shape.join('x')}] ${(e.bytes / 2 ** 20).toFixed(1)} MiB`).join(', ')}`,
    `peak RSS: ${r.peakRssMiB.toFixed(0)} MiB`,
    `kept for backward: measured above; the minimum is ${(r.minimumBytesPerToken / 1024).toFixed(1)} KiB/token`
      + ` (k pre-activations of d_ff floats + the input row; the activation, permuted rows and expert outputs can be recomputed)`,
  ].join('\n');
}
