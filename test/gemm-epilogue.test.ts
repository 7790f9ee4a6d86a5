// The GEMM with a fused epilogue (act(A op(B) + bias) * mul * rowScale), fused in oneDNN's post-ops
// and unfused (GEMM, then one pass), against the js reference built from the js kernels.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/index.js';
import { findBackend } from '../src/kernels/registry.js';
import type { UnaryOp } from '../src/kernels/kernels.js';
import { EPILOGUE_ACT, nativeGemmEpilogue, nativeGemmLibraries } from '../src/backends/native/index.js';
import { assertClose } from './helpers.js';

const js = findBackend('js')!;
const epi = nativeGemmEpilogue();
const noNative = epi === null && 'the native addon is not built here';
const noDnnl = !nativeGemmLibraries().includes('onednn') && 'this build has no oneDNN';

function rand(rng: Rng, n: number, lo = -1, hi = 1): Float32Array {
  const x = new Float32Array(n);
  rng.fillUniform(x, lo, hi);
  return x;
}

const ACTS: Array<keyof typeof EPILOGUE_ACT> = ['none', 'relu', 'gelu', 'geluTanh', 'silu'];

function reference(a: Float32Array, b: Float32Array, bias: Float32Array | null, act: keyof typeof EPILOGUE_ACT, mul: Float32Array | null,
  rowScale: Float32Array | null, m: number, n: number, k: number, transB: boolean): Float32Array {
  const y = new Float32Array(m * n);
  js.kernels.matmul!(a, b, y, 1, m, n, k, false, transB, false, false, false);
  if (bias) for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) y[i * n + j]! += bias[j]!;
  let z = y;
  if (act !== 'none') {
    z = new Float32Array(m * n);
    js.kernels.unary!(act as UnaryOp, y, z);
  }
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) z[i * n + j] = z[i * n + j]! * (mul ? mul[i * n + j]! : 1) * (rowScale ? rowScale[i]! : 1);
  }
  return z;
}

// k = 0, 1-5 rows, odd sizes, one past the blocking
const SHAPES: ReadonlyArray<[number, number, number]> = [[1, 5, 3], [5, 7, 0], [5, 33, 17], [37, 65, 129], [130, 257, 96]];

function checkAll(fused: boolean): void {
  const rng = new Rng(fused ? 1 : 2);
  for (const [m, n, k] of SHAPES) {
    for (const act of ACTS) {
      for (const transB of [false, true]) {
        // the cases (GELU with bias; SwiGLU's silu times the up projection; gate scaling) and every combination of operands
        for (const [withBias, withMul, withScale] of [[false, false, false], [true, false, false], [false, true, false], [false, false, true], [true, true, true]] as const) {
          const a = rand(rng, m * k, -2, 2);
          const b = rand(rng, k * n);
          const bias = withBias ? rand(rng, n) : null;
          const mul = withMul ? rand(rng, m * n) : null;
          const scale = withScale ? rand(rng, m, 0, 1) : null;
          const want = reference(a, b, bias, act, mul, scale, m, n, k, transB);
          const got = new Float32Array(m * n).fill(Number.NaN);
          epi!(fused, a, b, bias, EPILOGUE_ACT[act], mul, scale, got, m, n, k, transB);
          assertClose(got, want, 1e-4, 2e-5 * Math.sqrt(k + 1),
            `${fused ? 'fused' : 'unfused'} m=${m} n=${n} k=${k} act=${act} transB=${transB} bias=${withBias} mul=${withMul} rowScale=${withScale}`);
        }
      }
    }
  }
}

test('fused epilogue (oneDNN post-ops): bias, every activation, mul, row scale match the js reference', { skip: noNative || noDnnl }, () => {
  checkAll(true);
});

test('unfused epilogue (the GEMM, then one pass) matches the js reference', { skip: noNative }, () => {
  checkAll(false);
});

test('gemmEpilogue refuses bad operands naming them', { skip: noNative }, () => {
  const x = new Float32Array(6);
  assert.throws(() => epi!(false, x, x, null, 9, null, null, x, 2, 3, 1, false), /act must be 0 \(none\) to 4 \(silu\), got 9/);
  assert.throws(() => epi!(false, x, x, new Float32Array(2), 0, null, null, x, 2, 3, 1, false), /bias/);
  assert.throws(() => epi!(false, x, x, null, 0, new Float32Array(5), null, x, 2, 3, 1, false), /mul/);
  assert.throws(() => epi!(false, x, x, null, 0, null, new Float32Array(1), x, 2, 3, 1, false), /rowScale/);
  if (noDnnl) assert.throws(() => epi!(true, x, x, null, 0, null, null, x, 2, 3, 1, false), /need oneDNN/);
});
