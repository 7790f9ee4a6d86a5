// `moe bench elementwise`: GB/s of elementwise and reduction kernels on 4M floats, against a
// memory-copy baseline in the same run (the practical bandwidth ceiling for streaming kernels).

import { availableBackends, withBackend, kernel, Rng, Tensor, ops } from '../src/index.js';
import { measure, formatTable } from './timing.js';

export interface BandwidthResult {
  backend: string;
  name: string;
  gbps: number;
  ms: number;
}

export interface BandwidthReport {
  elements: number;
  copyGbps: number;
  results: BandwidthResult[];
}

export function benchElementwise(opts: { backends?: string[]; elements?: number; log?: (l: string) => void } = {}): BandwidthReport {
  const n = opts.elements ?? 4 * 1024 * 1024;
  const log = opts.log ?? (() => {});
  const rng = new Rng(0);
  const mk = (shape: number[]) => { const t = Tensor.empty(shape); rng.fillUniform(t.data as Float32Array, -2, 2); return t; };
  const a = mk([n]);
  const b = mk([n]);
  const rows = mk([n / 1024, 1024]);
  const bias = mk([1024]);
  // baseline: a plain copy into a preallocated buffer reads n and writes n floats
  const dst = new Float32Array(n);
  // gelu's backward (dx = dy gelu'(x)) into a reused buffer: the kernel, without an autograd graph
  const dx = new Float32Array(n);
  const copy = measure(() => dst.set(a.data as Float32Array), { budgetMs: 500 });
  const copyGbps = (8 * n) / (copy.medianMs * 1e6);
  log(`copy baseline: ${copyGbps.toFixed(1)} GB/s`);
  const results: BandwidthResult[] = [];
  const cases: Array<[string, number, () => void]> = [
    ['add', 12 * n, () => { ops.add(a, b); }],
    ['add-row-broadcast', 8 * n, () => { ops.add(rows, bias); }],
    ['mul', 12 * n, () => { ops.mul(a, b); }],
    ['exp', 8 * n, () => { ops.exp(a); }],
    ['gelu', 8 * n, () => { ops.gelu(a); }],
    ['gelu-backward', 12 * n, () => { kernel('unaryBackward')('gelu', a.data as Float32Array, a.data as Float32Array, b.data as Float32Array, dx); }],
    ['sum-all', 4 * n, () => { ops.sum(a); }],
    ['sum-rows', 4 * n, () => { ops.sum(rows, 1); }],
    ['softmax-rows', 8 * n, () => { ops.softmax(rows); }],
    ['layerNorm-rows', 8 * n, () => { ops.layerNorm(rows); }],
  ];
  for (const backend of opts.backends ?? availableBackends()) {
    withBackend(backend, () => {
      for (const [name, bytes, fn] of cases) {
        const t = measure(fn, { budgetMs: backend === 'js' ? 800 : 500 });
        const gbps = bytes / (t.medianMs * 1e6);
        results.push({ backend, name, gbps, ms: t.medianMs });
        log(`${backend.padEnd(6)} ${name.padEnd(18)} ${gbps.toFixed(1).padStart(6)} GB/s (${t.medianMs.toFixed(2)} ms)`);
      }
    });
  }
  return { elements: n, copyGbps, results };
}

export function formatBandwidthReport(r: BandwidthReport): string {
  return [
    formatTable(['backend', 'kernel', 'GB/s', '% of copy', 'median ms'],
      r.results.map((x) => [x.backend, x.name, x.gbps.toFixed(1), `${((100 * x.gbps) / r.copyGbps).toFixed(0)}%`, x.ms.toFixed(2)])),
    '',
    `${r.elements} float32 elements; copy baseline (TypedArray.set, read + write): ${r.copyGbps.toFixed(1)} GB/s.`,
    'Bytes counted: inputs read + output written (allocation of the output is included in the time,',
    'except for gelu-backward, which reads x and dy and writes into a reused buffer).',
  ].join('\n');
}
