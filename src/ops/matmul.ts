// Matrix products: plain and batched matmul (either operand transposed) and the grouped
// matmul over variable-size row groups that runs every expert of an MoE layer in one call.

import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/autograd.js';
import { shapeStr, shapesEqual } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import { assertFloat, assertSameDtype, emptyLike, floatData, indexData, uninitLike } from './util.js';

export interface MatmulOptions {
  /** Use A's last two axes transposed. */
  transA?: boolean;
  /** Use B's last two axes transposed. */
  transB?: boolean;
}

interface Plan {
  batch: number;
  batchShape: number[];
  m: number;
  n: number;
  k: number;
  aBatched: boolean;
  bBatched: boolean;
}

function plan(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Plan {
  const fail = (why: string): never => {
    throw new Error(`matmul: ${why} (A ${shapeStr(a.shape)}${transA ? ' transposed' : ''}, B ${shapeStr(b.shape)}${transB ? ' transposed' : ''})`);
  };
  if (a.rank < 2 || b.rank < 2) fail('both operands need rank >= 2');
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const m = transA ? ac : ar;
  const k = transA ? ar : ac;
  const kb = transB ? bc : br;
  const n = transB ? br : bc;
  if (k !== kb) fail(`inner dimensions differ: ${k} vs ${kb}`);
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const aBatched = aBatch.length > 0;
  const bBatched = bBatch.length > 0;
  if (aBatched && bBatched && !shapesEqual(aBatch, bBatch)) fail('batch dimensions differ');
  const batchShape = aBatched ? aBatch : bBatch;
  const batch = batchShape.reduce((x, y) => x * y, 1);
  return { batch, batchShape, m, n, k, aBatched, bBatched };
}

function run(a: Tensor, b: Tensor, p: Plan, transA: boolean, transB: boolean, outShape: readonly number[]): Tensor {
  const out = uninitLike(outShape, a.dtype);
  kernel('matmul')(floatData(a), floatData(b), floatData(out), p.batch, p.m, p.n, p.k, transA, transB, p.aBatched, p.bBatched, false);
  return out;
}

/** [..., k] viewed as [rows, k]. */
function flattenRows(t: Tensor): Tensor {
  const shape = t.shape;
  const rows = shape.slice(0, -1).reduce((x, y) => x * y, 1);
  return new Tensor(t.data, [rows, shape[shape.length - 1]!]);
}

/** Sums the first `axes` axes away (the gradient of an operand shared across a batch). */
function sumLeading(t: Tensor, axes: number): Tensor {
  const lead = t.shape.slice(0, axes).reduce((x, y) => x * y, 1);
  const rest = t.shape.slice(axes);
  const out = emptyLike(rest, t.dtype);
  kernel('reduce')('sum', floatData(t), floatData(out), null, 1, lead, out.size);
  return out;
}

/** Raw product without recording: used by forward and by the backward closures. */
function product(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  // [..., m, k] @ [k, n]: fold A's batch axes into its rows, one GEMM instead of many.
  if (a.rank > 2 && b.rank === 2 && !transA) {
    const flatA = flattenRows(a);
    const p = plan(flatA, b, false, transB);
    return run(flatA, b, p, false, transB, [...a.shape.slice(0, -1), p.n]);
  }
  const p = plan(a, b, transA, transB);
  return run(a, b, p, transA, transB, [...p.batchShape, p.m, p.n]);
}

/** A @ B over the last two axes; batch axes must match, or one operand is a plain matrix shared by the batch. */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  assertFloat('matmul', a, b);
  assertSameDtype('matmul', a, b);
  const out = product(a, b, transA, transB);
  return record(out, 'matmul', [a, b], (g) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (a.requiresGrad) {
      da = transA ? product(b, g, transB, true) : product(g, b, false, !transB);
      if (a.rank < da.rank) da = sumLeading(da, da.rank - a.rank); // a shared across the batch
    }
    if (b.requiresGrad) {
      if (b.rank === 2 && a.rank > 2 && !transA) {
        // shared weight: flatten the batch into rows so the sum over the batch is one GEMM
        const a2 = flattenRows(a);
        const g2 = flattenRows(g);
        db = transB ? product(g2, a2, true, false) : product(a2, g2, true, false);
      } else {
        db = transB ? product(g, a, true, transA) : product(a, g, !transA, false);
        if (b.rank < db.rank) db = sumLeading(db, db.rank - b.rank);
      }
    }
    return [da, db];
  }, [a, b]);
}

/**
 * Expert GEMM over row groups: x [T, k] in groups of consecutive rows (sizes sum to T), weights
 * w [G, k, n] (or [G, n, k] with transW), out [T, n] with rows of group g multiplied by w[g].
 */
export function groupedMatmul(x: Tensor, w: Tensor, groupSizes: Tensor | Int32Array, opts: { transW?: boolean } = {}): Tensor {
  const transW = opts.transW ?? false;
  const sizes = indexData('groupedMatmul', groupSizes, 'groupSizes');
  assertFloat('groupedMatmul', x, w);
  assertSameDtype('groupedMatmul', x, w);
  // built only when a check fails: this runs once per expert projection per step
  const desc = (): string => `x ${shapeStr(x.shape)}, w ${shapeStr(w.shape)}${transW ? ' transposed' : ''}, ${sizes.length} groups`;
  if (x.rank !== 2 || w.rank !== 3) throw new Error(`groupedMatmul: x must be [T, k] and w [G, k, n] (${desc()})`);
  const G = w.shape[0]!;
  const k = transW ? w.shape[2]! : w.shape[1]!;
  const n = transW ? w.shape[1]! : w.shape[2]!;
  if (sizes.length !== G) throw new Error(`groupedMatmul: ${sizes.length} group sizes for ${G} weight groups (${desc()})`);
  if (x.shape[1] !== k) throw new Error(`groupedMatmul: x has ${x.shape[1]} columns, weights expect ${k} (${desc()})`);
  let total = 0;
  for (let g = 0; g < G; g++) {
    const s = sizes[g]!;
    if (s < 0) throw new Error(`groupedMatmul: group ${g} has negative size ${s} (${desc()})`);
    total += s;
  }
  if (total !== x.shape[0]) throw new Error(`groupedMatmul: group sizes sum to ${total}, x has ${x.shape[0]} rows (${desc()})`);
  const out = uninitLike([x.shape[0]!, n], x.dtype);
  kernel('groupedMatmul')(floatData(x), floatData(w), sizes, floatData(out), k, n, transW);
  const sizesCopy = Int32Array.from(sizes); // the caller may reuse its buffer before backward
  return record(out, 'groupedMatmul', [x, w], (g) => {
    let dx: Tensor | null = null;
    let dw: Tensor | null = null;
    if (x.requiresGrad) {
      dx = uninitLike(x.shape, x.dtype);
      // dx_g = g_g @ w_g^T: read w with the opposite transposition, k and n swapped
      kernel('groupedMatmul')(floatData(g), floatData(w), sizesCopy, floatData(dx), n, k, !transW);
    }
    if (w.requiresGrad) {
      dw = uninitLike(w.shape, w.dtype);
      if (transW) kernel('groupedMatmulWeightGrad')(floatData(g), floatData(x), sizesCopy, floatData(dw), n, k);
      else kernel('groupedMatmulWeightGrad')(floatData(x), floatData(g), sizesCopy, floatData(dw), k, n);
    }
    return [dx, dw];
  }, [x, w, sizesCopy]);
}
