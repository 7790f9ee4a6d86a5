// The named kernels a backend implements. Kernels work on raw typed arrays with explicit sizes;
// ops validate shapes, allocate outputs (zero-filled) and record gradients, so a kernel may
// assume its arguments are consistent. Native kernels still check buffer lengths, so that a bug
// in an op becomes an error, never an out-of-bounds access.
//
// F: float32 (every backend) or float64 (js only). I: int32 indices.

import type { FloatArray } from '../tensor/dtype.js';
import type { QuantType } from '../tensor/quant-blocks.js';

type F = FloatArray;
type I = Int32Array;

export const BINARY_OPS = ['add', 'sub', 'mul', 'div'] as const;
export type BinaryOp = (typeof BINARY_OPS)[number];

export const UNARY_OPS = ['neg', 'exp', 'log', 'sqrt', 'square', 'abs', 'tanh', 'sigmoid', 'softplus', 'relu', 'gelu', 'geluTanh', 'silu', 'normcdf'] as const;
export type UnaryOp = (typeof UNARY_OPS)[number];

export const REDUCE_OPS = ['sum', 'mean', 'max'] as const;
export type ReduceOp = (typeof REDUCE_OPS)[number];

export interface KernelImpls {
  /**
   * out[b] (+)= op(A[b]) @ op(B[b]) for b < batch; A[b] is m x k (k x m when transA), B[b] is
   * k x n (n x k when transB), out[b] is m x n. aBatched/bBatched false: the one matrix is shared
   * by every batch entry. accumulate: add into out instead of overwriting.
   */
  matmul(a: F, b: F, out: F, batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean, aBatched: boolean, bBatched: boolean, accumulate: boolean): void;

  /**
   * Expert GEMM. x [T, k] holds consecutive row groups of sizes groupSizes (sum = T); group g is
   * multiplied by w[g]: [k, n] (or [n, k] read transposed when transW). out [T, n].
   */
  groupedMatmul(x: F, w: F, groupSizes: I, out: F, k: number, n: number, transW: boolean): void;

  /**
   * groupedMatmul with the expert MLP's epilogue applied to each group after its product:
   * c = x_g @ op(w[g]) + bias[g] (bias [G, n], or null); pre [T, n] (when given) receives c, the
   * pre-activation backward keeps; out = act(c) * rowScale[row] (act null: none; rowScale [T], the
   * gates, or null). Every step is the standalone kernel's arithmetic (binary add, unary, binary mul).
   */
  groupedMatmulEpilogue(x: F, w: F, groupSizes: I, out: F, k: number, n: number, transW: boolean, bias: F | null, act: UnaryOp | null,
    rowScale: F | null, pre: F | null): void;

  /** Weight gradient of groupedMatmul: out[g] = x_g^T @ dy_g, out [G, k, n]; x [T, k], dy [T, n]. */
  groupedMatmulWeightGrad(x: F, dy: F, groupSizes: I, out: F, k: number, n: number): void;

  /** Elementwise with NumPy broadcasting; aShape and bShape are left-padded to outShape's rank. */
  binary(op: BinaryOp, a: F, aShape: readonly number[], b: F, bShape: readonly number[], out: F, outShape: readonly number[]): void;

  unary(op: UnaryOp, x: F, out: F): void;

  /** dx = dy * f'(x); y = f(x) is passed for ops whose derivative is cheaper from it. */
  unaryBackward(op: UnaryOp, x: F, y: F, dy: F, dx: F): void;

  /**
   * An activation's backward over the [rows, n] hidden of an expert MLP in one pass, recomputing
   * the activation from the kept pre-activation: act = f(pre); dot[r] += <dy_r, act_r> (before dy
   * changes; skipped when dot is null); dy_r <- gates[r] * dy_r * f'(pre_r) in place (null: 1).
   */
  activationBackwardRows(op: UnaryOp, pre: F, dy: F, gates: F | null, act: F, dot: F | null, rows: number, n: number): void;

  /** Softmax (or log-softmax) over the middle axis of [outer, dim, inner]. */
  softmax(x: F, out: F, outer: number, dim: number, inner: number, log: boolean): void;
  softmaxBackward(y: F, dy: F, dx: F, outer: number, dim: number, inner: number, log: boolean): void;

  /** Reduces the middle axis of [outer, dim, inner] to [outer, inner]; max writes the argmax into arg. */
  reduce(op: ReduceOp, x: F, out: F, arg: I | null, outer: number, dim: number, inner: number): void;

  /** Sums src over the axes where dstShape (left-padded to srcShape's rank) is 1: the adjoint of broadcasting. */
  sumToShape(src: F, srcShape: readonly number[], dst: F, dstShape: readonly number[]): void;

  /** dst = scale * broadcast(src) to dstShape. */
  broadcastTo(src: F, srcShape: readonly number[], dst: F, dstShape: readonly number[], scale: number): void;

  /** out[o, arg[o, i], i] += dy[o, i]: the backward of max over an axis. out is zero-filled by the caller. */
  scatterArg(dy: F, arg: I, out: F, outer: number, dim: number, inner: number): void;

  /** Top k of each row of x [rows, n], in descending order, ties to the lower index. */
  topk(x: F, values: F, indices: I, rows: number, n: number, k: number): void;

  /** out[r, indices[r, j]] += dy[r, j]; out [rows, n] zero-filled by the caller. */
  topkBackward(dy: F, indices: I, out: F, rows: number, n: number, k: number): void;

  /** out[i, :] = src[idx[i], :]; src [nSrc, d], out [idx.length, d]. Indices are pre-validated. */
  gatherRows(src: F, idx: I, out: F, nSrc: number, d: number): void;

  /** out[idx[i], :] += src[i, :]; src [idx.length, d], out [nOut, d]. Indices are pre-validated. */
  scatterAddRows(src: F, idx: I, out: F, nOut: number, d: number): void;

  /**
   * Strided copy of a `shape`-shaped view: dst[dstOffset + sum i*dstStrides] = src[srcOffset + sum i*srcStrides].
   * Works on float and int32 data (index tensors are sliced and concatenated too).
   */
  copyStrided(src: F | I, srcOffset: number, srcStrides: readonly number[], dst: F | I, dstOffset: number,
    dstStrides: readonly number[], shape: readonly number[]): void;

  /** Layer norm over rows of x [rows, d]; gamma/beta [d] optional. Saves mean and rstd [rows]. */
  layerNorm(x: F, gamma: F | null, beta: F | null, y: F, mean: F, rstd: F, rows: number, d: number, eps: number): void;
  /** dgamma/dbeta are accumulated into (zero-filled by the caller). */
  layerNormBackward(x: F, gamma: F | null, mean: F, rstd: F, dy: F, dx: F, dgamma: F | null, dbeta: F | null, rows: number, d: number): void;

  /** RMS norm over rows: y = x * rstd * gamma, rstd = 1/sqrt(mean(x^2) + eps). */
  rmsNorm(x: F, gamma: F | null, y: F, rstd: F, rows: number, d: number, eps: number): void;
  rmsNormBackward(x: F, gamma: F | null, rstd: F, dy: F, dx: F, dgamma: F | null, rows: number, d: number): void;

  /**
   * Per-row cross-entropy of logits [rows, c] against class targets, with label smoothing s:
   * target distribution (1 - s) on the class plus s / c everywhere. Targets < 0 are ignored
   * (loss 0, gradient 0). Writes losses [rows] and the softmax probabilities [rows, c].
   */
  crossEntropy(logits: F, targets: I, losses: F, probs: F, rows: number, c: number, smoothing: number): void;
  /** dlogits[r] = dloss[r] * (probs[r] - target distribution[r]). */
  crossEntropyBackward(probs: F, targets: I, dloss: F, dlogits: F, rows: number, c: number, smoothing: number): void;

  /**
   * Quantised product, inference only: out[T, n] = x[T, k] @ W^T, W [n, k] held as ggml blocks of
   * `type` (each row k/32 blocks; k a multiple of 32). Like llama.cpp, each row of x is first
   * quantised to Q8_0, so every block dot is an exact integer sum times the two block scales.
   */
  quantMatmul(x: F, w: Uint8Array, out: F, t: number, n: number, k: number, type: QuantType): void;

  /** Expert variant (ggml's mul_mat_id): x's rows in consecutive groups of groupSizes; group g uses W[g] of W [G, n, k]. */
  quantGroupedMatmul(x: F, w: Uint8Array, groupSizes: I, out: F, n: number, k: number, type: QuantType): void;

  /**
   * Attention of T new queries over a head-major KV cache, inference only. q [T, H, hd] (rotated),
   * keys and values [G, maxLen, hd] (one layer of the cache, positions 0 .. P + T - 1 filled),
   * out [T, H, hd]. Query t sits at position P + t and sees keys j <= P + t (and j > P + t - window
   * when window > 0); query head h reads key head floor(h / (H / G)). Scores are scaled by scale,
   * then softmax, then the probability-weighted sum of values.
   */
  cachedAttention(q: F, keys: F | Uint16Array, values: F | Uint16Array, out: F, T: number, H: number, G: number, hd: number, maxLen: number,
    P: number, window: number, scale: number): void;

  /**
   * Writes src [T, G, hd] (new tokens' keys or values) into one layer of a head-major cache dst [G,
   * maxLen, hd] at positions pos .. pos + T - 1. dst is float32, or a Uint16Array of f16 bit patterns
   * (a half-precision cache: each value rounded to nearest even, as floatToHalf); cachedAttention
   * reads either kind.
   */
  kvWrite(src: F, dst: F | Uint16Array, T: number, G: number, hd: number, maxLen: number, pos: number): void;

  /**
   * A decode step's attention after its qkv product, in one call, inference only: qkv [T, (H + 2G) hd]
   * split into q [T, H, hd], k and v [T, G, hd]; biases added (each null or [H hd] / [G hd]);
   * QK-norm (normMode 1: RMSNorm over all of q's and of k's heads with weights [H hd] and [G hd];
   * 2: per head with weights [hd]; 0: none) with eps; rotate-half rotary by cos, sin [T, hd]; k and v
   * written into the cache layer at positions P .. P + T - 1 (as kvWrite); then cachedAttention of
   * q into out [T, H hd].
   */
  qkvAttention(qkv: F, qBias: F | null, kBias: F | null, vBias: F | null, qNorm: F | null, kNorm: F | null, normMode: number, eps: number,
    cos: F, sin: F, keys: F | Uint16Array, values: F | Uint16Array, out: F, T: number, H: number, G: number, hd: number, maxLen: number,
    P: number, window: number, scale: number): void;

  /**
   * SwiGLU experts of a decode step in one call, inference only: for each assignment a (token[a],
   * expert[a], gates[a]), out[token] += gates[a] * W2[e] (silu(W1[e] x_t) * (W3[e] x_t)), e = expert[a].
   * x [T, d]; W1, W3 [E, h, d] and W2 [E, d, h] (HF [out, in] per expert), float32 (type 'f32') or
   * ggml blocks of type (d and h multiples of 32; x and the hidden activation quantised to Q8_0 per
   * row as quantMatmul does). Each token's gated rows are summed in expert order, then added to out.
   */
  expertSwiGLU(x: F, token: I, expert: I, gates: F, w1: F | Uint8Array, w3: F | Uint8Array, w2: F | Uint8Array, out: F,
    T: number, d: number, h: number, E: number, type: QuantType | 'f32'): void;
}

/** Rows per expert (and per step) up to which decode runs the fused kernels (the native few-row kernels' limit, kFewM). */
export const FUSED_DECODE_MAX_ROWS = 16;

export type KernelName = keyof KernelImpls;

export const KERNEL_NAMES: readonly KernelName[] = [
  'matmul', 'groupedMatmul', 'groupedMatmulEpilogue', 'groupedMatmulWeightGrad', 'binary', 'unary', 'unaryBackward', 'activationBackwardRows', 'softmax',
  'softmaxBackward', 'reduce', 'sumToShape', 'broadcastTo', 'scatterArg', 'topk', 'topkBackward',
  'gatherRows', 'scatterAddRows', 'copyStrided', 'layerNorm', 'layerNormBackward', 'rmsNorm',
  'rmsNormBackward', 'crossEntropy', 'crossEntropyBackward', 'quantMatmul', 'quantGroupedMatmul',
  'cachedAttention', 'kvWrite', 'qkvAttention', 'expertSwiGLU',
];

export interface Backend {
  readonly name: string;
  /** Whether float64 tensors are accepted (the js reference backend only). */
  readonly float64: boolean;
  readonly kernels: Partial<KernelImpls>;
  /** One line on how the backend was built (e.g. which BLAS). */
  readonly info: string;
  /**
   * A hint: read data's bytes into the caches in the background when the backend can (the native
   * pool's idle workers, between kernels; MOE_PREFETCH=0 turns it off). replace: drop the hints
   * still queued first (they are stale). Absent: nothing to do.
   */
  readonly prefetch?: (data: ArrayBufferView, replace?: boolean) => void;
}
