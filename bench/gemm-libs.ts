// GEMM libraries side by side (oneDNN, OpenBLAS; the portable GEMM on request) per shape class: the
// square sizes and the MoE layer's products, forward and backward, interleaved so that a noisy
// neighbour hits every library alike. Run: node dist/bench/gemm-libs.js [--json] [--with-fallback] | [--mixed] | [--epilogue]

import { Rng } from '../src/index.js';
import { findBackend } from '../src/kernels/registry.js';
import { EPILOGUE_ACT, nativeGemmEpilogue, nativeGemmLibraries, nativeGemmWith, nativeInfo, type GemmLibrary } from '../src/backends/native/index.js';
import { formatTable, median } from './timing.js';

export interface GemmShape {
  /** The shape class, as chooseLibrary (gemm.cc) names it. */
  cls: string;
  name: string;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
}

// The MoE layer bench's sizes: T = 4096 tokens, d = 512, d_ff = 2048; E = 8 top-2 gives ~1024 rows
// per expert, E = 128 top-2 ~64. Backward: dX = dY W^T (transB), dW = X^T dY (transA).
export const SHAPES: GemmShape[] = [
  ...[256, 512, 1024, 2048].map((s) => ({ cls: 'square', name: `square-${s}`, m: s, n: s, k: s, transA: false, transB: false })),
  { cls: 'nn', name: 'up 4096x512 @ 512x2048', m: 4096, n: 2048, k: 512, transA: false, transB: false },
  { cls: 'nn', name: 'down 4096x2048 @ 2048x512', m: 4096, n: 512, k: 2048, transA: false, transB: false },
  { cls: 'nn', name: 'up E8 1024x512 @ 512x2048', m: 1024, n: 2048, k: 512, transA: false, transB: false },
  { cls: 'nn-few-rows', name: 'up E128 64x512 @ 512x2048', m: 64, n: 2048, k: 512, transA: false, transB: false },
  { cls: 'nn-few-rows', name: 'down E128 64x2048 @ 2048x512', m: 64, n: 512, k: 2048, transA: false, transB: false },
  { cls: 'nt', name: 'dX up 4096x2048 @ (512x2048)^T', m: 4096, n: 512, k: 2048, transA: false, transB: true },
  { cls: 'nt', name: 'dX down 4096x512 @ (2048x512)^T', m: 4096, n: 2048, k: 512, transA: false, transB: true },
  { cls: 'tn', name: 'dW up (4096x512)^T @ 4096x2048', m: 512, n: 2048, k: 4096, transA: true, transB: false },
  { cls: 'tn', name: 'dW E8 (1024x512)^T @ 1024x2048', m: 512, n: 2048, k: 1024, transA: true, transB: false },
  { cls: 'tn-short-k', name: 'dW E128 (64x512)^T @ 64x2048', m: 512, n: 2048, k: 64, transA: true, transB: false },
];

export interface LibResult {
  shape: GemmShape;
  /** GFLOP/s per library, from the median time over the interleaved rounds. */
  gflops: Partial<Record<GemmLibrary, number>>;
  medianMs: Partial<Record<GemmLibrary, number>>;
  rounds: number;
}

/** Timed calls per library per round, after one untimed call. */
const BLOCK = 3;

/** Each shape: one warm-up call per library, then rounds of a block of calls per library in turn, until the budget. */
export function benchGemmLibs(opts: { libraries?: GemmLibrary[]; budgetMs?: number; minRounds?: number; log?: (l: string) => void } = {}): LibResult[] {
  const gemm = nativeGemmWith();
  if (!gemm) throw new Error('bench gemm-libs: the native addon is not built');
  const libs = opts.libraries ?? nativeGemmLibraries().filter((l) => l !== 'fallback');
  const budget = opts.budgetMs ?? 1500;
  const minRounds = opts.minRounds ?? 5;
  const rng = new Rng(1);
  const results: LibResult[] = [];
  for (const shape of SHAPES) {
    const { m, n, k, transA, transB } = shape;
    const a = new Float32Array(m * k);
    const b = new Float32Array(k * n);
    rng.fillUniform(a, -1, 1);
    rng.fillUniform(b, -1, 1);
    const out = new Float32Array(m * n);
    const times = new Map<GemmLibrary, number[]>(libs.map((l) => [l, []]));
    for (const l of libs) gemm(l, a, b, out, m, n, k, transA, transB, false);
    const start = performance.now();
    let rounds = 0;
    while (rounds < minRounds || (performance.now() - start < budget && rounds < 100)) {
      // Each library in turn (the order rotating) runs a block of calls; the first of a block is not
      // timed: it pays for the hand-off from the other library's threads (OpenMP's and OpenBLAS's
      // workers spin a while after a call), which a product does not see among its own class's.
      for (let i = 0; i < libs.length; i++) {
        const l = libs[(i + rounds) % libs.length]!;
        gemm(l, a, b, out, m, n, k, transA, transB, false);
        for (let j = 0; j < BLOCK; j++) {
          const t0 = performance.now();
          gemm(l, a, b, out, m, n, k, transA, transB, false);
          times.get(l)!.push(performance.now() - t0);
        }
      }
      rounds++;
    }
    const r: LibResult = { shape, gflops: {}, medianMs: {}, rounds };
    for (const l of libs) {
      const ms = median(times.get(l)!);
      r.medianMs[l] = ms;
      r.gflops[l] = (2 * m * n * k) / (ms * 1e6);
    }
    results.push(r);
    opts.log?.(`${shape.name.padEnd(34)} ${libs.map((l) => `${l} ${r.gflops[l]!.toFixed(1)}`).join('  ')} GFLOP/s (${rounds} rounds)`);
  }
  return results;
}

export function formatGemmLibs(results: LibResult[], libs: GemmLibrary[]): string {
  const rows = results.map((r) => [
    r.shape.cls, r.shape.name, ...libs.map((l) => r.gflops[l]!.toFixed(1)),
    libs.includes('onednn') && libs.includes('openblas') ? `${(r.gflops.onednn! / r.gflops.openblas!).toFixed(2)}x` : '',
    String(r.rounds),
  ]);
  return formatTable(['class', 'shape (m x k @ k x n)', ...libs.map((l) => `${l} GFLOP/s`), 'oneDNN/OpenBLAS', 'rounds'], rows);
}

/**
 * The cost of mixing libraries by shape: rounds of four 256^3 products then one 1024^3 one, each pair
 * of libraries (small, large) in turn, 7 interleaved rounds of 5; median ms of a round per pairing.
 */
export function benchMixed(libs: GemmLibrary[]): Array<{ small: GemmLibrary; large: GemmLibrary; medianMs: number }> {
  const gemm = nativeGemmWith();
  if (!gemm) throw new Error('bench gemm-libs: the native addon is not built');
  const rng = new Rng(2);
  const mk = (n: number): Float32Array => { const x = new Float32Array(n); rng.fillUniform(x, -1, 1); return x; };
  const S = 256, L = 1024;
  const a = mk(S * S), c = new Float32Array(S * S), A = mk(L * L), C = new Float32Array(L * L);
  const pairs = libs.flatMap((small) => libs.map((large) => ({ small, large, times: [] as number[] })));
  for (let r = 0; r < 7; r++) {
    for (const p of pairs) {
      const t0 = performance.now();
      for (let i = 0; i < 5; i++) {
        for (let j = 0; j < 4; j++) gemm(p.small, a, a, c, S, S, S, false, false, false);
        gemm(p.large, A, A, C, L, L, L, false, false, false);
      }
      p.times.push(performance.now() - t0);
    }
  }
  return pairs.map((p) => ({ small: p.small, large: p.large, medianMs: median(p.times) }));
}

/**
 * The MoE layer's first expert GEMM with its bias + GELU, [4096 x 512] @ [512 x 2048]: fused in oneDNN's
 * post-ops against the path the layer runs today (the GEMM on the library the CPU class or MOE_GEMM
 * picks, then the native backend's broadcast add and vectorised GELU kernels), and the GEMM alone;
 * interleaved rounds, median ms each.
 */
export function benchEpilogue(rounds = 7): { fusedMs: number | null; unfusedMs: number; gemmOnlyMs: number } {
  const epi = nativeGemmEpilogue();
  const gemm = nativeGemmWith();
  const kernels = findBackend('native')?.kernels;
  if (!epi || !gemm || !kernels) throw new Error('bench gemm-libs: the native addon is not built');
  const fusedOk = nativeGemmLibraries().includes('onednn');
  const lib = nativeInfo()!.gemm;
  const rng = new Rng(3);
  const m = 4096, k = 512, n = 2048;
  const a = new Float32Array(m * k), b = new Float32Array(k * n), bias = new Float32Array(n), out = new Float32Array(m * n);
  const withBias = new Float32Array(m * n), act = new Float32Array(m * n);
  rng.fillUniform(a, -1, 1);
  rng.fillUniform(b, -1, 1);
  rng.fillUniform(bias, -1, 1);
  const fused: number[] = [], unfused: number[] = [], plain: number[] = [];
  const time = (xs: number[], fn: () => void): void => { fn(); const t0 = performance.now(); fn(); xs.push(performance.now() - t0); };
  for (let r = 0; r < rounds; r++) {
    if (fusedOk) time(fused, () => epi(true, a, b, bias, EPILOGUE_ACT.gelu, null, null, out, m, n, k, false));
    time(unfused, () => {
      gemm(lib, a, b, out, m, n, k, false, false, false);
      kernels.binary!('add', out, [m, n], bias, [n], withBias, [m, n]);
      kernels.unary!('gelu', withBias, act);
    });
    time(plain, () => gemm(lib, a, b, out, m, n, k, false, false, false));
  }
  return { fusedMs: fusedOk ? median(fused) : null, unfusedMs: median(unfused), gemmOnlyMs: median(plain) };
}

if (import.meta.url === `file://${process.argv[1]}` && process.argv.includes('--epilogue')) {
  const r = benchEpilogue();
  console.log(`GELU + bias on [4096x512]@[512x2048], GEMMs on ${nativeInfo()!.gemm}: fused (oneDNN post-ops) ${r.fusedMs?.toFixed(1) ?? 'n/a'} ms, ` +
    `GEMM + add + gelu kernels ${r.unfusedMs.toFixed(1)} ms, the GEMM alone ${r.gemmOnlyMs.toFixed(1)} ms (medians of 7 interleaved)`);
} else if (import.meta.url === `file://${process.argv[1]}` && process.argv.includes('--mixed')) {
  for (const r of benchMixed(nativeGemmLibraries().filter((l) => l !== 'fallback'))) {
    console.log(`256^3 x4 on ${r.small.padEnd(8)} + 1024^3 on ${r.large.padEnd(8)} x5: ${r.medianMs.toFixed(1)} ms (median of 7)`);
  }
} else if (import.meta.url === `file://${process.argv[1]}`) {
  const json = process.argv.includes('--json');
  const libs = nativeGemmLibraries().filter((l) => l !== 'fallback' || process.argv.includes('--with-fallback'));
  const info = nativeInfo();
  const results = benchGemmLibs({ libraries: libs, ...(json ? {} : { log: (l: string) => console.log(l) }) });
  if (json) console.log(JSON.stringify({ info, results }));
  else {
    console.log(`\noneDNN ${info?.onednn ? `${info.onednn.version} (${info.onednn.isa}, ${info.onednn.impl}, ${info.onednn.threading} ${info.onednn.threads} threads)` : 'not built'}; ${info?.blasConfig ?? ''}`);
    console.log(formatGemmLibs(results, libs));
  }
}
