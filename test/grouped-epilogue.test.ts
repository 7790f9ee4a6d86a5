// groupedMatmulEpilogue: the grouped expert GEMM with bias, activation and gate scaling applied per
// group. Native against the js reference for every activation and option, both GEMM paths (one BLAS
// product per group, and the decode path's few-row groups), edge cases and bad input; and the
// expert-MLP op with the epilogue against its separate passes, bit for bit; and the grouped GEMMs'
// two ways of using the threads (whole groups per thread, or each product threaded) against js.

import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, withBackend } from '../src/index.js';
import { findBackend } from '../src/kernels/registry.js';
import type { KernelImpls, UnaryOp } from '../src/kernels/kernels.js';
import { expertMLP, setExpertMLPEpilogue, type ExpertMLPActivation } from '../src/ops/expert-mlp.js';
import { assertClose, backendsUnderTest, randTensor } from './helpers.js';

const native = findBackend('native');
const nativeK = native?.kernels as KernelImpls | undefined;
const jsK = findBackend('js')!.kernels as KernelImpls;
const noNative = native ? false : 'the native backend is not built';

interface Shape { sizes: number[]; k: number; n: number }

const SHAPES: Array<[string, Shape]> = [
  ['groups of 1-40 rows, one empty (a BLAS product per group)', { sizes: [17, 0, 40, 1, 23], k: 19, n: 33 }],
  // the pool's epilogue runs once per >= 512 multiplied rows: a batch of several groups with their own
  // biases (and an empty one), a batch cut short by a group finished in oneDNN's post-ops, the last
  ['984 rows in groups of 5-350 rows, empty ones among them (epilogues batched over groups)', { sizes: [200, 0, 9, 350, 0, 5, 120, 300, 0], k: 24, n: 40 }],
  ['decode: every group <= 16 rows, 2 MiB of weights (the few-row path)', { sizes: [3, 16, 0, 1], k: 256, n: 512 }],
  ['E = 1', { sizes: [29], k: 8, n: 5 }],
  ['k = 0 (the product is zero, the epilogue still runs)', { sizes: [2, 3], k: 0, n: 4 }],
  ['no rows', { sizes: [0, 0, 0], k: 6, n: 7 }],
];

const ACTS: Array<UnaryOp | null> = [null, 'gelu', 'geluTanh', 'relu', 'silu', 'tanh'];

function run(kernels: KernelImpls, s: Shape, act: UnaryOp | null, withBias: boolean, withScale: boolean, keepPre: boolean, transW: boolean, seed: number) {
  const rng = new Rng(seed);
  const t = s.sizes.reduce((a, b) => a + b, 0);
  const G = s.sizes.length;
  const x = randTensor(rng, [t, s.k], 'float32', -2, 2).data as Float32Array;
  const w = randTensor(rng, [G, s.k, s.n]).data as Float32Array;
  const bias = withBias ? randTensor(rng, [G, s.n]).data as Float32Array : null;
  const scale = withScale ? randTensor(rng, [t], 'float32', 0.1, 1).data as Float32Array : null;
  const out = new Float32Array(t * s.n).fill(NaN);
  const pre = keepPre ? new Float32Array(t * s.n).fill(NaN) : null;
  kernels.groupedMatmulEpilogue(x, w, Int32Array.from(s.sizes), out, s.k, s.n, transW, bias, act, scale, pre);
  return { out, pre };
}

for (const [name, s] of SHAPES) {
  test(`groupedMatmulEpilogue matches the js reference: ${name}`, { skip: noNative }, () => {
    let seed = 1;
    for (const act of ACTS) {
      for (const [withBias, withScale, keepPre, transW] of [[false, false, false, false], [true, true, true, false], [true, false, false, true], [false, true, true, true]] as const) {
        const what = `${act ?? 'no activation'}, bias ${withBias}, rowScale ${withScale}, pre ${keepPre}, transW ${transW}`;
        const a = run(nativeK!, s, act, withBias, withScale, keepPre, transW, seed);
        const b = run(jsK, s, act, withBias, withScale, keepPre, transW, seed++);
        // float32 products in another order than the reference's: relative 1e-5 of the sum's size
        const tol = 1e-5 * Math.sqrt(Math.max(1, s.k));
        assertClose(a.out, b.out, tol, tol, `out (${what})`);
        if (keepPre) assertClose(a.pre!, b.pre!, tol, tol, `pre (${what})`);
        assert.ok(a.out.every((v) => !Number.isNaN(v)), `every output element written (${what})`);
      }
    }
  });
}

test('groupedMatmulEpilogue equals groupedMatmul followed by the separate kernels, bit for bit (native)', { skip: noNative }, () => {
  const K = nativeK!;
  for (const [, s] of SHAPES.slice(0, 3)) {
    for (const act of ['gelu', 'silu'] as const) {
      const { out, pre } = run(K, s, act, true, true, true, false, 5);
      // the same inputs through the unfused sequence
      const rng = new Rng(5);
      const t = s.sizes.reduce((a, b) => a + b, 0);
      const x = randTensor(rng, [t, s.k], 'float32', -2, 2).data as Float32Array;
      const w = randTensor(rng, [s.sizes.length, s.k, s.n]).data as Float32Array;
      const bias = randTensor(rng, [s.sizes.length, s.n]).data as Float32Array;
      const scale = randTensor(rng, [t], 'float32', 0.1, 1).data as Float32Array;
      const c = new Float32Array(t * s.n);
      K.groupedMatmul(x, w, Int32Array.from(s.sizes), c, s.k, s.n, false);
      let row = 0;
      s.sizes.forEach((rows, g) => {
        const part = c.subarray(row * s.n, (row + rows) * s.n);
        K.binary('add', part, [rows, s.n], bias.subarray(g * s.n, (g + 1) * s.n), [s.n], part, [rows, s.n]);
        row += rows;
      });
      const a = new Float32Array(t * s.n);
      K.unary(act, c, a);
      K.binary('mul', a, [t, s.n], scale, [t, 1], a, [t, s.n]);
      assert.deepEqual(pre, c, `pre (${act})`);
      assert.deepEqual(out, a, `out (${act})`);
    }
  }
});

test('groupedMatmulEpilogue names what is wrong with bad input', { skip: noNative }, () => {
  const K = nativeK!;
  const x = new Float32Array(6), w = new Float32Array(2 * 3 * 4), out = new Float32Array(8);
  const sizes = Int32Array.from([1, 1]);
  assert.throws(() => K.groupedMatmulEpilogue(x, w, sizes, out, 3, 4, false, null, null, null, out), /pre and out must be different buffers/);
  assert.throws(() => K.groupedMatmulEpilogue(x, w, sizes, out, 3, 4, false, new Float32Array(4), null, null, null), /bias/);
  assert.throws(() => K.groupedMatmulEpilogue(x, w, sizes, out, 3, 4, false, null, null, new Float32Array(1), null), /rowScale/);
  assert.throws(() => K.groupedMatmulEpilogue(x, w, Int32Array.from([3, -1]), out, 3, 4, false, null, null, null, null), /groupSizes\[1\] = -1 is negative/);
  assert.throws(() => K.groupedMatmulEpilogue(x, w, sizes, new Float32Array(7), 3, 4, false, null, null, null, null), /out/);
});

const MLP_ACTS: ExpertMLPActivation[] = ['gelu', 'geluTanh', 'relu', 'silu', 'swiglu'];

for (const backend of backendsUnderTest()) {
  test(`expertMLP with the grouped epilogue equals its separate passes bit for bit, with and without backward (${backend})`, () => {
    withBackend(backend, () => {
      for (const act of MLP_ACTS) {
        for (const bias of [false, true]) {
          const rng = new Rng(11);
          const N = 7, d = 5, h = 6, E = 3;
          const sizes = Int32Array.from([4, 0, 10]);
          const rowIndex = Int32Array.from([0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 4, 5, 6]);
          const rowExpert = Int32Array.from([0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
          const x = randTensor(rng, [N, d], 'float32', -2, 2).requireGrad();
          const ws = {
            w1: randTensor(rng, [E, d, h]).requireGrad(), w2: randTensor(rng, [E, h, d]).requireGrad(),
            w3: act === 'swiglu' ? randTensor(rng, [E, d, h]).requireGrad() : null,
            b1: bias ? randTensor(rng, [E, h]).requireGrad() : null, b2: bias ? randTensor(rng, [E, d]).requireGrad() : null,
          };
          const gates = randTensor(rng, [rowIndex.length], 'float32', 0.1, 1).requireGrad();
          const opts = { rowIndex, gates, rowExpert };
          const g = randTensor(new Rng(2), [N, d]);
          const pass = (epilogue: boolean): { y: Tensor; yNoGrad: Tensor; grads: Float32Array[] } => {
            const prev = setExpertMLPEpilogue(epilogue);
            try {
              const params = [x, ws.w1, ws.w2, ws.w3, ws.b1, ws.b2, gates].filter((t): t is Tensor => t !== null);
              for (const p of params) p.grad = null;
              const y = expertMLP(x, sizes, act, ws, opts);
              y.backward(g);
              const yNoGrad = noGrad(() => expertMLP(x, sizes, act, ws, opts));
              return { y, yNoGrad, grads: params.map((p) => Float32Array.from(p.grad!.data)) };
            } finally {
              setExpertMLPEpilogue(prev);
            }
          };
          const fusedRun = pass(true);
          const plain = pass(false);
          const what = `${act}, bias ${bias}`;
          assert.deepEqual(fusedRun.y.data, plain.y.data, `output (${what})`);
          assert.deepEqual(fusedRun.yNoGrad.data, plain.y.data, `output without backward (${what})`);
          fusedRun.grads.forEach((gr, i) => assert.deepEqual(gr, plain.grads[i], `gradient ${i} (${what})`));
        }
      }
    });
  });
}

const INDEX = new URL('../src/index.js', import.meta.url).href;
const REGISTRY = new URL('../src/kernels/registry.js', import.meta.url).href;
const NATIVE = new URL('../src/backends/native/index.js', import.meta.url).href;

// Every grouped kernel under each split mode, two pool threads, against the js reference: many small
// groups (auto splits them across threads), few large ones (auto keeps one threaded product each),
// empty groups and the few-row decode shapes.
const SPLIT_SCRIPT = `
  await import(${JSON.stringify(INDEX)});
  const { findBackend } = await import(${JSON.stringify(REGISTRY)});
  const { setNativeGroupedSplit, nativeInfo } = await import(${JSON.stringify(NATIVE)});
  const N = findBackend('native').kernels, J = findBackend('js').kernels;
  let seed = 7;
  const r = (n) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) { seed = (seed * 16807) % 2147483647; a[i] = seed / 2147483647 - 0.5; } return a; };
  const shapes = [[[9, 0, 33, 5, 17, 1, 12, 40], 37, 29], [[300, 0, 290], 24, 40], [[2, 3, 0, 1, 4], 300, 1000], [[0, 0], 5, 6]];
  let worst = 0, checked = 0;
  const cmp = (a, b) => { for (let i = 0; i < a.length; i++) { const d = Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i])); if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d; } checked += a.length; };
  for (const mode of ['groups', 'products', 'auto']) {
    setNativeGroupedSplit(mode);
    for (const [sz, k, n] of shapes) {
      const sizes = Int32Array.from(sz), G = sz.length, t = sz.reduce((a, b) => a + b, 0);
      const x = r(t * k), w = r(G * k * n), wt = r(G * n * k), dy = r(t * n), bias = r(G * n), gates = r(t);
      const outs = (K) => {
        const o1 = new Float32Array(t * n).fill(NaN); K.groupedMatmul(x, w, sizes, o1, k, n, false);
        const o2 = new Float32Array(t * n).fill(NaN); K.groupedMatmul(x, wt, sizes, o2, k, n, true);
        const o3 = new Float32Array(G * k * n).fill(NaN); K.groupedMatmulWeightGrad(x, dy, sizes, o3, k, n);
        const o4 = new Float32Array(t * n).fill(NaN), pre = new Float32Array(t * n).fill(NaN);
        K.groupedMatmulEpilogue(x, w, sizes, o4, k, n, false, bias, 'gelu', gates, pre);
        return [o1, o2, o3, o4, pre];
      };
      const ref = outs(J);
      outs(N).forEach((o, i) => cmp(o, ref[i]));
    }
  }
  console.log(JSON.stringify({ worst, checked, threads: nativeInfo().threads }));`;

test('the grouped GEMMs give the js reference\'s results with whole groups per thread and with each product threaded (2 threads)', { skip: noNative }, () => {
  const env: NodeJS.ProcessEnv = { ...process.env, MOE_NATIVE_THREADS: '2' };
  delete env['MOE_GEMM'];
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', SPLIT_SCRIPT], { encoding: 'utf8', env });
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { worst: number; checked: number; threads: number };
  assert.equal(res.threads, 2);
  assert.ok(res.checked > 0);
  assert.ok(res.worst < 2e-5, `largest relative difference ${res.worst}`);
});
