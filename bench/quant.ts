// Quantised products on the native backend: Q8_0 and Q4_0 matrix-vector (decode) and T = 32
// (prefill-like) against the float32 matmul of the same shape, as ms, GFLOP/s and GB/s of weight
// bytes read. Run: node dist/bench/quant.js [--json] [--size N]

import { Rng, Tensor, ops, withBackend } from '../src/index.js';
import { nativeQuantSimd } from '../src/backends/native/index.js';
import { quantize, quantMatmul, type QuantType } from '../src/infer/quant/index.js';
import { formatTable, measure } from './timing.js';

export interface QuantBenchRow {
  kind: 'f32' | QuantType;
  t: number;
  ms: number;
  gflops: number;
  weightGBs: number;
}

export function benchQuant(size = 4096): { simd: string | null; size: number; rows: QuantBenchRow[] } {
  const rng = new Rng(1);
  const w = new Float32Array(size * size);
  for (let i = 0; i < w.length; i++) w[i] = rng.normal() * 0.02;
  const rows: QuantBenchRow[] = [];
  withBackend('native', () => {
    const wt = new Tensor(w, [size, size]);
    const weights = { q8_0: quantize(w, [size, size], 'q8_0'), q4_0: quantize(w, [size, size], 'q4_0') };
    for (const t of [1, 32]) {
      const x = new Float32Array(t * size);
      for (let i = 0; i < x.length; i++) x[i] = rng.normal();
      const xt = new Tensor(x, [t, size]);
      const flops = 2 * t * size * size;
      const add = (kind: QuantBenchRow['kind'], bytes: number, fn: () => void): void => {
        const m = measure(fn, { budgetMs: 800, minRuns: 10 });
        rows.push({ kind, t, ms: m.medianMs, gflops: flops / (m.medianMs * 1e6), weightGBs: bytes / (m.medianMs * 1e6) });
      };
      add('f32', w.byteLength, () => ops.matmul(xt, wt, { transB: true }));
      for (const k of ['q8_0', 'q4_0'] as const) add(k, weights[k].bytes, () => quantMatmul(xt, weights[k]));
    }
  });
  return { simd: nativeQuantSimd(), size, rows };
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/').split('/').pop()!);
if (isMain) {
  const sizeArg = process.argv.indexOf('--size');
  const r = benchQuant(sizeArg > 0 ? Number(process.argv[sizeArg + 1]) : 4096);
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(r));
  } else {
    console.log(`native quantised products, ${r.size} x ${r.size} weights, block dots: ${r.simd}`);
    console.log(formatTable(['weights', 'T', 'ms (median)', 'GFLOP/s', 'GB/s of weights'],
      r.rows.map((x) => [x.kind, String(x.t), x.ms.toFixed(3), x.gflops.toFixed(1), x.weightGBs.toFixed(1)])));
  }
}
