// Tensor: a contiguous, row-major typed array with a shape, plus its autograd state.

import { allocArray, dtypeOf, type DType, type TypedArray } from './dtype.js';
import { assertValidShape, shapeSize, shapeStr, type Shape } from './shape.js';
import { backward as runBackward, type BackwardOptions, type GradNode } from './autograd.js';
import { formatValues, type FormatOptions } from './format.js';

// Node's util.inspect (console.log, the REPL) calls this; a registered symbol, so no node:util import (browsers).
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

export type NestedArray = number | NestedArray[];

export class Tensor {
  readonly shape: readonly number[];
  private _dtype: DType;
  private _data: TypedArray;
  requiresGrad = false;
  grad: Tensor | null = null;
  /** How this tensor was computed, when recorded for autograd. */
  node: GradNode | null = null;
  name: string | undefined;

  constructor(data: TypedArray, shape: Shape) {
    assertValidShape(shape, 'Tensor');
    const n = shapeSize(shape);
    if (data.length !== n) throw new Error(`Tensor: data has ${data.length} elements but shape ${shapeStr(shape)} needs ${n}`);
    this._data = data;
    this.shape = Object.freeze([...shape]);
    this._dtype = dtypeOf(data);
  }

  /** Row-major contiguous storage; length equals the product of the shape. */
  get data(): TypedArray {
    return this._data;
  }

  get dtype(): DType {
    return this._dtype;
  }

  /**
   * Converts a leaf's storage to another float dtype in place (Module.to): parameters keep their
   * identity, so optimisers and references stay valid. Not for tensors inside a recorded graph.
   */
  castInPlace(dtype: DType): this {
    if (this.node) throw new Error('castInPlace: only leaf tensors can change dtype');
    if (dtype === this._dtype) return this;
    if (dtype === 'int32' || this._dtype === 'int32') throw new Error(`castInPlace: cannot cast ${this._dtype} to ${dtype}`);
    const next = allocArray(dtype, this.size);
    next.set(this._data);
    this._data = next;
    this._dtype = dtype;
    this.grad = null;
    return this;
  }

  static empty(shape: Shape, dtype: DType = 'float32'): Tensor {
    assertValidShape(shape, 'Tensor.empty');
    return new Tensor(allocArray(dtype, shapeSize(shape)), shape);
  }

  get size(): number {
    return this.data.length;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** Marks a leaf as a parameter (or not): backward() accumulates into its .grad. */
  requireGrad(flag = true): this {
    if (flag && this.dtype === 'int32') throw new Error('requireGrad: int32 tensors cannot require gradients');
    this.requiresGrad = flag;
    return this;
  }

  /** Same data, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape);
  }

  zeroGrad(): void {
    this.grad = null;
  }

  /**
   * Back-propagates; without a gradient the tensor must hold one element (gradient 1). Ops may
   * release what they saved for backward once it has run (as PyTorch does): a second backward
   * through the same graph needs { retainGraph: true } on the first.
   */
  backward(grad?: Tensor, opts: BackwardOptions = {}): void {
    if (grad === undefined) {
      if (this.size !== 1) throw new Error(`backward: called without a gradient on a tensor of shape ${shapeStr(this.shape)}; pass a gradient or reduce to a scalar first`);
      const one = allocArray(this.dtype, 1);
      one[0] = 1;
      grad = new Tensor(one, this.shape);
    }
    runBackward(this, grad, opts);
  }

  item(): number {
    if (this.size !== 1) throw new Error(`item: tensor of shape ${shapeStr(this.shape)} has ${this.size} elements, not 1`);
    return this.data[0]!;
  }

  /** Nested JavaScript arrays (a number for rank 0), as PyTorch's `tolist()`. */
  toList(): NestedArray {
    const d = this.data;
    const shape = this.shape;
    if (shape.length === 0) return d[0]!;
    const build = (dim: number, offset: number): NestedArray[] => {
      const n = shape[dim]!;
      const out: NestedArray[] = new Array(n);
      if (dim === shape.length - 1) {
        for (let i = 0; i < n; i++) out[i] = d[offset + i]!;
        return out;
      }
      const stride = shapeSize(shape.slice(dim + 1));
      for (let i = 0; i < n; i++) out[i] = build(dim + 1, offset + i * stride);
      return out;
    };
    return build(0, 0);
  }

  /** The same nested arrays as toList() (tfjs's name). */
  toArray(): NestedArray {
    return this.toList();
  }

  /** Every element in row-major order as one flat plain array (a copy). */
  toFlatList(): number[] {
    return Array.from(this.data);
  }

  /**
   * Values in PyTorch's layout (`tensor([[ 0.5000, -1.0000], ...])`, first and last 3 entries of
   * each dimension past 1000 elements), then the shape, dtype and, when set, requiresGrad.
   */
  toString(options?: FormatOptions): string {
    const grad = this.requiresGrad ? ', requiresGrad=true' : '';
    return `${formatValues(this.data, this.shape, this.dtype, options).slice(0, -1)}, shape=${shapeStr(this.shape)}, dtype=${this.dtype}${grad})`;
  }

  [INSPECT](): string {
    return this.toString();
  }
}
