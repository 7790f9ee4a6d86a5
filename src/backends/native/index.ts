// The native backend: TypeScript binding of the moe_native C++ addon (OpenBLAS GEMMs, vectorised
// and threaded loops), registered lazily so that a missing build falls back to the js backend.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, BinaryOp, KernelImpls, ReduceOp, UnaryOp } from '../../kernels/kernels.js';
import { registerLazyBackend, setLoadError } from '../../kernels/registry.js';
import type { FloatArray } from '../../tensor/dtype.js';
import { QUANT_CODE } from '../../tensor/quant-blocks.js';

type F32 = Float32Array;
type I32 = Int32Array;
type Shape = readonly number[];

/** The addon's exports: the kernels of KernelImpls with op names as codes and float32 data only. */
interface Addon {
  matmul(a: F32, b: F32, out: F32, batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean, aBatched: boolean, bBatched: boolean, accumulate: boolean): void;
  groupedMatmul(x: F32, w: F32, groupSizes: I32, out: F32, k: number, n: number, transW: boolean): void;
  groupedMatmulEpilogue(x: F32, w: F32, groupSizes: I32, out: F32, k: number, n: number, transW: boolean, bias: F32 | null, op: number,
    rowScale: F32 | null, pre: F32 | null): void;
  groupedMatmulWeightGrad(x: F32, dy: F32, groupSizes: I32, out: F32, k: number, n: number): void;
  /** The portable SGEMM even in an OpenBLAS build (tests and benchmarks). */
  fallbackGemm(a: F32, b: F32, out: F32, m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate: boolean): void;
  binary(op: number, a: F32, aShape: Shape, b: F32, bShape: Shape, out: F32, outShape: Shape): void;
  unary(op: number, x: F32, out: F32): void;
  unaryBackward(op: number, x: F32, y: F32, dy: F32, dx: F32): void;
  activationBackwardRows(op: number, pre: F32, dy: F32, gates: F32 | null, act: F32, dot: F32 | null, rows: number, n: number): void;
  softmax(x: F32, out: F32, outer: number, dim: number, inner: number, log: boolean): void;
  softmaxBackward(y: F32, dy: F32, dx: F32, outer: number, dim: number, inner: number, log: boolean): void;
  reduce(op: number, x: F32, out: F32, arg: I32 | null, outer: number, dim: number, inner: number): void;
  sumToShape(src: F32, srcShape: Shape, dst: F32, dstShape: Shape): void;
  broadcastTo(src: F32, srcShape: Shape, dst: F32, dstShape: Shape, scale: number): void;
  scatterArg(dy: F32, arg: I32, out: F32, outer: number, dim: number, inner: number): void;
  topk(x: F32, values: F32, indices: I32, rows: number, n: number, k: number): void;
  topkBackward(dy: F32, indices: I32, out: F32, rows: number, n: number, k: number): void;
  gatherRows(src: F32, idx: I32, out: F32, nSrc: number, d: number): void;
  scatterAddRows(src: F32, idx: I32, out: F32, nOut: number, d: number): void;
  copyStrided(src: F32 | I32, srcOffset: number, srcStrides: Shape, dst: F32 | I32, dstOffset: number, dstStrides: Shape, shape: Shape): void;
  layerNorm(x: F32, gamma: F32 | null, beta: F32 | null, y: F32, mean: F32, rstd: F32, rows: number, d: number, eps: number): void;
  layerNormBackward(x: F32, gamma: F32 | null, mean: F32, rstd: F32, dy: F32, dx: F32, dgamma: F32 | null, dbeta: F32 | null,
    rows: number, d: number): void;
  rmsNorm(x: F32, gamma: F32 | null, y: F32, rstd: F32, rows: number, d: number, eps: number): void;
  rmsNormBackward(x: F32, gamma: F32 | null, rstd: F32, dy: F32, dx: F32, dgamma: F32 | null, rows: number, d: number): void;
  crossEntropy(logits: F32, targets: I32, losses: F32, probs: F32, rows: number, c: number, smoothing: number): void;
  crossEntropyBackward(probs: F32, targets: I32, dloss: F32, dlogits: F32, rows: number, c: number, smoothing: number): void;
  info(): { blas: 'openblas' | 'fallback'; threads: number; blasThreads: number; blasConfig: string; simd: string;
    gemm: GemmLibrary; gemmForced: boolean; onednn: OneDnnInfo | null };
  /** One product on the named library whatever the shape (tests and benchmarks); throws when it is not compiled in. */
  gemmWith(library: GemmLibrary, a: F32, b: F32, out: F32, m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate: boolean): void;
  /**
   * out = act(a @ op(b) + bias) * mul * rowScale (bias [n], mul [m, n], rowScale [m], each optional);
   * fused: in oneDNN's matmul post-ops (throws without oneDNN), else the GEMM and then one pass.
   */
  gemmEpilogue(fused: boolean, a: F32, b: F32, bias: F32 | null, act: number, mul: F32 | null, rowScale: F32 | null, out: F32,
    m: number, n: number, k: number, transB: boolean): void;
  /** How the grouped GEMMs use the threads: groups across threads when many and small (auto), always, or never. */
  setGroupedSplit(mode: 'auto' | 'groups' | 'products'): void;
  /** Every product on one library (MOE_GEMM), or null: chosen per shape class. */
  setGemmLibrary(library: string | null): void;
  /** Sizes the thread pool and OpenBLAS (openblas_set_num_threads) to n threads. */
  setThreads(n: number): void;
  prefetchIdle(data: ArrayBufferView, replace: boolean): void;
  measurePeakGflops(seconds: number, threads: number): number;
  measureReadBandwidth(bytes: number, passes: number): ReadBandwidth;
  adviseHugePages(a: ArrayBufferView): number;
  quantMatmul(x: F32, w: Uint8Array, out: F32, t: number, n: number, k: number, type: number): void;
  quantGroupedMatmul(x: F32, w: Uint8Array, groupSizes: I32, out: F32, n: number, k: number, type: number): void;
  /** Which block-dot code the CPU got: 'avx512vnni', 'avx2' or 'scalar' (MOE_QUANT_SIMD forces one). */
  quantSimd(): string;
  kvWrite(src: F32, dst: F32 | Uint16Array, T: number, G: number, hd: number, maxLen: number, pos: number): void;
  cachedAttention(q: F32, keys: F32 | Uint16Array, values: F32 | Uint16Array, out: F32, T: number, H: number, G: number, hd: number, maxLen: number, P: number,
    window: number, scale: number): void;
  qkvAttention(qkv: F32, qBias: F32 | null, kBias: F32 | null, vBias: F32 | null, qNorm: F32 | null, kNorm: F32 | null, normMode: number, eps: number,
    cos: F32, sin: F32, keys: F32 | Uint16Array, values: F32 | Uint16Array, out: F32, T: number, H: number, G: number, hd: number, maxLen: number,
    P: number, window: number, scale: number): void;
  expertSwiGLU(x: F32, token: I32, expert: I32, gates: F32, w1: F32 | Uint8Array, w3: F32 | Uint8Array, w2: F32 | Uint8Array, out: F32,
    T: number, d: number, h: number, E: number, type: number): void;
}

// Op codes shared with the C++ enums (elementwise.cc, reduce.cc); Records so a new op is a type error here.
const UNARY_CODE: Record<UnaryOp, number> = {
  neg: 0, exp: 1, log: 2, sqrt: 3, square: 4, abs: 5, tanh: 6, sigmoid: 7, softplus: 8, relu: 9, gelu: 10, geluTanh: 11, silu: 12, normcdf: 13,
};
const BINARY_CODE: Record<BinaryOp, number> = { add: 0, sub: 1, mul: 2, div: 3 };
const REDUCE_CODE: Record<ReduceOp, number> = { sum: 0, mean: 1, max: 2 };

const ADDON_PATH = ['src', 'backends', 'native', 'addon', 'build', 'Release', 'moe_native.node'];

/**
 * The package root: the nearest ancestor with a package.json, preferring one that holds the addon
 * sources (so a stray package.json under dist/ does not hide the build).
 */
function packageRoot(from: string): string | null {
  let first: string | null = null;
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) {
      if (existsSync(join(dir, 'src', 'backends', 'native', 'addon'))) return dir;
      first ??= dir;
    }
    if (dirname(dir) === dir) return first;
  }
}

/** The largest MOE_NATIVE_THREADS accepted: beyond it a value is almost surely a typo. */
export const MAX_NATIVE_THREADS = 1024;

/**
 * MOE_NATIVE_THREADS as a thread count, or null when it is unset or empty (then the pool uses the
 * core count, at most 64, and OpenBLAS its own default). Anything else than an integer in
 * [1, MAX_NATIVE_THREADS] is an error naming the variable: a silently ignored setting would leave
 * the machine oversubscribed while the user believes it is not.
 */
export function nativeThreadsSetting(raw: string | undefined = process.env['MOE_NATIVE_THREADS']): number | null {
  if (raw === undefined || raw.trim() === '') return null;
  const v = raw.trim();
  const n = /^\+?\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_NATIVE_THREADS) {
    throw new Error(`MOE_NATIVE_THREADS must be a whole number of threads from 1 to ${MAX_NATIVE_THREADS}, got '${raw}' (unset it to use every core)`);
  }
  return n;
}

let addon: Addon | null | undefined;
let addonError = '';
/** MOE_NATIVE_THREADS as read when the addon was loaded (the setting in force, whatever the environment says later). */
let threadsSetting: number | null = null;

function loadAddon(): Addon | null {
  if (addon !== undefined) return addon;
  // Before anything is loaded, so that a bad value is refused every time it is asked for.
  const threads = nativeThreadsSetting();
  threadsSetting = threads;
  addon = null;
  const here = dirname(fileURLToPath(import.meta.url));
  const root = packageRoot(here);
  const override = process.env['MOE_NATIVE_ADDON'];
  const path = override !== undefined && override !== '' ? override : root ? join(root, ...ADDON_PATH) : null;
  if (!path) {
    addonError = `no package.json above ${here}, so the addon cannot be located`;
  } else if (!existsSync(path)) {
    addonError = `the addon is not built (${path} is missing; run npm run build:native)`;
  } else {
    // OpenBLAS starts its threads when the library is loaded (with the addon), reading
    // OPENBLAS_NUM_THREADS then; setting it first means it never starts more than asked.
    if (threads !== null) process.env['OPENBLAS_NUM_THREADS'] = String(threads);
    // OpenBLAS's workers spin for 2^28 cycles (~0.1 s) after each call before they sleep; the
    // addon's pool runs the kernels between those calls (attention, elementwise, quantised and
    // few-row products), and on 2 cores a spinning OpenBLAS worker took one of its cores: a
    // 16-sequence decode step after a router product on OpenBLAS spent 30 ms in attention that
    // takes 7 ms otherwise. 2^20 cycles (~0.3 ms) is the order of the pool's own 2 ms spin; a user's
    // own setting is kept.
    if (process.env['OPENBLAS_THREAD_TIMEOUT'] === undefined) process.env['OPENBLAS_THREAD_TIMEOUT'] = '20';
    // oneDNN's OpenMP threads (libgomp, which reads its settings when it is loaded) spin 300000
    // rounds (~3 ms) after each product by default, the same trap in the other direction: on AVX-512
    // (oneDNN runs the products) an E = 8 expert GEMM's epilogue pass after each group's product took
    // 13-20 ms more per layer call, and a GELU right after a GEMM 11-15 ms instead of 6. 10000
    // rounds (~0.1 ms) kept the GEMMs at their speed and the passes at theirs; a user's
    // OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
    if (process.env['OMP_WAIT_POLICY'] === undefined && process.env['GOMP_SPINCOUNT'] === undefined) process.env['GOMP_SPINCOUNT'] = '10000';
    try {
      const a = createRequire(import.meta.url)(path) as Addon;
      if (typeof a.setThreads !== 'function') throw new Error('it predates MOE_NATIVE_THREADS support (no setThreads); run npm run build:native');
      if (threads !== null) a.setThreads(threads);
      addon = a;
    } catch (e) {
      addonError = `loading ${path} failed: ${e instanceof Error ? e.message : String(e)}`;
    }
  }
  const gemm = process.env['MOE_GEMM'];
  if (addon && gemm !== undefined && gemm !== '') {
    try {
      addon.setGemmLibrary(gemm);
    } catch (e) {
      // refused every time it is asked for, like a bad MOE_NATIVE_THREADS, never a silent js fallback
      addon = undefined;
      throw new Error(`MOE_GEMM=${gemm}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return addon;
}

function f32(name: string, x: FloatArray): Float32Array {
  if (x instanceof Float64Array) throw new Error(`native backend: kernel ${name} got float64 data; float64 runs only on the js backend`);
  return x;
}

function f32n(name: string, x: FloatArray | null): Float32Array | null {
  return x === null ? null : f32(name, x);
}

function makeKernels(n: Addon): KernelImpls {
  return {
    matmul: (a, b, out, batch, m, nn, k, transA, transB, aBatched, bBatched, accumulate) =>
      n.matmul(f32('matmul', a), f32('matmul', b), f32('matmul', out), batch, m, nn, k, transA, transB, aBatched, bBatched, accumulate),
    groupedMatmul: (x, w, groupSizes, out, k, nn, transW) =>
      n.groupedMatmul(f32('groupedMatmul', x), f32('groupedMatmul', w), groupSizes, f32('groupedMatmul', out), k, nn, transW),
    groupedMatmulEpilogue: (x, w, groupSizes, out, k, nn, transW, bias, act, rowScale, pre) => {
      const kn = 'groupedMatmulEpilogue';
      n.groupedMatmulEpilogue(f32(kn, x), f32(kn, w), groupSizes, f32(kn, out), k, nn, transW, bias && f32(kn, bias), act ? UNARY_CODE[act] : -1,
        rowScale && f32(kn, rowScale), pre && f32(kn, pre));
    },
    groupedMatmulWeightGrad: (x, dy, groupSizes, out, k, nn) =>
      n.groupedMatmulWeightGrad(f32('groupedMatmulWeightGrad', x), f32('groupedMatmulWeightGrad', dy), groupSizes,
        f32('groupedMatmulWeightGrad', out), k, nn),
    binary: (op, a, aShape, b, bShape, out, outShape) =>
      n.binary(BINARY_CODE[op], f32('binary', a), aShape, f32('binary', b), bShape, f32('binary', out), outShape),
    unary: (op, x, out) => n.unary(UNARY_CODE[op], f32('unary', x), f32('unary', out)),
    unaryBackward: (op, x, y, dy, dx) =>
      n.unaryBackward(UNARY_CODE[op], f32('unaryBackward', x), f32('unaryBackward', y), f32('unaryBackward', dy), f32('unaryBackward', dx)),
    activationBackwardRows: (op, pre, dy, gates, act, dot, rows, nn) => {
      const k = 'activationBackwardRows';
      n.activationBackwardRows(UNARY_CODE[op], f32(k, pre), f32(k, dy), gates && f32(k, gates), f32(k, act), dot && f32(k, dot), rows, nn);
    },
    softmax: (x, out, outer, dim, inner, log) => n.softmax(f32('softmax', x), f32('softmax', out), outer, dim, inner, log),
    softmaxBackward: (y, dy, dx, outer, dim, inner, log) =>
      n.softmaxBackward(f32('softmaxBackward', y), f32('softmaxBackward', dy), f32('softmaxBackward', dx), outer, dim, inner, log),
    reduce: (op, x, out, arg, outer, dim, inner) => n.reduce(REDUCE_CODE[op], f32('reduce', x), f32('reduce', out), arg, outer, dim, inner),
    sumToShape: (src, srcShape, dst, dstShape) => n.sumToShape(f32('sumToShape', src), srcShape, f32('sumToShape', dst), dstShape),
    broadcastTo: (src, srcShape, dst, dstShape, scale) =>
      n.broadcastTo(f32('broadcastTo', src), srcShape, f32('broadcastTo', dst), dstShape, scale),
    scatterArg: (dy, arg, out, outer, dim, inner) => n.scatterArg(f32('scatterArg', dy), arg, f32('scatterArg', out), outer, dim, inner),
    topk: (x, values, indices, rows, nn, k) => n.topk(f32('topk', x), f32('topk', values), indices, rows, nn, k),
    topkBackward: (dy, indices, out, rows, nn, k) => n.topkBackward(f32('topkBackward', dy), indices, f32('topkBackward', out), rows, nn, k),
    gatherRows: (src, idx, out, nSrc, d) => n.gatherRows(f32('gatherRows', src), idx, f32('gatherRows', out), nSrc, d),
    scatterAddRows: (src, idx, out, nOut, d) => n.scatterAddRows(f32('scatterAddRows', src), idx, f32('scatterAddRows', out), nOut, d),
    // Also takes Int32Array views (slicing index tensors); the addon copies 4-byte words.
    copyStrided: (src: FloatArray | Int32Array, srcOffset: number, srcStrides: Shape, dst: FloatArray | Int32Array, dstOffset: number,
      dstStrides: Shape, shape: Shape) =>
      n.copyStrided(src instanceof Int32Array ? src : f32('copyStrided', src), srcOffset, srcStrides,
        dst instanceof Int32Array ? dst : f32('copyStrided', dst), dstOffset, dstStrides, shape),
    layerNorm: (x, gamma, beta, y, mean, rstd, rows, d, eps) =>
      n.layerNorm(f32('layerNorm', x), f32n('layerNorm', gamma), f32n('layerNorm', beta), f32('layerNorm', y), f32('layerNorm', mean),
        f32('layerNorm', rstd), rows, d, eps),
    layerNormBackward: (x, gamma, mean, rstd, dy, dx, dgamma, dbeta, rows, d) => {
      const k = 'layerNormBackward';
      n.layerNormBackward(f32(k, x), f32n(k, gamma), f32(k, mean), f32(k, rstd), f32(k, dy), f32(k, dx), f32n(k, dgamma), f32n(k, dbeta),
        rows, d);
    },
    rmsNorm: (x, gamma, y, rstd, rows, d, eps) =>
      n.rmsNorm(f32('rmsNorm', x), f32n('rmsNorm', gamma), f32('rmsNorm', y), f32('rmsNorm', rstd), rows, d, eps),
    rmsNormBackward: (x, gamma, rstd, dy, dx, dgamma, rows, d) => {
      const k = 'rmsNormBackward';
      n.rmsNormBackward(f32(k, x), f32n(k, gamma), f32(k, rstd), f32(k, dy), f32(k, dx), f32n(k, dgamma), rows, d);
    },
    crossEntropy: (logits, targets, losses, probs, rows, c, smoothing) =>
      n.crossEntropy(f32('crossEntropy', logits), targets, f32('crossEntropy', losses), f32('crossEntropy', probs), rows, c, smoothing),
    crossEntropyBackward: (probs, targets, dloss, dlogits, rows, c, smoothing) =>
      n.crossEntropyBackward(f32('crossEntropyBackward', probs), targets, f32('crossEntropyBackward', dloss),
        f32('crossEntropyBackward', dlogits), rows, c, smoothing),
    quantMatmul: (x, w, out, t, nn, k, type) => n.quantMatmul(f32('quantMatmul', x), w, f32('quantMatmul', out), t, nn, k, QUANT_CODE[type]),
    quantGroupedMatmul: (x, w, groupSizes, out, nn, k, type) =>
      n.quantGroupedMatmul(f32('quantGroupedMatmul', x), w, groupSizes, f32('quantGroupedMatmul', out), nn, k, QUANT_CODE[type]),
    cachedAttention: (q, keys, values, out, T, H, G, hd, maxLen, P, window, scale) => {
      const k = 'cachedAttention';
      n.cachedAttention(f32(k, q), keys instanceof Uint16Array ? keys : f32(k, keys), values instanceof Uint16Array ? values : f32(k, values),
        f32(k, out), T, H, G, hd, maxLen, P, window, scale);
    },
    qkvAttention: (qkv, qBias, kBias, vBias, qNorm, kNorm, normMode, eps, cos, sin, keys, values, out, T, H, G, hd, maxLen, P, window, scale) => {
      const k = 'qkvAttention';
      const kv = (a: FloatArray | Uint16Array): F32 | Uint16Array => (a instanceof Uint16Array ? a : f32(k, a));
      n.qkvAttention(f32(k, qkv), f32n(k, qBias), f32n(k, kBias), f32n(k, vBias), f32n(k, qNorm), f32n(k, kNorm), normMode, eps, f32(k, cos), f32(k, sin),
        kv(keys), kv(values), f32(k, out), T, H, G, hd, maxLen, P, window, scale);
    },
    expertSwiGLU: (x, token, expert, gates, w1, w3, w2, out, T, d, h, E, type) => {
      const k = 'expertSwiGLU';
      const w = (a: FloatArray | Uint8Array): F32 | Uint8Array => (a instanceof Uint8Array ? a : f32(k, a));
      n.expertSwiGLU(f32(k, x), token, expert, f32(k, gates), w(w1), w(w3), w(w2), f32(k, out), T, d, h, E, type === 'f32' ? -1 : QUANT_CODE[type]);
    },
    kvWrite: (src, dst, T, G, hd, maxLen, pos) => n.kvWrite(f32('kvWrite', src), dst instanceof Uint16Array ? dst : f32('kvWrite', dst), T, G, hd, maxLen, pos),
  };
}

function load(): Backend | null {
  let n: Addon | null;
  try {
    n = loadAddon();
  } catch (e) {
    // The registry drops a loader once called; keep this one so every later use is refused too
    // instead of falling back to the js backend unnoticed.
    registerLazyBackend('native', load);
    throw e;
  }
  if (!n) {
    setLoadError('native', addonError);
    return null;
  }
  const i = n.info();
  const blas = i.blas === 'openblas' ? `OpenBLAS (${i.blasThreads} threads; ${i.blasConfig.trim()})` : 'portable blocked SGEMM (no OpenBLAS)';
  const dnnl = i.onednn ? `oneDNN ${i.onednn.version} (${i.onednn.isa}, ${i.onednn.threading} ${i.onednn.threads} threads), ` : '';
  return {
    name: 'native',
    float64: false,
    info: `C++ addon: GEMM on ${i.gemm}${i.gemmForced ? ' (MOE_GEMM)' : ''}; ${dnnl}${blas}; ${i.threads} threads, ${i.simd} loops`,
    kernels: makeKernels(n),
    prefetch: (data, replace) => n.prefetchIdle(data, replace === true),
  };
}

registerLazyBackend('native', load);

/** A GEMM library the addon can be built with ('fallback': its own portable blocked SGEMM). */
export type GemmLibrary = 'onednn' | 'openblas' | 'fallback';

/** oneDNN as the addon runs it (null in NativeInfo when the build did not find libdnnl). */
export interface OneDnnInfo {
  /** dnnl_version(), e.g. '2.6.3'. */
  version: string;
  /** The CPU ISA oneDNN dispatches to on this machine (dnnl_get_effective_cpu_isa: 'avx2', 'avx512_core', ...). */
  isa: string;
  /** The implementation its matmul picks for a 256^3 product ('gemm:jit', 'brg:avx512_core', ...). */
  impl: string;
  /**
   * The same with the rows left to run time, as plain-layout products run (one primitive for every
   * row count); '' when MOE_ONEDNN_STATIC_ROWS=1.
   */
  implAnyRows: string;
  /** The threading runtime it was built with ('OpenMP' for Debian's: a thread pool of its own). */
  threading: string;
  /** Threads its calls use (omp_get_max_threads: MOE_NATIVE_THREADS when set). */
  threads: number;
  cachedPrimitives: number;
  createdPrimitives: number;
  /** Calls handed to OpenBLAS or the portable GEMM after a oneDNN error (lastError says which). */
  failures: number;
  lastError: string;
  /**
   * Shapes (with their post-ops) where oneDNN offered only its reference kernel, which runs ~100x
   * below its JIT ones: those products run without the post-op or on another library instead.
   */
  declined: number;
  /** The last declined shape and the implementation oneDNN named ('' when none). */
  lastDeclined: string;
}

export interface NativeInfo {
  blas: 'openblas' | 'fallback';
  /** The library a large product runs on (per shape class; MOE_GEMM forces one). */
  gemm: GemmLibrary;
  /** True when MOE_GEMM chose the library for every product. */
  gemmForced: boolean;
  onednn: OneDnnInfo | null;
  /** Threads of moe-ts's own pool, the calling thread included. */
  threads: number;
  /** Where `threads` comes from. */
  threadsFrom: 'MOE_NATIVE_THREADS' | 'cores';
  /** openblas_get_num_threads() (the pool's count on the portable GEMM). */
  blasThreads: number;
  /** openblas_get_config() (a description of the portable GEMM without OpenBLAS). */
  blasConfig: string;
  /** The widest vector instruction set the addon's loops run with on this CPU. */
  simd: string;
}

/** How the addon was built and the threads in force, or null when it is not available. */
export function nativeInfo(): NativeInfo | null {
  const n = loadAddon();
  if (!n) return null;
  const i = n.info();
  return {
    blas: i.blas, gemm: i.gemm, gemmForced: i.gemmForced, onednn: i.onednn,
    threads: i.threads, threadsFrom: threadsSetting === null ? 'cores' : 'MOE_NATIVE_THREADS',
    blasThreads: i.blasThreads, blasConfig: i.blasConfig.trim(), simd: i.simd,
  };
}

/**
 * The measured float32 FMA peak in GFLOP/s: `threads` threads, each running 12 independent FMA
 * chains on the widest vector unit for `seconds`. Throws when the addon is not built.
 */
export function measurePeakGflops(seconds: number, threads: number): number {
  const n = loadAddon();
  if (!n) throw new Error(`native backend: ${addonError}`);
  return n.measurePeakGflops(seconds, threads);
}

/** measureReadBandwidth's result: read GB/s of each timed pass (a warm-up pass is not counted), their median and best. */
export interface ReadBandwidth {
  medianGBs: number;
  bestGBs: number;
  passGBs: number[];
  bytes: number;
  threads: number;
}

/**
 * Memory read bandwidth as decode reads weights: all the pool's threads sum their own contiguous
 * part of a `bytes` buffer with vector loads, `passes` timed passes. Throws when the addon is not built.
 */
export function measureReadBandwidth(bytes = 2 ** 30, passes = 5): ReadBandwidth {
  const n = loadAddon();
  if (!n) throw new Error(`native backend: ${addonError}`);
  if (typeof n.measureReadBandwidth !== 'function') throw new Error('native backend: the addon predates measureReadBandwidth; run npm run build:native');
  return n.measureReadBandwidth(bytes, passes);
}

/**
 * Asks the OS to back the whole 2 MiB pages of a large buffer with transparent huge pages (Linux
 * THP in madvise mode), before its pages are first written: weights streamed at decode then cost
 * one TLB entry per 2 MiB instead of per 4 KiB. Returns the bytes advised; 0 without the addon,
 * off Linux, for buffers under 4 MiB, or when MOE_HUGE_PAGES=0 (the opt-out, and the A/B switch of
 * the benchmark).
 */
export function adviseHugePages(a: ArrayBufferView): number {
  const n = loadAddon();
  if (!n || typeof n.adviseHugePages !== 'function' || a.byteLength < 2 ** 22 || process.env['MOE_HUGE_PAGES'] === '0') return 0;
  return n.adviseHugePages(a);
}

/** The portable SGEMM of the addon, for tests and benchmarks of OpenBLAS-less builds; null without the addon. */
export function nativeFallbackGemm(): Addon['fallbackGemm'] | null {
  const n = loadAddon();
  return n ? n.fallbackGemm.bind(n) : null;
}

/** The test and benchmark hook running one product on a named GEMM library, or null without the addon. */
export function nativeGemmWith(): Addon['gemmWith'] | null {
  const n = loadAddon();
  return n ? n.gemmWith.bind(n) : null;
}

/**
 * Test and benchmark hook: how the native grouped GEMMs share the pool's threads ('auto': whole
 * groups per thread when no group has more than 256 rows (16 where oneDNN runs the products:
 * MOE_GROUP_PORTABLE_MAX_ROWS sets it) and there are two or more per thread, else
 * each product threaded; 'groups' drops the count condition, 'products' never splits). Results are
 * the same bits either way. A no-op without the native addon.
 */
export function setNativeGroupedSplit(mode: 'auto' | 'groups' | 'products'): void {
  loadAddon()?.setGroupedSplit(mode);
}

/** gemmEpilogue's activation codes (gemm_dnnl.h's EpilogueAct). */
export const EPILOGUE_ACT = { none: 0, relu: 1, gelu: 2, geluTanh: 3, silu: 4 } as const;

/** The fused-epilogue GEMM (tests and benchmarks; not used by the MoE layer yet), or null without the addon. */
export function nativeGemmEpilogue(): Addon['gemmEpilogue'] | null {
  const n = loadAddon();
  return n ? n.gemmEpilogue.bind(n) : null;
}

/** The GEMM libraries this build has ('fallback' always), or [] without the addon. */
export function nativeGemmLibraries(): GemmLibrary[] {
  const i = loadAddon()?.info();
  if (!i) return [];
  return [...(i.onednn ? ['onednn' as const] : []), ...(i.blas === 'openblas' ? ['openblas' as const] : []), 'fallback'];
}

/** The block-dot variant the quantised kernels run ('avx512vnni', 'avx2', 'scalar'), or null without the addon. */
export function nativeQuantSimd(): string | null {
  const n = loadAddon();
  return n ? n.quantSimd() : null;
}

/** Why the addon did not load ('' when it did or was not tried). */
export function nativeLoadError(): string {
  return addonError;
}
