// Elementwise ops: broadcasting add/sub/mul/div and unary activations, with their gradients.

import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { broadcastShapes, shapesEqual } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import type { BinaryOp, UnaryOp } from '../kernels/kernels.js';
import { assertFloat, assertSameDtype, emptyLike, floatData, uninitLike } from './util.js';
import { scalar } from './create.js';

export type Operand = Tensor | number;

function asTensor(x: Operand, like: Tensor): Tensor {
  return typeof x === 'number' ? scalar(x, like.dtype) : x;
}

/** Sums a broadcast gradient back to the shape of the input it came from. */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (shapesEqual(g.shape, shape)) return g;
  const out = emptyLike(shape, g.dtype);
  kernel('sumToShape')(floatData(g), g.shape, floatData(out), shape);
  return out;
}

function rawBinary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShapes(op, a.shape, b.shape);
  const out = uninitLike(shape, a.dtype);
  kernel('binary')(op, floatData(a), a.shape, floatData(b), b.shape, floatData(out), shape);
  return out;
}

function binaryOp(op: BinaryOp, x: Operand, y: Operand): Tensor {
  if (typeof x === 'number' && typeof y === 'number') throw new Error(`${op}: at least one operand must be a tensor`);
  const a = asTensor(x, (typeof x === 'number' ? y : x) as Tensor);
  const b = asTensor(y, a);
  assertFloat(op, a, b);
  assertSameDtype(op, a, b);
  const out = rawBinary(op, a, b);
  const saved = op === 'mul' ? [a, b] : op === 'div' ? [b, out] : [];
  return record(out, op, [a, b], (g) => {
    switch (op) {
      case 'add': return [sumTo(g, a.shape), sumTo(g, b.shape)];
      case 'sub': return [sumTo(g, a.shape), b.requiresGrad ? sumTo(rawUnary('neg', g), b.shape) : null];
      case 'mul': return [
        a.requiresGrad ? sumTo(rawBinary('mul', g, b), a.shape) : null,
        b.requiresGrad ? sumTo(rawBinary('mul', g, a), b.shape) : null,
      ];
      case 'div': return [
        a.requiresGrad ? sumTo(rawBinary('div', g, b), a.shape) : null,
        // d(a/b)/db = -a/b^2 = -out/b
        b.requiresGrad ? sumTo(rawUnary('neg', rawBinary('div', rawBinary('mul', g, out), b)), b.shape) : null,
      ];
    }
  }, saved);
}

export const add = (a: Operand, b: Operand): Tensor => binaryOp('add', a, b);
export const sub = (a: Operand, b: Operand): Tensor => binaryOp('sub', a, b);
export const mul = (a: Operand, b: Operand): Tensor => binaryOp('mul', a, b);
export const div = (a: Operand, b: Operand): Tensor => binaryOp('div', a, b);

function rawUnary(op: UnaryOp, x: Tensor): Tensor {
  const out = uninitLike(x.shape, x.dtype);
  kernel('unary')(op, floatData(x), floatData(out));
  return out;
}

function unaryOp(op: UnaryOp, x: Tensor): Tensor {
  assertFloat(op, x);
  const y = rawUnary(op, x);
  return record(y, op, [x], (g) => {
    const dx = uninitLike(x.shape, x.dtype);
    kernel('unaryBackward')(op, floatData(x), floatData(y), floatData(g), floatData(dx));
    return [dx];
  }, [x, y]);
}

export const neg = (x: Tensor): Tensor => unaryOp('neg', x);
export const exp = (x: Tensor): Tensor => unaryOp('exp', x);
export const log = (x: Tensor): Tensor => unaryOp('log', x);
export const sqrt = (x: Tensor): Tensor => unaryOp('sqrt', x);
export const square = (x: Tensor): Tensor => unaryOp('square', x);
export const abs = (x: Tensor): Tensor => unaryOp('abs', x);
export const tanh = (x: Tensor): Tensor => unaryOp('tanh', x);
export const sigmoid = (x: Tensor): Tensor => unaryOp('sigmoid', x);
export const softplus = (x: Tensor): Tensor => unaryOp('softplus', x);
export const relu = (x: Tensor): Tensor => unaryOp('relu', x);
/** Exact GELU, x * Phi(x) (PyTorch's default). */
export const gelu = (x: Tensor): Tensor => unaryOp('gelu', x);
/** GELU with the tanh approximation (PyTorch's approximate='tanh'). */
export const geluTanh = (x: Tensor): Tensor => unaryOp('geluTanh', x);
export const silu = (x: Tensor): Tensor => unaryOp('silu', x);
/** Standard normal CDF. */
export const normcdf = (x: Tensor): Tensor => unaryOp('normcdf', x);

export function unary(op: UnaryOp, x: Tensor): Tensor {
  return unaryOp(op, x);
}
