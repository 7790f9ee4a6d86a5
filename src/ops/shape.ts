// Shape ops: reshape (a view), transpose/permute, slice and concat (strided copies), with gradients.

import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { normalizeAxis, shapeSize, shapeStr, stridesOf, type Shape } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import { emptyLike } from './util.js';

/** Same data, new shape; one dimension may be -1 (inferred). */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const s = [...shape];
  const infer = s.indexOf(-1);
  if (infer !== s.lastIndexOf(-1)) throw new Error(`reshape: more than one -1 in ${shapeStr(shape)}`);
  if (infer >= 0) {
    const known = s.reduce((a, d, i) => (i === infer ? a : a * d), 1);
    if (known === 0 || x.size % known !== 0) throw new Error(`reshape: cannot infer -1 in ${shapeStr(shape)} for ${x.size} elements (from ${shapeStr(x.shape)})`);
    s[infer] = x.size / known;
  }
  for (const d of s) if (!Number.isInteger(d) || d < 0) throw new Error(`reshape: invalid shape ${shapeStr(shape)}`);
  if (shapeSize(s) !== x.size) throw new Error(`reshape: cannot reshape ${shapeStr(x.shape)} (${x.size} elements) to ${shapeStr(shape)}`);
  const out = new Tensor(x.data, s);
  return record(out, 'reshape', [x], (g) => [new Tensor(g.data, x.shape)]);
}

function copy(src: Tensor, srcOffset: number, srcStrides: readonly number[], dst: Tensor, dstOffset: number, dstStrides: readonly number[], shape: readonly number[]): void {
  kernel('copyStrided')(src.data, srcOffset, srcStrides, dst.data, dstOffset, dstStrides, shape);
}

/** Permutes axes; without perm, swaps the last two. */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const r = x.rank;
  const p = perm ? perm.map((a) => normalizeAxis('transpose', a, r)) : [...Array(r).keys()].map((i) => (i === r - 2 ? r - 1 : i === r - 1 ? r - 2 : i));
  if (r < 2 && !perm) throw new Error(`transpose: needs rank >= 2 to swap the last two axes, got ${shapeStr(x.shape)}`);
  if (p.length !== r || new Set(p).size !== r) throw new Error(`transpose: permutation [${perm?.join(', ')}] does not fit shape ${shapeStr(x.shape)}`);
  const outShape = p.map((a) => x.shape[a]!);
  const xs = stridesOf(x.shape);
  const out = emptyLike(outShape, x.dtype);
  copy(x, 0, p.map((a) => xs[a]!), out, 0, stridesOf(outShape), outShape);
  const inv = new Array<number>(r);
  p.forEach((a, i) => { inv[a] = i; });
  return record(out, 'transpose', [x], (g) => [transpose(g, inv)]);
}

/** The block starting at `begin` with extent `size` (-1: to the end) on every axis. */
export function slice(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor {
  const r = x.rank;
  if (begin.length !== r || size.length !== r) throw new Error(`slice: begin [${begin.join(', ')}] and size [${size.join(', ')}] must have one entry per axis of ${shapeStr(x.shape)}`);
  const sz = size.map((s, i) => (s === -1 ? x.shape[i]! - begin[i]! : s));
  for (let i = 0; i < r; i++) {
    if (!Number.isInteger(begin[i]) || !Number.isInteger(sz[i]) || begin[i]! < 0 || sz[i]! < 0 || begin[i]! + sz[i]! > x.shape[i]!) {
      throw new Error(`slice: begin [${begin.join(', ')}] size [${size.join(', ')}] is out of bounds for ${shapeStr(x.shape)} (axis ${i})`);
    }
  }
  const xs = stridesOf(x.shape);
  const offset = begin.reduce((a, b, i) => a + b * xs[i]!, 0);
  const out = emptyLike(sz, x.dtype);
  if (out.size > 0) copy(x, offset, xs, out, 0, stridesOf(sz), sz);
  return record(out, 'slice', [x], (g) => {
    const dx = emptyLike(x.shape, x.dtype);
    if (g.size > 0) copy(g, 0, stridesOf(sz), dx, offset, xs, sz);
    return [dx];
  });
}

/** `length` entries of one axis starting at `start` (torch.narrow). */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const a = normalizeAxis('narrow', axis, x.rank);
  return slice(x, x.shape.map((_, i) => (i === a ? start : 0)), x.shape.map((d, i) => (i === a ? length : d)));
}

/** Joins tensors along an axis; all other dimensions must agree. */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error('concat: needs at least one tensor');
  const first = xs[0]!;
  const a = normalizeAxis('concat', axis, first.rank);
  for (const t of xs) {
    if (t.dtype !== first.dtype || t.rank !== first.rank || t.shape.some((d, i) => i !== a && d !== first.shape[i])) {
      throw new Error(`concat: shapes ${xs.map((u) => `${u.dtype}${shapeStr(u.shape)}`).join(', ')} do not match outside axis ${axis}`);
    }
  }
  const outShape = first.shape.map((d, i) => (i === a ? xs.reduce((s, t) => s + t.shape[a]!, 0) : d));
  const out = emptyLike(outShape, first.dtype);
  const os = stridesOf(outShape);
  const offsets: number[] = [];
  let at = 0;
  for (const t of xs) {
    offsets.push(at);
    if (t.size > 0) copy(t, 0, stridesOf(t.shape), out, at * os[a]!, os, t.shape);
    at += t.shape[a]!;
  }
  return record(out, 'concat', xs, (g) => xs.map((t, i) => (t.requiresGrad ? narrow(g, a, offsets[i]!, t.shape[a]!) : null)));
}
