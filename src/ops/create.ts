// Creation helpers: from nested arrays or typed arrays, constants, ranges and seeded random tensors.

import { Tensor, type NestedArray } from '../tensor/tensor.js';
import { allocArray, dtypeOf, type DType, type TypedArray } from '../tensor/dtype.js';
import { assertValidShape, shapeSize, shapeStr, type Shape } from '../tensor/shape.js';
import { defaultRng, type Rng } from '../tensor/rng.js';

export interface CreateOptions {
  dtype?: DType;
  requiresGrad?: boolean;
}

function finish(t: Tensor, opts: CreateOptions): Tensor {
  if (opts.requiresGrad) t.requireGrad();
  return t;
}

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let cur: NestedArray = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0]!;
  }
  return shape;
}

function flatten(data: NestedArray, shape: number[], out: TypedArray): void {
  let k = 0;
  const visit = (x: NestedArray, dim: number): void => {
    if (dim === shape.length) {
      if (typeof x !== 'number') throw new Error(`tensor: ragged nested array (expected a number at depth ${dim}, shape ${shapeStr(shape)})`);
      out[k++] = x;
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[dim]) {
      throw new Error(`tensor: ragged nested array (expected length ${shape[dim]} at depth ${dim}, shape ${shapeStr(shape)})`);
    }
    for (const y of x) visit(y, dim + 1);
  };
  visit(data, 0);
}

/** A tensor from nested arrays, a flat array with a shape, or a typed array (used as is, not copied). */
export function tensor(data: NestedArray | TypedArray, shape?: Shape, opts: CreateOptions = {}): Tensor {
  if (ArrayBuffer.isView(data)) {
    const td = data as TypedArray;
    if (opts.dtype && opts.dtype !== dtypeOf(td)) throw new Error(`tensor: data is ${dtypeOf(td)} but dtype ${opts.dtype} was requested`);
    return finish(new Tensor(td, shape ?? [td.length]), opts);
  }
  const dtype = opts.dtype ?? 'float32';
  const inferred = inferShape(data);
  const out = allocArray(dtype, shapeSize(inferred));
  flatten(data, inferred, out);
  if (shape !== undefined) {
    assertValidShape(shape, 'tensor');
    if (shapeSize(shape) !== out.length) throw new Error(`tensor: ${out.length} values do not fill shape ${shapeStr(shape)}`);
  }
  return finish(new Tensor(out, shape ?? inferred), opts);
}

export function scalar(v: number, dtype: DType = 'float32'): Tensor {
  const d = allocArray(dtype, 1);
  d[0] = v;
  return new Tensor(d, []);
}

export function full(shape: Shape, value: number, opts: CreateOptions = {}): Tensor {
  assertValidShape(shape, 'full');
  const d = allocArray(opts.dtype ?? 'float32', shapeSize(shape));
  if (value !== 0) d.fill(value);
  return finish(new Tensor(d, shape), opts);
}

export function zeros(shape: Shape, opts: CreateOptions = {}): Tensor {
  return full(shape, 0, opts);
}

export function ones(shape: Shape, opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

export function zerosLike(t: Tensor): Tensor {
  return zeros(t.shape, { dtype: t.dtype });
}

export function arange(n: number, opts: CreateOptions = {}): Tensor {
  const d = allocArray(opts.dtype ?? 'int32', n);
  for (let i = 0; i < n; i++) d[i] = i;
  return finish(new Tensor(d, [n]), opts);
}

export interface RandomOptions extends CreateOptions {
  rng?: Rng;
}

/** Normal(mean, std) from the seeded generator (the global one unless rng is given). */
export function randn(shape: Shape, opts: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  const t = full(shape, 0, { dtype: opts.dtype ?? 'float32' });
  (opts.rng ?? defaultRng()).fillNormal(t.data as Float32Array, opts.mean ?? 0, opts.std ?? 1);
  return finish(t, opts);
}

/** Uniform in [lo, hi) from the seeded generator. */
export function rand(shape: Shape, opts: RandomOptions & { lo?: number; hi?: number } = {}): Tensor {
  const t = full(shape, 0, { dtype: opts.dtype ?? 'float32' });
  (opts.rng ?? defaultRng()).fillUniform(t.data as Float32Array, opts.lo ?? 0, opts.hi ?? 1);
  return finish(t, opts);
}

/** Uniform integers in [0, high). */
export function randint(shape: Shape, high: number, opts: RandomOptions = {}): Tensor {
  const t = full(shape, 0, { dtype: 'int32' });
  const rng = opts.rng ?? defaultRng();
  const d = t.data;
  for (let i = 0; i < d.length; i++) d[i] = rng.int(high);
  return t;
}
