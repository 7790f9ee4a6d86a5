// Test helpers: backends under test, random tensors, closeness checks, float64 finite differences.

import assert from 'node:assert/strict';
import { availableBackends, Rng, Tensor, noGrad, ops, type DType } from '../src/index.js';
import type { MoELayer, MoEOutput } from '../src/moe/layer.js';

/** Every backend that loads here; CI sets MOE_REQUIRE_NATIVE=1 so a broken native build fails. */
export function backendsUnderTest(): string[] {
  return availableBackends();
}

export function randTensor(rng: Rng, shape: number[], dtype: DType = 'float32', lo = -1, hi = 1): Tensor {
  const t = Tensor.empty(shape, dtype);
  rng.fillUniform(t.data as Float32Array, lo, hi);
  return t;
}

/** Same values in another dtype (a copy). */
export function cast(t: Tensor, dtype: DType): Tensor {
  const out = Tensor.empty(t.shape, dtype);
  out.data.set(t.data);
  return out;
}

export function assertClose(actual: Tensor | ArrayLike<number>, expected: Tensor | ArrayLike<number>, rtol: number, atol: number, what: string): void {
  const a = actual instanceof Tensor ? actual.data : actual;
  const e = expected instanceof Tensor ? expected.data : expected;
  if (actual instanceof Tensor && expected instanceof Tensor) {
    assert.deepEqual([...actual.shape], [...expected.shape], `${what}: shape`);
  }
  assert.equal(a.length, e.length, `${what}: length`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = e[i]!;
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (Number.isNaN(x) && Number.isNaN(y)) continue;
      assert.fail(`${what}: NaN mismatch at ${i}: ${x} vs ${y}`);
    }
    const excess = Math.abs(x - y) - (atol + rtol * Math.abs(y));
    if (excess > worstExcess) { worstExcess = excess; worst = i; }
  }
  if (worst >= 0) assert.fail(`${what}: element ${worst}: got ${a[worst]}, expected ${e[worst]} (rtol ${rtol}, atol ${atol})`);
}

/**
 * Checks the analytic gradients of fn at inputs (float64, on the current backend) against central
 * finite differences of L = sum(fn(inputs) * W) for a random W; samples up to maxPerInput entries.
 */
export function checkGradients(fn: (xs: Tensor[]) => Tensor, inputs: Tensor[], diff: boolean[], rng: Rng, what: string, maxPerInput = 64): void {
  for (const [i, x] of inputs.entries()) {
    x.requiresGrad = diff[i]!;
    x.grad = null;
  }
  const out = fn(inputs);
  const w = randTensor(rng, [...out.shape], 'float64');
  if (!out.requiresGrad) {
    assert.ok(!diff.some((d) => d), `${what}: output does not require grad`);
    return;
  }
  ops.sum(ops.mul(out, w)).backward();
  const h = 1e-6;
  const f = (): number => noGrad(() => {
    const o = fn(inputs);
    let s = 0;
    for (let j = 0; j < o.size; j++) s += o.data[j]! * w.data[j]!;
    return s;
  });
  for (const [i, x] of inputs.entries()) {
    if (!diff[i]) continue;
    assert.ok(x.grad, `${what}: input ${i} received no gradient`);
    const n = x.size;
    const picks = n <= maxPerInput ? [...Array(n).keys()] : [...Array(maxPerInput)].map(() => rng.int(n));
    for (const j of picks) {
      const orig = x.data[j]!;
      x.data[j] = orig + h;
      const fp = f();
      x.data[j] = orig - h;
      const fm = f();
      x.data[j] = orig;
      const fd = (fp - fm) / (2 * h);
      const an: number = x.grad.data[j]!;
      const tol = 1e-6 + 1e-5 * Math.abs(fd);
      if (!(Math.abs(an - fd) <= tol)) {
        assert.fail(`${what}: d/d input ${i}[${j}]: analytic ${an}, finite difference ${fd}`);
      }
    }
  }
}

/**
 * Checks the gradients that one backward of loss() left in each tensor's .grad against central
 * finite differences of loss() (float64 tensors), at about `samples` evenly spaced entries per
 * tensor. A tensor without .grad is one the loss does not use: its differences must be 0.
 */
export function checkAccumulatedGradients(tensors: ReadonlyArray<readonly [string, Tensor]>, loss: () => Tensor,
  opts: { samples?: number; rtol?: number; atol?: number; label?: string } = {}): void {
  const h = 1e-6;
  const rtol = opts.rtol ?? 1e-5;
  const atol = opts.atol ?? 1e-6;
  const label = opts.label ? `${opts.label} ` : '';
  for (const [name, p] of tensors) {
    for (let j = 0; j < p.size; j += Math.max(1, Math.floor(p.size / (opts.samples ?? 8)))) {
      const orig = p.data[j]!;
      p.data[j] = orig + h;
      const fp = noGrad(loss).item();
      p.data[j] = orig - h;
      const fm = noGrad(loss).item();
      p.data[j] = orig;
      const fd = (fp - fm) / (2 * h);
      const an = p.grad ? p.grad.data[j]! : 0;
      if (!(Math.abs(an - fd) <= atol + rtol * Math.abs(fd))) assert.fail(`${label}${name}[${j}]: analytic ${an}, finite difference ${fd}`);
    }
  }
}

/** Largest |a[i] - b[i]| (Infinity when either side holds NaN); the lengths must agree. */
export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** What a MoE layer's forward (and backward, if run) left, as plain numbers for bit-for-bit comparisons. */
export interface LayerStep {
  y: number[];
  aux: number;
  losses: Record<string, number>;
  metrics: unknown;
  dx: number[];
  grads: Array<[string, number[] | null]>;
}

/** The layer's output `out` for input `x` (whose gradient, if any, is dx) and every parameter's gradient. */
export function layerStep(layer: MoELayer, out: MoEOutput, x: Tensor): LayerStep {
  return {
    y: [...out.y.data], aux: out.auxLoss.item(), metrics: out.metrics,
    losses: Object.fromEntries(Object.entries(out.losses).map(([k, v]) => [k, v.item()])),
    dx: x.grad ? [...x.grad.data] : [],
    grads: layer.namedParameters().map(([n, p]) => [n, p.grad ? [...p.grad.data] : null]),
  };
}
