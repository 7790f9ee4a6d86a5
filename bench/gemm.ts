// `moe bench gemm`: GFLOP/s of each backend's matmul (square sizes) and grouped matmul (the expert
// GEMM), next to the machine's float32 FMA peak measured in the same run.

import { availableBackends, withBackend, Rng, Tensor, ops } from '../src/index.js';
import { measurePeakGflops, nativeInfo } from '../src/backends/native/index.js';
import { measure, formatTable } from './timing.js';

export interface GemmResult {
  backend: 'native' | 'js';
  name: string;
  gflops: number;
  ms: number;
  runs: number;
}

export interface GemmReport {
  peakGflops: number | null;
  blas: string | null;
  results: GemmResult[];
}

export interface GemmOptions {
  backends?: string[];
  /** Square sizes for the js backend (it needs ~15 s for 2048^3). */
  jsSizes?: number[];
  log?: (line: string) => void;
}

const SIZES = [256, 512, 1024, 2048];
/** The grouped case: 8 experts, each [512 x 512] rows @ [512 x 2048]. */
const GROUPS = 8;
const GROUP_ROWS = 512;
const GK = 512;
const GN = 2048;

function rand(rng: Rng, shape: number[]): Tensor {
  const t = Tensor.empty(shape);
  rng.fillUniform(t.data as Float32Array, -1, 1);
  return t;
}

export function benchGemm(opts: GemmOptions = {}): GemmReport {
  const log = opts.log ?? (() => {});
  const backends = (opts.backends ?? availableBackends()).filter((b) => b === 'native' || b === 'js') as Array<'native' | 'js'>;
  const rng = new Rng(0);
  const info = nativeInfo();
  let peakGflops: number | null = null;
  if (info) {
    // a ceiling: the best of several short trials (a busy neighbour only ever lowers a trial)
    const peak = Math.max(...Array.from({ length: 5 }, () => measurePeakGflops(0.3, info.threads)));
    peakGflops = peak;
    log(`measured float32 FMA peak: ${peak.toFixed(1)} GFLOP/s (${info.threads} threads, best of 5 trials)`);
  } else {
    log('native backend not built: no FMA peak measured');
  }
  const results: GemmResult[] = [];
  const push = (backend: 'native' | 'js', name: string, flops: number, fn: () => void): void => {
    const t = measure(fn, { budgetMs: backend === 'js' ? 3000 : 1500, minRuns: backend === 'js' ? 1 : 5 });
    const gflops = flops / (t.medianMs * 1e6);
    results.push({ backend, name, gflops, ms: t.medianMs, runs: t.runs });
    log(`${backend.padEnd(6)} ${name.padEnd(22)} ${gflops.toFixed(1).padStart(7)} GFLOP/s  (median of ${t.runs}, ${t.medianMs.toFixed(2)} ms)`);
  };
  for (const backend of backends) {
    withBackend(backend, () => {
      const squares = backend === 'js' ? (opts.jsSizes ?? SIZES) : SIZES;
      for (const n of squares) {
        const a = rand(rng, [n, n]);
        const b = rand(rng, [n, n]);
        push(backend, `square-${n}`, 2 * n * n * n, () => { ops.matmul(a, b); });
      }
      const x = rand(rng, [GROUPS * GROUP_ROWS, GK]);
      const w = rand(rng, [GROUPS, GK, GN]);
      const sizes = new Int32Array(GROUPS).fill(GROUP_ROWS);
      const flops = 2 * GROUPS * GROUP_ROWS * GK * GN;
      push(backend, `grouped-${GROUPS}x${GROUP_ROWS}x${GK}x${GN}`, flops, () => { ops.groupedMatmul(x, w, sizes); });
      // the same total work as one plain GEMM: the baseline for the grouped GEMM's efficiency
      const w0 = rand(rng, [GK, GN]);
      push(backend, `plain-${GROUPS * GROUP_ROWS}x${GK}x${GN}`, flops, () => { ops.matmul(x, w0); });
    });
  }
  return { peakGflops, blas: info ? info.blas : null, results };
}

export function formatGemmReport(r: GemmReport): string {
  const rows = r.results.map((x) => [
    x.backend, x.name, x.gflops.toFixed(1), r.peakGflops ? `${((100 * x.gflops) / r.peakGflops).toFixed(1)}%` : 'n/a', x.ms.toFixed(2), String(x.runs),
  ]);
  const lines = [
    formatTable(['backend', 'case', 'GFLOP/s', '% of peak', 'median ms', 'runs'], rows),
    '',
    `measured FMA peak: ${r.peakGflops ? `${r.peakGflops.toFixed(1)} GFLOP/s` : 'not measured (native backend not built)'}; BLAS: ${r.blas ?? 'none'}`,
  ];
  for (const backend of ['native', 'js']) {
    const g = r.results.find((x) => x.backend === backend && x.name.startsWith('grouped'));
    const p = r.results.find((x) => x.backend === backend && x.name.startsWith('plain'));
    if (g && p) lines.push(`${backend}: grouped GEMM at ${((100 * g.gflops) / p.gflops).toFixed(1)}% of a plain GEMM of the same total work`);
  }
  return lines.join('\n');
}
