// Reference elementwise kernels: broadcasting binary ops, unary activations and their
// derivatives, broadcast/sum-to-shape (adjoints of each other) and strided copies.

import type { KernelImpls, UnaryOp } from '../../kernels/kernels.js';
import type { TypedArray } from '../../tensor/dtype.js';
import { gelu, geluGrad, geluTanh, geluTanhGrad, normcdf, normpdf, sigmoid, softplus } from './math.js';

/** Strides of `shape` (left-padded with 1s to `rank`) with 0 on broadcast dimensions. */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const rank = outShape.length;
  const s = new Array<number>(rank).fill(0);
  let acc = 1;
  for (let i = rank - 1; i >= 0; i--) {
    const d = shape[shape.length - rank + i] ?? 1;
    s[i] = d === 1 ? 0 : acc;
    acc *= d;
  }
  return s;
}

/**
 * Calls body(outIndex, aIndex, bIndex, count, aStep, bStep) once per innermost run: the shared
 * walk behind broadcasting kernels.
 */
function walk2(outShape: readonly number[], sa: number[], sb: number[],
  body: (o: number, ia: number, ib: number, n: number, da: number, db: number) => void): void {
  const rank = outShape.length;
  if (rank === 0) { body(0, 0, 0, 1, 0, 0); return; }
  const total = outShape.reduce((x, y) => x * y, 1);
  if (total === 0) return;
  const last = outShape[rank - 1]!;
  const idx = new Array<number>(rank).fill(0);
  let ia = 0;
  let ib = 0;
  for (let o = 0; o < total; o += last) {
    body(o, ia, ib, last, sa[rank - 1]!, sb[rank - 1]!);
    // advance the multi-index over all but the last axis
    for (let d = rank - 2; d >= 0; d--) {
      idx[d]!++;
      ia += sa[d]!;
      ib += sb[d]!;
      if (idx[d]! < outShape[d]!) break;
      ia -= sa[d]! * outShape[d]!;
      ib -= sb[d]! * outShape[d]!;
      idx[d] = 0;
    }
  }
}

export const binary: KernelImpls['binary'] = (op, a, aShape, b, bShape, out, outShape) => {
  const sa = broadcastStrides(aShape, outShape);
  const sb = broadcastStrides(bShape, outShape);
  walk2(outShape, sa, sb, (o, ia, ib, n, da, db) => {
    switch (op) {
      case 'add': for (let j = 0; j < n; j++) out[o + j] = a[ia + j * da]! + b[ib + j * db]!; break;
      case 'sub': for (let j = 0; j < n; j++) out[o + j] = a[ia + j * da]! - b[ib + j * db]!; break;
      case 'mul': for (let j = 0; j < n; j++) out[o + j] = a[ia + j * da]! * b[ib + j * db]!; break;
      case 'div': for (let j = 0; j < n; j++) out[o + j] = a[ia + j * da]! / b[ib + j * db]!; break;
    }
  });
};

export function unaryFn(op: UnaryOp): (x: number) => number {
  switch (op) {
    case 'neg': return (x) => -x;
    case 'exp': return Math.exp;
    case 'log': return Math.log;
    case 'sqrt': return Math.sqrt;
    case 'square': return (x) => x * x;
    case 'abs': return Math.abs;
    case 'tanh': return Math.tanh;
    case 'sigmoid': return sigmoid;
    case 'softplus': return softplus;
    case 'relu': return (x) => (x > 0 ? x : 0);
    case 'gelu': return gelu;
    case 'geluTanh': return geluTanh;
    case 'silu': return (x) => x * sigmoid(x);
    case 'normcdf': return normcdf;
  }
}

/** f'(x) from x and y = f(x). */
function unaryGradFn(op: UnaryOp): (x: number, y: number) => number {
  switch (op) {
    case 'neg': return () => -1;
    case 'exp': return (_x, y) => y;
    case 'log': return (x) => 1 / x;
    case 'sqrt': return (_x, y) => 0.5 / y;
    case 'square': return (x) => 2 * x;
    case 'abs': return (x) => (x > 0 ? 1 : x < 0 ? -1 : 0);
    case 'tanh': return (_x, y) => 1 - y * y;
    case 'sigmoid': return (_x, y) => y * (1 - y);
    case 'softplus': return (x) => sigmoid(x);
    case 'relu': return (x) => (x > 0 ? 1 : 0);
    case 'gelu': return geluGrad;
    case 'geluTanh': return geluTanhGrad;
    case 'silu': return (x) => { const s = sigmoid(x); return s * (1 + x * (1 - s)); };
    case 'normcdf': return normpdf;
  }
}

export const unary: KernelImpls['unary'] = (op, x, out) => {
  const f = unaryFn(op);
  for (let i = 0; i < x.length; i++) out[i] = f(x[i]!);
};

export const unaryBackward: KernelImpls['unaryBackward'] = (op, x, y, dy, dx) => {
  const g = unaryGradFn(op);
  for (let i = 0; i < x.length; i++) dx[i] = dy[i]! * g(x[i]!, y[i]!);
};

export const activationBackwardRows: KernelImpls['activationBackwardRows'] = (op, pre, dy, gates, act, dot, rows, n) => {
  const f = unaryFn(op);
  const g = unaryGradFn(op);
  for (let r = 0; r < rows; r++) {
    const scale = gates ? gates[r]! : 1;
    let s = 0;
    for (let i = r * n; i < (r + 1) * n; i++) {
      act[i] = f(pre[i]!);
      const y = act[i]!;  // as stored, like unary then unaryBackward
      s += dy[i]! * y;
      dy[i] = scale * dy[i]! * g(pre[i]!, y);
    }
    if (dot) dot[r] = dot[r]! + s;
  }
};

export const sumToShape: KernelImpls['sumToShape'] = (src, srcShape, dst, dstShape) => {
  dst.fill(0);
  const sd = broadcastStrides(dstShape, srcShape);
  walk2(srcShape, sd, sd, (o, id, _ib, n, dd) => {
    if (dd === 0) {
      let s = 0;
      for (let j = 0; j < n; j++) s += src[o + j]!;
      dst[id] += s;
    } else {
      for (let j = 0; j < n; j++) dst[id + j] += src[o + j]!;
    }
  });
};

export const broadcastTo: KernelImpls['broadcastTo'] = (src, srcShape, dst, dstShape, scale) => {
  const ss = broadcastStrides(srcShape, dstShape);
  walk2(dstShape, ss, ss, (o, is, _ib, n, ds) => {
    for (let j = 0; j < n; j++) dst[o + j] = scale * src[is + j * ds]!;
  });
};

/** Lowest and highest index a strided view reaches; typed arrays drop out-of-range writes silently, so check first. */
function viewBounds(offset: number, strides: readonly number[], shape: readonly number[]): [number, number] {
  let lo = offset;
  let hi = offset;
  for (let i = 0; i < shape.length; i++) {
    const span = (shape[i]! - 1) * strides[i]!;
    if (span < 0) lo += span; else hi += span;
  }
  return [lo, hi];
}

export const copyStrided: KernelImpls['copyStrided'] = (src, srcOffset, srcStrides, dst, dstOffset, dstStrides, shape) => {
  const rank = shape.length;
  if (shape.some((d) => d === 0)) return;
  for (const [name, buf, off, st] of [['source', src, srcOffset, srcStrides], ['destination', dst, dstOffset, dstStrides]] as const) {
    const [lo, hi] = viewBounds(off, st, shape);
    if (lo < 0 || hi >= buf.length) throw new Error(`copyStrided: ${name} view reaches [${lo}, ${hi}] outside its buffer of ${buf.length}`);
  }
  if (rank === 0) { dst[dstOffset] = src[srcOffset]!; return; }
  const idx = new Array<number>(rank).fill(0);
  const last = shape[rank - 1]!;
  const ls = srcStrides[rank - 1]!;
  const ld = dstStrides[rank - 1]!;
  let is = srcOffset;
  let id = dstOffset;
  for (;;) {
    copyRun(src, is, ls, dst, id, ld, last);
    let d = rank - 2;
    for (; d >= 0; d--) {
      idx[d]!++;
      is += srcStrides[d]!;
      id += dstStrides[d]!;
      if (idx[d]! < shape[d]!) break;
      is -= srcStrides[d]! * shape[d]!;
      id -= dstStrides[d]! * shape[d]!;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
};

function copyRun(src: TypedArray, is: number, ls: number, dst: TypedArray, id: number, ld: number, n: number): void {
  for (let j = 0; j < n; j++) dst[id + j * ld] = src[is + j * ls]!;
}
