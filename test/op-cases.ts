// The table of op cases that every backend runs: inputs, which are differentiable, the op.

import { ops, Rng, Tensor, UNARY_OPS, type DType } from '../src/index.js';
import { randTensor } from './helpers.js';
import { expertMLP } from '../src/ops/expert-mlp.js';

export interface OpCase {
  name: string;
  inputs: (rng: Rng, dtype: DType) => Tensor[];
  diff: boolean[];
  fn: (xs: Tensor[]) => Tensor;
  /** Tolerances for a backend against js in float32. */
  rtol?: number;
  atol?: number;
}

const r = (shape: number[], lo = -1, hi = 1) => (rng: Rng, dtype: DType) => randTensor(rng, shape, dtype, lo, hi);
const ints = (vals: number[]) => new Int32Array(vals);

/** Values bounded away from 0, where relu and abs have a kink that finite differences cannot cross. */
function awayFromZero(shape: number[]) {
  return (rng: Rng, dtype: DType) => {
    const t = randTensor(rng, shape, dtype, 0.05, 1.5);
    for (let i = 0; i < t.size; i++) if (rng.next() < 0.5) t.data[i] = -t.data[i]!;
    return t;
  };
}

const cases: OpCase[] = [];

// Broadcasting binary ops.
const binShapes: Array<[number[], number[]]> = [
  [[3, 4], [3, 4]], [[3, 4], [4]], [[2, 1, 4], [3, 1]], [[0, 4], [4]], [[1], [1]], [[5], []], [[], [2, 3]],
];
for (const op of ['add', 'sub', 'mul', 'div'] as const) {
  for (const [sa, sb] of binShapes) {
    cases.push({
      name: `${op} ${JSON.stringify(sa)} ${JSON.stringify(sb)}`,
      inputs: (rng, dt) => [r(sa)(rng, dt), op === 'div' ? awayFromZero(sb)(rng, dt) : r(sb)(rng, dt)],
      diff: [true, true],
      fn: ([a, b]) => ops[op](a!, b!),
    });
  }
}
cases.push({ name: 'mul by a number', inputs: (rng, dt) => [r([3, 2])(rng, dt)], diff: [true], fn: ([a]) => ops.mul(a!, 2.5) });
cases.push({ name: 'number minus tensor', inputs: (rng, dt) => [r([3, 2])(rng, dt)], diff: [true], fn: ([a]) => ops.sub(1, a!) });

// Unary activations.
for (const op of UNARY_OPS) {
  for (const shape of [[7, 5], [0], [1]]) {
    const positive = op === 'log' || op === 'sqrt';
    const kink = op === 'relu' || op === 'abs';
    cases.push({
      name: `${op} ${JSON.stringify(shape)}`,
      inputs: (rng, dt) => [positive ? r(shape, 0.2, 3)(rng, dt) : kink ? awayFromZero(shape)(rng, dt) : r(shape, -3, 3)(rng, dt)],
      diff: [true],
      fn: ([x]) => ops.unary(op, x!),
    });
  }
}

// Matrix products.
for (const [m, k, n] of [[3, 4, 5], [1, 1, 1], [0, 3, 2], [3, 0, 2], [17, 33, 9]] as const) {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      cases.push({
        name: `matmul m=${m} k=${k} n=${n}${transA ? ' transA' : ''}${transB ? ' transB' : ''}`,
        inputs: (rng, dt) => [r(transA ? [k, m] : [m, k])(rng, dt), r(transB ? [n, k] : [k, n])(rng, dt)],
        diff: [true, true],
        fn: ([a, b]) => ops.matmul(a!, b!, { transA, transB }),
        rtol: 1e-4, atol: 1e-5,
      });
    }
  }
}
const batched: Array<[string, number[], number[], boolean, boolean]> = [
  ['batched', [2, 3, 4], [2, 4, 5], false, false],
  ['batched transB', [2, 3, 4], [2, 5, 4], false, true],
  ['batched transA', [2, 4, 3], [2, 4, 5], true, false],
  ['batch x shared matrix', [2, 3, 4], [4, 5], false, false],
  ['batch x shared matrix transB', [2, 3, 4], [5, 4], false, true],
  ['rank-4 batch x shared matrix', [2, 2, 3, 4], [4, 5], false, false],
  ['batch transA x shared matrix', [2, 4, 3], [4, 5], true, false],
  ['shared matrix x batch', [3, 4], [2, 4, 5], false, false],
];
for (const [name, sa, sb, transA, transB] of batched) {
  cases.push({
    name: `matmul ${name}`, inputs: (rng, dt) => [r(sa)(rng, dt), r(sb)(rng, dt)], diff: [true, true],
    fn: ([a, b]) => ops.matmul(a!, b!, { transA, transB }), rtol: 1e-4, atol: 1e-5,
  });
}

// Grouped matmul: groups of different sizes, including empty groups.
for (const [sizes, k, n] of [[[2, 0, 3], 4, 5], [[0, 0], 3, 2], [[1], 1, 1], [[5, 1, 0, 7], 6, 3]] as Array<[number[], number, number]>) {
  for (const transW of [false, true]) {
    const T = sizes.reduce((a, b) => a + b, 0);
    cases.push({
      name: `groupedMatmul sizes=${JSON.stringify(sizes)} k=${k} n=${n}${transW ? ' transW' : ''}`,
      inputs: (rng, dt) => [r([T, k])(rng, dt), r(transW ? [sizes.length, n, k] : [sizes.length, k, n])(rng, dt)],
      diff: [true, true],
      fn: ([x, w]) => ops.groupedMatmul(x!, w!, ints(sizes), { transW }),
      rtol: 1e-4, atol: 1e-5,
    });
  }
}

// Reductions and softmax.
for (const op of ['sum', 'mean', 'max'] as const) {
  for (const axis of [0, 1, 2, -1, undefined]) {
    for (const keepDim of [false, true]) {
      cases.push({
        name: `${op} [3,4,5] axis=${axis} keepDim=${keepDim}`,
        inputs: (rng, dt) => [r([3, 4, 5])(rng, dt)], diff: [true],
        fn: ([x]) => ops[op](x!, axis, keepDim), rtol: 1e-5, atol: 1e-6,
      });
    }
  }
}
cases.push({ name: 'sum [0,3] axis=1', inputs: (rng, dt) => [r([0, 3])(rng, dt)], diff: [true], fn: ([x]) => ops.sum(x!, 1) });
cases.push({ name: 'sum [1] all', inputs: (rng, dt) => [r([1])(rng, dt)], diff: [true], fn: ([x]) => ops.sum(x!) });
for (const f of ['softmax', 'logSoftmax'] as const) {
  for (const [shape, axis] of [[[3, 5], -1], [[2, 3, 4], 1], [[2, 3, 4], 0], [[1, 1], -1], [[0, 4], -1]] as Array<[number[], number]>) {
    cases.push({
      name: `${f} ${JSON.stringify(shape)} axis=${axis}`, inputs: (rng, dt) => [r(shape, -3, 3)(rng, dt)], diff: [true],
      fn: ([x]) => ops[f](x!, axis),
    });
  }
}

// Top-k.
for (const [shape, k] of [[[4, 6], 1], [[4, 6], 3], [[4, 6], 6], [[4, 6], 0], [[1, 1], 1], [[2, 3, 5], 2], [[0, 5], 2]] as Array<[number[], number]>) {
  cases.push({
    name: `topk ${JSON.stringify(shape)} k=${k}`, inputs: (rng, dt) => [r(shape)(rng, dt)], diff: [true],
    fn: ([x]) => ops.topk(x!, k).values,
  });
  cases.push({
    name: `topk indices ${JSON.stringify(shape)} k=${k}`, inputs: (rng, dt) => [r(shape)(rng, dt)], diff: [false],
    fn: ([x]) => ops.tensor(Float32Array.from(ops.topk(x!, k).indices.data), [...ops.topk(x!, k).indices.shape]),
  });
}

// Row gathers and scatters, embedding.
cases.push({ name: 'gatherRows repeats', inputs: (rng, dt) => [r([5, 3])(rng, dt)], diff: [true], fn: ([x]) => ops.gatherRows(x!, ints([4, 0, 4, 2])) });
cases.push({ name: 'gatherRows no indices', inputs: (rng, dt) => [r([5, 3])(rng, dt)], diff: [true], fn: ([x]) => ops.gatherRows(x!, ints([])) });
cases.push({ name: 'gatherRows [1,1]', inputs: (rng, dt) => [r([1, 1])(rng, dt)], diff: [true], fn: ([x]) => ops.gatherRows(x!, ints([0, 0])) });
cases.push({ name: 'gatherRows rank 3', inputs: (rng, dt) => [r([4, 2, 3])(rng, dt)], diff: [true], fn: ([x]) => ops.gatherRows(x!, ints([3, 1])) });
cases.push({ name: 'scatterAddRows collisions', inputs: (rng, dt) => [r([4, 3])(rng, dt)], diff: [true], fn: ([x]) => ops.scatterAddRows(x!, ints([1, 1, 0, 3]), 5) });
cases.push({ name: 'scatterAddRows empty', inputs: (rng, dt) => [r([0, 3])(rng, dt)], diff: [true], fn: ([x]) => ops.scatterAddRows(x!, ints([]), 2) });
cases.push({
  name: 'embedding', inputs: (rng, dt) => [r([6, 4])(rng, dt)], diff: [true],
  fn: ([w]) => ops.embedding(w!, ops.tensor(ints([1, 5, 1, 0, 2, 2]), [2, 3])),
});

// Shape ops.
cases.push({ name: 'reshape', inputs: (rng, dt) => [r([2, 3, 4])(rng, dt)], diff: [true], fn: ([x]) => ops.mul(ops.reshape(x!, [4, -1]), 2) });
cases.push({ name: 'transpose last two', inputs: (rng, dt) => [r([2, 3, 4])(rng, dt)], diff: [true], fn: ([x]) => ops.transpose(x!) });
cases.push({ name: 'transpose perm', inputs: (rng, dt) => [r([2, 3, 4])(rng, dt)], diff: [true], fn: ([x]) => ops.transpose(x!, [2, 0, 1]) });
cases.push({ name: 'transpose empty', inputs: (rng, dt) => [r([0, 3])(rng, dt)], diff: [true], fn: ([x]) => ops.transpose(x!) });
cases.push({ name: 'slice', inputs: (rng, dt) => [r([4, 5, 3])(rng, dt)], diff: [true], fn: ([x]) => ops.slice(x!, [1, 2, 0], [2, -1, 2]) });
cases.push({ name: 'slice empty', inputs: (rng, dt) => [r([4, 5])(rng, dt)], diff: [true], fn: ([x]) => ops.slice(x!, [1, 2], [0, 3]) });
cases.push({ name: 'narrow', inputs: (rng, dt) => [r([4, 5])(rng, dt)], diff: [true], fn: ([x]) => ops.narrow(x!, 1, 1, 3) });
cases.push({
  name: 'concat axis 1', inputs: (rng, dt) => [r([2, 3])(rng, dt), r([2, 0])(rng, dt), r([2, 4])(rng, dt)], diff: [true, true, true],
  fn: (xs) => ops.concat(xs, 1),
});
cases.push({ name: 'concat axis 0', inputs: (rng, dt) => [r([1, 3])(rng, dt), r([2, 3])(rng, dt)], diff: [true, true], fn: (xs) => ops.concat(xs, 0) });

// Norms.
for (const [shape, affine] of [[[4, 8], true], [[4, 8], false], [[2, 3, 5], true], [[1, 1], true], [[0, 6], true]] as Array<[number[], boolean]>) {
  const d = shape[shape.length - 1]!;
  cases.push({
    name: `layerNorm ${JSON.stringify(shape)}${affine ? ' affine' : ''}`,
    inputs: (rng, dt) => [r(shape, -2, 2)(rng, dt), r([d], 0.5, 1.5)(rng, dt), r([d])(rng, dt)],
    diff: [true, affine, affine],
    fn: ([x, g, b]) => (affine ? ops.layerNorm(x!, g!, b!) : ops.layerNorm(x!)), rtol: 1e-4, atol: 1e-5,
  });
  cases.push({
    name: `rmsNorm ${JSON.stringify(shape)}${affine ? ' affine' : ''}`,
    inputs: (rng, dt) => [r(shape, -2, 2)(rng, dt), r([d], 0.5, 1.5)(rng, dt)],
    diff: [true, affine],
    fn: ([x, g]) => (affine ? ops.rmsNorm(x!, g!) : ops.rmsNorm(x!)), rtol: 1e-4, atol: 1e-5,
  });
}

// Losses.
for (const smoothing of [0, 0.1]) {
  cases.push({
    name: `crossEntropy smoothing=${smoothing}`, inputs: (rng, dt) => [r([5, 7], -2, 2)(rng, dt)], diff: [true],
    fn: ([x]) => ops.crossEntropy(x!, ints([0, 6, 3, 3, 1]), { labelSmoothing: smoothing }),
  });
}
cases.push({
  name: 'crossEntropy ignoreIndex', inputs: (rng, dt) => [r([4, 3], -2, 2)(rng, dt)], diff: [true],
  fn: ([x]) => ops.crossEntropy(x!, ints([2, -100, 0, -100]), { labelSmoothing: 0.2 }),
});
cases.push({ name: 'crossEntropy [1,1]', inputs: (rng, dt) => [r([1, 1])(rng, dt)], diff: [true], fn: ([x]) => ops.crossEntropy(x!, ints([0])) });
cases.push({ name: 'mseLoss', inputs: (rng, dt) => [r([3, 4])(rng, dt), r([3, 4])(rng, dt)], diff: [true, true], fn: ([a, b]) => ops.mseLoss(a!, b!) });
cases.push({
  name: 'dropout (seeded)', inputs: (rng, dt) => [r([6, 7])(rng, dt)], diff: [true],
  fn: ([x]) => ops.dropout(x!, 0.3, { rng: new Rng(11) }),
});

// The expert MLP (routed top-2 with gates, an empty group): its backward runs activationBackwardRows.
for (const act of ['gelu', 'geluTanh', 'silu'] as const) {
  cases.push({
    name: `expertMLP ${act} routed with gates`,
    inputs: (rng, dt) => [r([4, 3], -2, 2)(rng, dt), r([3, 3, 5])(rng, dt), r([3, 5, 3])(rng, dt), r([8], 0.1, 1)(rng, dt)],
    diff: [true, true, true, true],
    fn: ([x, w1, w2, g]) => expertMLP(x!, ints([3, 0, 5]), act, { w1: w1!, w2: w2! }, { rowIndex: ints([0, 1, 3, 2, 0, 1, 3, 2]), gates: g! }),
    rtol: 1e-4, atol: 1e-5,
  });
}

export const OP_CASES: readonly OpCase[] = cases;
