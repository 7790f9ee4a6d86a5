// Shared checks and helpers for ops: every failure names the op and the shapes involved.

import { Tensor } from '../tensor/tensor.js';
import { allocArray, allocUninitialized, type DType, type FloatArray } from '../tensor/dtype.js';
import { shapeSize, shapeStr, type Shape } from '../tensor/shape.js';

export function assertFloat(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype === 'int32') throw new Error(`${op}: expected a float tensor, got int32 of shape ${shapeStr(t.shape)}`);
  }
}

export function assertSameDtype(op: string, a: Tensor, b: Tensor): void {
  if (a.dtype !== b.dtype) throw new Error(`${op}: dtype mismatch, ${a.dtype} ${shapeStr(a.shape)} vs ${b.dtype} ${shapeStr(b.shape)}`);
}

export function assertRank(op: string, t: Tensor, rank: number, what = 'input'): void {
  if (t.rank !== rank) throw new Error(`${op}: ${what} must have rank ${rank}, got shape ${shapeStr(t.shape)}`);
}

export function assertInt(op: string, t: Tensor, what = 'indices'): void {
  if (t.dtype !== 'int32') throw new Error(`${op}: ${what} must be int32, got ${t.dtype} of shape ${shapeStr(t.shape)}`);
}

/**
 * Every index must lie in [0, n); otherwise an error naming the op, the position and the bound.
 * `what` may be a function, so that a description with a shape in it is built only on failure
 * (decode calls this a few hundred times per token).
 */
export function assertIndicesInRange(op: string, idx: Int32Array, n: number, what: string | (() => string) = 'index'): void {
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i]!;
    if (v < 0 || v >= n) throw new Error(`${op}: ${typeof what === 'function' ? what() : what} ${v} at position ${i} is out of range [0, ${n})`);
  }
}

export function emptyLike(shape: Shape, dtype: DType): Tensor {
  return new Tensor(allocArray(dtype, shapeSize(shape)), shape);
}

/**
 * An output tensor whose contents are unspecified (torch.empty), for kernels that write every
 * element; anything that accumulates into its output needs emptyLike's zeros.
 */
export function uninitLike(shape: Shape, dtype: DType): Tensor {
  return new Tensor(allocUninitialized(dtype, shapeSize(shape)), shape);
}

export function floatData(t: Tensor): FloatArray {
  return t.data as FloatArray;
}

/** Accepts an index tensor or a plain Int32Array. */
export function indexData(op: string, idx: Tensor | Int32Array, what = 'indices'): Int32Array {
  if (idx instanceof Int32Array) return idx;
  assertInt(op, idx, what);
  return idx.data as Int32Array;
}
