// Few-row products (batch-1 decode): the native matrix-vector kernel (1-4 rows, through matmul,
// groupedMatmul and the portable fallbackGemm) against the js reference; and the native
// read-bandwidth probe.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/index.js';
import { findBackend } from '../src/kernels/registry.js';
import { measureReadBandwidth, nativeFallbackGemm } from '../src/backends/native/index.js';
import { assertClose } from './helpers.js';

const native = findBackend('native');
const js = findBackend('js')!;
const noNative = native === null && 'the native addon is not built here';

function rand(rng: Rng, n: number): Float32Array {
  const x = new Float32Array(n);
  rng.fillUniform(x, -1, 1);
  return x;
}

// Odd sizes (vector tails), and one above the threading threshold (>= 2 MiB of B: two threads,
// C's columns or B's rows split, the partial outputs added up).
const SHAPES: ReadonlyArray<[number, number]> = [[1, 1], [7, 3], [37, 53], [129, 1000], [263, 517], [17, 8195], [613, 1031]];

type Gemm = (a: Float32Array, b: Float32Array, out: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean, acc: boolean) => void;

function reference(a: Float32Array, b: Float32Array, out: Float32Array, m: number, n: number, k: number, tA: boolean, tB: boolean, acc: boolean): void {
  js.kernels.matmul!(a, b, out, 1, m, n, k, tA, tB, false, false, acc);
}

function checkAll(what: string, gemm: Gemm, rows: readonly number[] = [1, 2, 3, 4], shapes = SHAPES): void {
  const rng = new Rng(7);
  for (const m of rows) {
    for (const [n, k] of shapes) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          for (const acc of [false, true]) {
            const a = rand(rng, m * k);
            const b = rand(rng, n * k);
            const init = rand(rng, m * n);
            const want = init.slice();
            reference(a, b, want, m, n, k, transA, transB, acc);
            // without accumulate the output's old contents (NaN here) must not leak into the result
            const got = acc ? init.slice() : new Float32Array(m * n).fill(Number.NaN);
            gemm(a, b, got, m, n, k, transA, transB, acc);
            assertClose(got, want, 1e-4, 1e-4 * Math.sqrt(k), `${what} m=${m} n=${n} k=${k} transA=${transA} transB=${transB} accumulate=${acc}`);
          }
        }
      }
    }
  }
}

test('native matmul with 1-4 rows matches the js reference (both transposes, accumulate, odd sizes)', { skip: noNative }, () => {
  checkAll('matmul', (a, b, out, m, n, k, tA, tB, acc) => native!.kernels.matmul!(a, b, out, 1, m, n, k, tA, tB, false, false, acc));
});

// 5-16 rows (a batched decode step) stay on the addon's kernel, in L2 tiles of B (128 KiB): shapes
// with many tiles per thread in both layouts ([613, 1031]: 31 rows of B [n, k] per tile, 2.5 MiB
// so two threads; [2100, 300]: 15 rows of B [k, n] per tile), tails of 1-3 rows after the 4-row slabs.
const FEW_ROW_SHAPES: ReadonlyArray<[number, number]> = [[7, 3], [263, 517], [613, 1031], [2100, 300], [17, 8195]];

test('native matmul with 5-16 rows matches the js reference (tiled passes over B)', { skip: noNative }, () => {
  checkAll('matmul', (a, b, out, m, n, k, tA, tB, acc) => native!.kernels.matmul!(a, b, out, 1, m, n, k, tA, tB, false, false, acc), [5, 8, 11, 16], FEW_ROW_SHAPES);
});

test('a row of a 5-16 row product equals the same row alone, bit for bit, with B stored [n, k] (batched decode = decode alone)', { skip: noNative }, () => {
  const rng = new Rng(11);
  for (const [n, k] of FEW_ROW_SHAPES) {
    for (const m of [6, 16]) {
      const a = rand(rng, m * k);
      const b = rand(rng, n * k);
      const all = new Float32Array(m * n);
      native!.kernels.matmul!(a, b, all, 1, m, n, k, false, true, false, false, false);
      for (const i of [0, m - 1]) {
        const one = new Float32Array(n);
        native!.kernels.matmul!(a.subarray(i * k, (i + 1) * k), b, one, 1, 1, n, k, false, true, false, false, false);
        assert.deepEqual(all.subarray(i * n, (i + 1) * n), one, `m=${m} row ${i} n=${n} k=${k}`);
      }
    }
  }
});

test("the addon's own few-row kernel (fallbackGemm: the path of builds without OpenBLAS) matches the js reference", { skip: noNative }, () => {
  const fb = nativeFallbackGemm()!;
  checkAll('fallbackGemm', (a, b, out, m, n, k, tA, tB, acc) => fb(a, b, out, m, n, k, tA, tB, acc));
});

test('batched few-row matmul: one row per batch entry against a shared or per-entry B, and stacked rows', { skip: noNative }, () => {
  const rng = new Rng(3);
  for (const [batch, m, aB, bB] of [[3, 1, true, true], [4, 1, true, false], [2, 2, true, false], [5, 1, false, true]] as const) {
    for (const transB of [false, true]) {
      const n = 301, k = 97;
      const a = rand(rng, (aB ? batch : 1) * m * k);
      const b = rand(rng, (bB ? batch : 1) * n * k);
      const want = new Float32Array(batch * m * n);
      js.kernels.matmul!(a, b, want, batch, m, n, k, false, transB, aB, bB, false);
      const got = new Float32Array(batch * m * n);
      native!.kernels.matmul!(a, b, got, batch, m, n, k, false, transB, aB, bB, false);
      assertClose(got, want, 1e-4, 1e-3, `batch=${batch} m=${m} aBatched=${aB} bBatched=${bB} transB=${transB}`);
    }
  }
});

test('grouped GEMM with 0-4 rows per group (a decode step: k experts of E get one row each) matches the js reference', { skip: noNative }, () => {
  const rng = new Rng(11);
  const E = 9;
  for (const sizes of [[0, 1, 0, 0, 1, 1, 0, 0, 1], [2, 0, 3, 4, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0]]) {
    for (const [k, n] of [[64, 48], [515, 257], [256, 1029]]) {
      for (const transW of [false, true]) {
        const T = sizes.reduce((s, x) => s + x, 0);
        const gs = Int32Array.from(sizes);
        const x = rand(rng, T * k);
        const w = rand(rng, E * k * n);
        const want = new Float32Array(T * n);
        js.kernels.groupedMatmul!(x, w, gs, want, k, n, transW);
        const got = new Float32Array(T * n).fill(Number.NaN);
        native!.kernels.groupedMatmul!(x, w, gs, got, k, n, transW);
        assertClose(got, want, 1e-4, 1e-3, `groupedMatmul sizes=[${sizes.join(',')}] k=${k} n=${n} transW=${transW}`);
      }
    }
  }
});

test('measureReadBandwidth: positive rates for every timed pass, median within them; bad arguments are named', { skip: noNative }, () => {
  const r = measureReadBandwidth(8 * 2 ** 20, 3);
  assert.equal(r.passGBs.length, 3);
  for (const g of r.passGBs) assert.ok(Number.isFinite(g) && g > 0, `pass rate ${g}`);
  assert.ok(r.medianGBs >= Math.min(...r.passGBs) && r.medianGBs <= Math.max(...r.passGBs));
  assert.equal(r.bestGBs, Math.max(...r.passGBs));
  assert.equal(r.bytes, 8 * 2 ** 20);
  assert.ok(r.threads >= 1);
  assert.throws(() => measureReadBandwidth(1000, 3), /measureReadBandwidth: bytes must be in \[1 MiB, 64 GiB\]/);
  assert.throws(() => measureReadBandwidth(2 ** 20, 0), /measureReadBandwidth: passes must be in \[1, 1000\]/);
});
