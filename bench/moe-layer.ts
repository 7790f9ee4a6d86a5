// `moe bench moe-layer`: tokens per second of the MoE layer forward and forward+backward, the share
// of time in GEMM kernels, flatness as E grows at fixed active parameters, peak memory and the
// bytes the autograd graph keeps per token for backward.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng, Tensor, noGrad, ops, moe, profileKernels, getBackend, kernel, savedForBackward, type KernelProfile, type SavedEntry } from '../src/index.js';
import { measurePeakGflops, nativeInfo } from '../src/backends/native/index.js';
import { measure, median, formatTable } from './timing.js';

const PYTHON = '/usr/bin/python3';

/** reference/moe_layer_bench.py, found from dist/bench or bench/. */
function torchScript(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const p = join(dir, 'reference', 'moe_layer_bench.py');
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  return null;
}

/** Why PyTorch cannot be compared here, or null when it can. */
export function torchUnavailable(): string | null {
  if (!existsSync(PYTHON)) return `${PYTHON} not found`;
  if (!torchScript()) return 'reference/moe_layer_bench.py not found';
  const r = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  return r.status === 0 ? null : `torch is not importable by ${PYTHON} (apt-get install python3-torch)`;
}

interface TorchRun { forwardTokensPerSec: number; forwardBackwardTokensPerSec: number; peakRssMiB: number; threads: number; torch: string }

/**
 * The environment the PyTorch reference runs in, at its best here: the same threads as the native
 * pool (MOE_NATIVE_THREADS, else the cores); OPENBLAS_CORETYPE=SkylakeX on AVX-512 CPUs (the
 * environment's Haswell holds OpenBLAS to AVX2) unless MOE_TORCH_OPENBLAS_CORETYPE names one; and
 * GOMP_SPINCOUNT=10000 unless the user set it or OMP_WAIT_POLICY: torch's OpenMP workers otherwise
 * spin ~3 ms after each op on the cores its OpenBLAS threads need (E = 8 on 2 AVX-512 cores, two
 * interleaved pairs of runs: forward 12828 / 14994 tokens/s by default against 24684 / 35493,
 * forward+backward 4995 / 5730 against 9328 / 10039). Loading the native addon sets the same
 * GOMP_SPINCOUNT in this process when both are unset, so torch and oneDNN spin alike. Returns the
 * variables it sets on top of env.
 */
export function torchEnv(threads: number, env: NodeJS.ProcessEnv = process.env, avx512 = /\bavx512f\b/.test(readFileSync('/proc/cpuinfo', 'utf8'))): Record<string, string> {
  const set: Record<string, string> = { OMP_NUM_THREADS: String(threads) };
  const coretype = env['MOE_TORCH_OPENBLAS_CORETYPE'];
  if (coretype) set['OPENBLAS_CORETYPE'] = coretype;
  else if (avx512 && coretype === undefined) set['OPENBLAS_CORETYPE'] = 'SkylakeX';
  if (env['OMP_WAIT_POLICY'] === undefined && env['GOMP_SPINCOUNT'] === undefined) set['GOMP_SPINCOUNT'] = '10000';
  else if (env['GOMP_SPINCOUNT'] !== undefined) set['GOMP_SPINCOUNT'] = env['GOMP_SPINCOUNT'];
  return set;
}

/** The native pool's threads (MOE_NATIVE_THREADS, else the cores): torch runs with as many. */
function torchThreads(): number {
  return Number(process.env['MOE_NATIVE_THREADS'] || cpus().length);
}

/** One run of the PyTorch reference layer in a child process, in torchEnv's environment. */
function torchRun(E: number, T: number, budgetS: number): TorchRun {
  const threads = torchThreads();
  const env: NodeJS.ProcessEnv = { ...process.env, ...torchEnv(threads) };
  const r = spawnSync(PYTHON, [torchScript()!, '--experts', String(E), '--tokens', String(T), '--threads', String(threads), '--budget', String(budgetS)], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`bench moe-layer --compare-torch: the PyTorch reference failed (exit ${r.status}): ${r.stderr.slice(-500)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TorchRun;
}

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
  /**
   * GFLOP/s of the expert GEMM kernels inside the layer (the profiled forward+backward: grouped
   * products with their epilogues, and weight gradients), and of one plain [T k, d] x [d, d_ff]
   * product of the same work measured right after (reused buffers); their ratio is what grouping
   * and the layer around it cost the GEMMs.
   */
  inLayerGemmGflops: number;
  plainGemmGflops: number;
  /** Time per kernel in one profiled forward+backward (ms). */
  kernels: KernelProfile;
  /** Bytes the autograd graph keeps for backward after forward, per token (parameters and input excluded). */
  keptBytesPerToken: number;
  /** The largest kept buffers: op and shape. */
  kept: SavedEntry[];
  /** With compareTorch: PyTorch's reference layer, medians of the rounds interleaved with moe-ts's. */
  torchForwardTokensPerSec?: number;
  torchForwardBackwardTokensPerSec?: number;
  torchPeakRssMiB?: number;
  /**
   * The process's peak RSS once this case finished (a high-water mark over the cases so far: for
   * the first case, E = 8 by default, its own peak, to set next to torchPeakRssMiB).
   */
  peakRssAfterMiB: number;
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
  /** With compareTorch, the first case's PyTorch numbers (as forwardTokensPerSec is the first case's). */
  torchForwardTokensPerSec?: number;
  torchForwardBackwardTokensPerSec?: number;
  /** Rounds per case (moe-ts and PyTorch alternate, the order flipping every round). */
  rounds: number;
  /** With compareTorch: the variables the PyTorch reference ran with on top of this process's (torchEnv). */
  torchEnv?: Record<string, string>;
  /** Why PyTorch was not compared although asked, or null. */
  torchSkipped: string | null;
  /** The float32 FMA peak measured before the cases (native backend; null on js). */
  peakGflops: number | null;
  /**
   * Multiply-adds x 2 of the expert GEMMs per forward (2 T k d d_ff x 2 projections); backward does
   * twice as many (input and weight gradients). The router's [T, d] x [d, E] is left out (< 1%).
   */
  expertForwardFlops: number;
}

export function benchMoELayer(opts: { tokens?: number; experts?: number[]; compareTorch?: boolean; rounds?: number; log?: (l: string) => void } = {}): MoELayerReport {
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
  // the FMA peak, for the floor that expert GEMMs at 100% of it would set (and so the best ratio to torch)
  const native = nativeInfo();
  const peak = getBackend().name === 'native' && native ? Math.max(...Array.from({ length: 5 }, () => measurePeakGflops(0.3, native.threads))) : 0;
  if (peak > 0) log(`measured float32 FMA peak: ${peak.toFixed(1)} GFLOP/s (${native!.threads} threads, best of 5 trials)`);
  const torchSkipped = opts.compareTorch ? torchUnavailable() : null;
  if (torchSkipped) log(`bench moe-layer: PyTorch not compared: ${torchSkipped}`);
  const withTorch = opts.compareTorch === true && torchSkipped === null;
  const rounds = opts.rounds ?? (withTorch ? 3 : 1);
  if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error(`bench moe-layer: rounds must be a positive integer, got ${rounds}`);
  for (const E of opts.experts ?? [8, 32, 128]) {
    const layer = new moe.MoELayer({ dModel: d, dFF, numExperts: E, router: { type: 'topk', k }, activation: 'gelu', seed: 1 });
    // rounds of (moe-ts, PyTorch), the order flipping every round so drift hits both alike
    const fwdMs: number[] = [], fbMs: number[] = [], torch: TorchRun[] = [];
    const budget = withTorch ? 2000 : 3000;
    const moeRound = (): void => {
      fwdMs.push(measure(() => { noGrad(() => layer.forward(x)); }, { budgetMs: budget, minRuns: 5 }).medianMs);
      fbMs.push(measure(() => {
        const xr = x.detach().requireGrad();
        const out = layer.forward(xr);
        ops.add(ops.sum(ops.mul(out.y, g)), out.auxLoss).backward();
        layer.zeroGrad();
      }, { budgetMs: (budget * 4) / 3, minRuns: 5 }).medianMs);
    };
    for (let r = 0; r < rounds; r++) {
      if (withTorch && r % 2 === 1) torch.push(torchRun(E, T, budget / 1000));
      moeRound();
      if (withTorch && r % 2 === 0) torch.push(torchRun(E, T, budget / 1000));
      if (withTorch) {
        const t = torch.at(-1)!;
        log(`E=${E} round ${r}: moe-ts ${(T / (fwdMs.at(-1)! / 1000)).toFixed(0)} / ${(T / (fbMs.at(-1)! / 1000)).toFixed(0)}, ` +
          `torch ${t.forwardTokensPerSec.toFixed(0)} / ${t.forwardBackwardTokensPerSec.toFixed(0)} tok/s (forward / forward+backward)`);
      }
    }
    const fwd = { medianMs: median(fwdMs) };
    const fb = { medianMs: median(fbMs) };
    const { profile } = profileKernels(() => {
      const out = layer.forward(x.detach().requireGrad());
      ops.add(ops.sum(ops.mul(out.y, g)), out.auxLoss).backward();
      layer.zeroGrad();
    });
    const total = Object.values(profile).reduce((s, p) => s + p.ms, 0);
    const ms = (name: string): number => profile[name]?.ms ?? 0;
    const grouped = ms('groupedMatmul') + ms('groupedMatmulEpilogue') + ms('groupedMatmulWeightGrad');
    const gemm = ms('matmul') + grouped;
    // the expert GEMMs' work: the forward's two products, backward's input and weight gradients
    const expertFlops = 3 * 4 * T * k * d * dFF;
    const plainGemmGflops = plainGemmSpeed(T * k, d, dFF, rng);
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
      peakRssAfterMiB: process.resourceUsage().maxRSS / 1024,
      inLayerGemmGflops: expertFlops / (grouped * 1e6),
      plainGemmGflops,
      groupedGemmShare: grouped / total,
      kernels: profile,
      keptBytesPerToken: kept.bytes / T,
      kept: kept.entries.sort((a, b) => b.bytes - a.bytes).slice(0, 8),
      ...(withTorch ? {
        torchForwardTokensPerSec: median(torch.map((t) => t.forwardTokensPerSec)),
        torchForwardBackwardTokensPerSec: median(torch.map((t) => t.forwardBackwardTokensPerSec)),
        torchPeakRssMiB: Math.max(...torch.map((t) => t.peakRssMiB)),
      } : {}),
    };
    cases.push(c);
    log(`E=${E}: forward ${c.forwardTokensPerSec.toFixed(0)} tok/s, forward+backward ${c.forwardBackwardTokensPerSec.toFixed(0)} tok/s, GEMM ${(100 * c.gemmShare).toFixed(0)}% of kernel time, kept ${(c.keptBytesPerToken / 1024).toFixed(1)} KiB/token`);
    log(`E=${E}: expert GEMMs in the layer ${c.inLayerGemmGflops.toFixed(1)} GFLOP/s, a plain product of the same work ${c.plainGemmGflops.toFixed(1)} (ratio ${(c.inLayerGemmGflops / c.plainGemmGflops).toFixed(2)})`);
  }
  const first = cases[0]!;
  // backward needs, per token: k hidden pre-activations (k*dFF floats, to differentiate and to
  // recompute the activation) and the layer input (d floats); rows and outputs can be re-gathered
  const minimumBytesPerToken = 4 * (k * dFF + d);
  return {
    backend: getBackend().name, tokens: T, dModel: d, dFF, k,
    forwardTokensPerSec: first.forwardTokensPerSec, forwardBackwardTokensPerSec: first.forwardBackwardTokensPerSec,
    peakRssMiB: process.resourceUsage().maxRSS / 1024, minimumBytesPerToken, cases, rounds, torchSkipped,
    peakGflops: peak > 0 ? peak : null, expertForwardFlops: 4 * T * k * d * dFF,
    ...(withTorch ? {
      torchForwardTokensPerSec: first.torchForwardTokensPerSec!, torchForwardBackwardTokensPerSec: first.torchForwardBackwardTokensPerSec!,
      torchEnv: torchEnv(torchThreads()),
    } : {}),
  };
}

/** GFLOP/s of one plain [m, kk] x [kk, n] product through the matmul kernel into a reused output (median of 5 after one). */
function plainGemmSpeed(m: number, kk: number, n: number, rng: Rng): number {
  const a = new Float32Array(m * kk);
  const b = new Float32Array(kk * n);
  rng.fillNormal(a);
  rng.fillNormal(b);
  const out = new Float32Array(m * n);
  const mm = kernel('matmul');
  const r = measure(() => mm(a, b, out, 1, m, n, kk, false, false, false, false, false), { budgetMs: 500, minRuns: 5 });
  return (2 * m * kk * n) / (r.medianMs * 1e6);
}

export function formatMoELayerReport(r: MoELayerReport): string {
  const torch = r.cases.some((c) => c.torchForwardTokensPerSec !== undefined);
  const rows = r.cases.map((c) => [
    String(c.numExperts), c.forwardTokensPerSec.toFixed(0), c.forwardBackwardTokensPerSec.toFixed(0), c.forwardMs.toFixed(1),
    c.forwardBackwardMs.toFixed(1), `${(100 * c.gemmShare).toFixed(1)}%`, `${(c.keptBytesPerToken / 1024).toFixed(1)}`,
    ...(torch ? [
      (c.torchForwardTokensPerSec ?? 0).toFixed(0), (c.torchForwardBackwardTokensPerSec ?? 0).toFixed(0),
      `${(c.forwardTokensPerSec / c.torchForwardTokensPerSec!).toFixed(2)}x`, `${(c.forwardBackwardTokensPerSec / c.torchForwardBackwardTokensPerSec!).toFixed(2)}x`,
    ] : []),
  ]);
  const top = Object.entries(r.cases[0]!.kernels).sort((a, b) => b[1].ms - a[1].ms).slice(0, 8)
    .map(([n, p]) => `${n} ${p.ms.toFixed(1)} ms (${p.calls})`).join(', ');
  return [
    `MoE layer, backend ${r.backend}: T=${r.tokens}, d=${r.dModel}, d_ff=${r.dFF}, top-${r.k} softmax, GELU experts, float32`,
    formatTable(['E', 'fwd tok/s', 'fwd+bwd tok/s', 'fwd ms', 'fwd+bwd ms', 'GEMM share', 'kept KiB/tok',
      ...(torch ? ['torch fwd', 'torch fwd+bwd', 'fwd vs torch', 'fwd+bwd vs torch'] : [])], rows),
    ...(torch ? [`PyTorch: reference/moe_layer_bench.py (${Object.entries(r.torchEnv ?? {}).map(([k, v]) => `${k}=${v}`).join(' ')}), medians of ${r.rounds} rounds interleaved with moe-ts's; peak RSS ${r.cases.map((c) => `E=${c.numExperts} ${c.torchPeakRssMiB!.toFixed(0)} MiB`).join(', ')}`] : []),
    ...(r.torchSkipped ? [`PyTorch not compared: ${r.torchSkipped}`] : []),
    '',
    `kernels at E=${r.cases[0]!.numExperts} (one forward+backward): ${top}`,
    `largest buffers kept for backward at E=${r.cases[0]!.numExperts}: ${r.cases[0]!.kept.map((e) => `${e.op} [${e.shape.join('x')}] ${(e.bytes / 2 ** 20).toFixed(1)} MiB`).join(', ')}`,
    `expert GEMMs inside the layer against a plain product of the same work (same run): ${r.cases.map((c) => `E=${c.numExperts} ${c.inLayerGemmGflops.toFixed(0)} / ${c.plainGemmGflops.toFixed(0)} GFLOP/s (${(c.inLayerGemmGflops / c.plainGemmGflops).toFixed(2)})`).join(', ')}`,
    ...floorLines(r),
    `peak RSS: ${r.peakRssMiB.toFixed(0)} MiB (whole bench); after each case (high-water mark so far): ${r.cases.map((c) => `E=${c.numExperts} ${c.peakRssAfterMiB.toFixed(0)} MiB`).join(', ')}`
      + (torch ? `; torch's process per case: ${r.cases.map((c) => `E=${c.numExperts} ${(c.torchPeakRssMiB ?? 0).toFixed(0)} MiB`).join(', ')}` : ''),
    `kept for backward: measured above; the minimum is ${(r.minimumBytesPerToken / 1024).toFixed(1)} KiB/token`
      + ` (k pre-activations of d_ff floats + the input row; the activation, permuted rows and expert outputs can be recomputed)`,
  ].join('\n');
}

/**
 * The floor: expert GEMMs at 100% of the measured FMA peak and nothing else. Against torch it bounds
 * the ratio moe-ts could reach (torch ms / floor ms) on this machine, whatever its kernels do.
 */
function floorLines(r: MoELayerReport): string[] {
  if (!r.peakGflops) return [];
  const fwdMs = (r.expertForwardFlops / (r.peakGflops * 1e9)) * 1000;
  return [
    `floor at the measured peak (${r.peakGflops.toFixed(1)} GFLOP/s): expert GEMMs ${(r.expertForwardFlops / 1e9).toFixed(1)} GFLOP forward, `
      + `${((3 * r.expertForwardFlops) / 1e9).toFixed(1)} forward+backward = ${fwdMs.toFixed(1)} / ${(3 * fwdMs).toFixed(1)} ms (the same at every E: active parameters are fixed)`,
    ...r.cases.map((c) => {
      const share = `E=${c.numExperts}: measured ${(fwdMs / c.forwardMs * 100).toFixed(0)}% / ${((3 * fwdMs) / c.forwardBackwardMs * 100).toFixed(0)}% of the floor's speed`;
      if (c.torchForwardTokensPerSec === undefined) return share;
      const torchFwdMs = (r.tokens / c.torchForwardTokensPerSec) * 1000;
      const torchFbMs = (r.tokens / c.torchForwardBackwardTokensPerSec!) * 1000;
      return `${share}; at the floor moe-ts would be ${(torchFwdMs / fwdMs).toFixed(2)}x / ${(torchFbMs / (3 * fwdMs)).toFixed(2)}x torch (forward / forward+backward)`;
    }),
  ];
}
