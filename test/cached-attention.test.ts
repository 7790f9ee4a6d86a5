// cachedAttention kernel: native against the js reference (double precision) and against attention
// written out with ops (scores, mask, softmax, weighted sum), for GQA, sliding windows, several new
// queries after a filled cache, and bad arguments.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, withBackend, ops } from '../src/index.js';
import { kernel } from '../src/kernels/registry.js';
import { nativeInfo } from '../src/backends/native/index.js';
import { floatToHalf, halfToFloat } from '../src/tensor/half.js';

interface Case { T: number; H: number; G: number; hd: number; maxLen: number; P: number; window: number }

function inputs(c: Case, seed: number): { q: Float32Array; keys: Float32Array; values: Float32Array } {
  const rng = new Rng(seed);
  const fill = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal());
  return { q: fill(c.T * c.H * c.hd), keys: fill(c.G * c.maxLen * c.hd), values: fill(c.G * c.maxLen * c.hd) };
}

function run(backend: 'js' | 'native', c: Case, seed: number): Float32Array {
  const { q, keys, values } = inputs(c, seed);
  const out = new Float32Array(c.T * c.H * c.hd).fill(Number.NaN);
  withBackend(backend, () => kernel('cachedAttention')(q, keys, values, out, c.T, c.H, c.G, c.hd, c.maxLen, c.P, c.window, 1 / Math.sqrt(c.hd)));
  return out;
}

/** The same attention from ops: per head, [T, L] scores, an additive mask, softmax, times V. */
function byOps(c: Case, seed: number): Float32Array {
  const { q, keys, values } = inputs(c, seed);
  const L = c.P + c.T;
  const out = new Float32Array(c.T * c.H * c.hd);
  for (let h = 0; h < c.H; h++) {
    const kv = Math.floor(h / (c.H / c.G));
    const qh = new Float32Array(c.T * c.hd);
    for (let t = 0; t < c.T; t++) qh.set(q.subarray((t * c.H + h) * c.hd, (t * c.H + h + 1) * c.hd), t * c.hd);
    const kh = new Tensor(keys.slice(kv * c.maxLen * c.hd, (kv * c.maxLen + L) * c.hd), [L, c.hd]);
    const vh = new Tensor(values.slice(kv * c.maxLen * c.hd, (kv * c.maxLen + L) * c.hd), [L, c.hd]);
    const mask = new Float32Array(c.T * L);
    for (let t = 0; t < c.T; t++) {
      for (let j = 0; j < L; j++) if (j > c.P + t || (c.window > 0 && c.P + t - j >= c.window)) mask[t * L + j] = -1e9;
    }
    const s = ops.add(ops.mul(ops.matmul(new Tensor(qh, [c.T, c.hd]), kh, { transB: true }), 1 / Math.sqrt(c.hd)), new Tensor(mask, [c.T, L]));
    const o = ops.matmul(ops.softmax(s, -1), vh).data as Float32Array;
    for (let t = 0; t < c.T; t++) out.set(o.subarray(t * c.hd, (t + 1) * c.hd), (t * c.H + h) * c.hd);
  }
  return out;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

const CASES: Array<[string, Case]> = [
  ['one decode step, MHA', { T: 1, H: 4, G: 4, hd: 16, maxLen: 40, P: 23, window: 0 }],
  ['first token (P = 0, T = 1)', { T: 1, H: 2, G: 1, hd: 8, maxLen: 4, P: 0, window: 0 }],
  ['prefill chunk after a cache, GQA 8/2', { T: 5, H: 8, G: 2, hd: 32, maxLen: 64, P: 11, window: 0 }],
  ['sliding window 6, GQA, long cache', { T: 3, H: 4, G: 2, hd: 16, maxLen: 80, P: 40, window: 6 }],
  ['window larger than the context', { T: 4, H: 2, G: 2, hd: 64, maxLen: 16, P: 2, window: 100 }],
  ['hd not a multiple of 8', { T: 2, H: 3, G: 1, hd: 12, maxLen: 9, P: 7, window: 0 }],
];

test('cachedAttention: js reference equals attention written with ops', () => {
  for (const [name, c] of CASES) {
    const d = maxDiff(withBackend('js', () => run('js', c, 1)), byOps(c, 1));
    assert.ok(d < 1e-5, `${name}: js kernel vs ops differ by ${d}`);
  }
});

test('cachedAttention: native equals the js reference', { skip: nativeInfo() ? false : 'native addon not built' }, () => {
  for (const [name, c] of CASES) {
    const a = run('js', c, 2);
    const b = run('native', c, 2);
    assert.ok(b.every(Number.isFinite), `${name}: native output holds a non-finite value`);
    const d = maxDiff(a, b);
    assert.ok(d < 2e-6, `${name}: native vs js differ by ${d}`);
  }
});

test('cachedAttention: T = 0 writes nothing; bad arguments are refused by name', () => {
  for (const backend of nativeInfo() ? (['js', 'native'] as const) : (['js'] as const)) {
    withBackend(backend, () => {
      const k = kernel('cachedAttention');
      const keys = new Float32Array(2 * 8 * 4);
      const out = new Float32Array(0);
      k(new Float32Array(0), keys, keys, out, 0, 2, 2, 4, 8, 3, 0, 0.5);
      assert.throws(() => k(new Float32Array(12), keys, keys, new Float32Array(12), 1, 3, 2, 4, 8, 3, 0, 0.5), /not a multiple of G/);
      assert.throws(() => k(new Float32Array(8), keys, keys, new Float32Array(8), 1, 2, 2, 4, 8, 8, 0, 0.5), /exceed maxLen/);
    });
  }
});

// A half-precision cache: keys and values as f16 bit patterns (Uint16Array).
function toHalfArray(x: Float32Array): Uint16Array {
  return Uint16Array.from(x, (v) => floatToHalf(v));
}

test('cachedAttention over an f16 cache equals the float32 kernel over the same values widened (js and native)', () => {
  for (const backend of nativeInfo() ? (['js', 'native'] as const) : (['js'] as const)) {
    for (const [name, c] of CASES) {
      const { q, keys, values } = inputs(c, 3);
      const kh = toHalfArray(keys);
      const vh = toHalfArray(values);
      const widened = (h: Uint16Array): Float32Array => Float32Array.from(h, (b) => halfToFloat(b));
      const want = new Float32Array(c.T * c.H * c.hd);
      withBackend('js', () => kernel('cachedAttention')(q, widened(kh), widened(vh), want, c.T, c.H, c.G, c.hd, c.maxLen, c.P, c.window, 1 / Math.sqrt(c.hd)));
      const got = new Float32Array(c.T * c.H * c.hd).fill(Number.NaN);
      withBackend(backend, () => kernel('cachedAttention')(q, kh, vh, got, c.T, c.H, c.G, c.hd, c.maxLen, c.P, c.window, 1 / Math.sqrt(c.hd)));
      const d = maxDiff(got, want);
      assert.ok(d < 2e-6, `${backend} ${name}: f16 cache vs widened float32 differ by ${d}`);
      // and the f16 rounding itself stays small against the float32 cache (values ~N(0, 1))
      const exact = run('js', c, 3);
      assert.ok(maxDiff(got, exact) < 5e-3, `${backend} ${name}: f16 cache far from float32: ${maxDiff(got, exact)}`);
    }
  }
});

test('kvWrite: rows [T, G, hd] land head-major at pos, rounded to nearest-even f16 in a Uint16Array; bad sizes refused', () => {
  const T = 3, G = 2, hd = 12, maxLen = 7, pos = 4;
  const rng = new Rng(5);
  // values around f16 rounding ties and beyond its range too
  const src = Float32Array.from({ length: T * G * hd }, (_, i) => (i % 7 === 0 ? 1 + 2 ** -11 : i % 11 === 0 ? 70000 : rng.normal() * 3));
  for (const backend of nativeInfo() ? (['js', 'native'] as const) : (['js'] as const)) {
    withBackend(backend, () => {
      const f = new Float32Array(G * maxLen * hd).fill(-7);
      const h = new Uint16Array(G * maxLen * hd).fill(0xbeef);
      kernel('kvWrite')(src, f, T, G, hd, maxLen, pos);
      kernel('kvWrite')(src, h, T, G, hd, maxLen, pos);
      for (let g = 0; g < G; g++) {
        for (let p = 0; p < maxLen; p++) {
          for (let i = 0; i < hd; i++) {
            const at = (g * maxLen + p) * hd + i;
            if (p < pos) {
              assert.equal(f[at], -7, `${backend}: position ${p} before pos was written`);
              assert.equal(h[at], 0xbeef);
              continue;
            }
            const v = src[((p - pos) * G + g) * hd + i]!;
            assert.equal(f[at], v, `${backend}: float32 g=${g} p=${p} i=${i}`);
            assert.equal(h[at], floatToHalf(v), `${backend}: f16 g=${g} p=${p} i=${i} of ${v}`);
          }
        }
      }
      assert.throws(() => kernel('kvWrite')(src, h, T, G, hd, maxLen, maxLen - 2), /exceed maxLen/);
    });
  }
});
