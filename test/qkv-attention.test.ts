// qkvAttention (a decode step's attention after the qkv product in one kernel): the native kernel
// equals the js reference (float32 and f16 caches, biases, both QK-norm modes, GQA, a window,
// several new rows), the cache holds what kvWrite writes, and bad input gets a named error.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/tensor/rng.js';
import { withBackend, kernel } from '../src/kernels/registry.js';
import { backendsUnderTest, maxDiff } from './helpers.js';

interface Setup {
  T: number;
  H: number;
  G: number;
  hd: number;
  P: number;
  maxLen: number;
  window: number;
  normMode: number;
  bias: boolean;
  half: boolean;
}

const rand = (rng: Rng, n: number): Float32Array => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);

/** Runs qkvAttention on a cache whose first P positions hold random keys and values; returns out and the cache. */
function run(backend: string, s: Setup, seed: number): { out: Float32Array; keys: Float32Array | Uint16Array; values: Float32Array | Uint16Array } {
  const rng = new Rng(seed);
  const { T, H, G, hd, P, maxLen } = s;
  const row = (H + 2 * G) * hd;
  const qkv = rand(rng, T * row);
  const bias = (n: number): Float32Array | null => (s.bias ? rand(rng, n) : null);
  const qBias = bias(H * hd);
  const kBias = bias(G * hd);
  const vBias = bias(G * hd);
  const qNorm = s.normMode ? Float32Array.from(rand(rng, s.normMode === 1 ? H * hd : hd), (v) => 1 + 0.5 * v) : null;
  const kNorm = s.normMode ? Float32Array.from(rand(rng, s.normMode === 1 ? G * hd : hd), (v) => 1 + 0.5 * v) : null;
  const cos = new Float32Array(T * hd);
  const sin = new Float32Array(T * hd);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < hd / 2; j++) {
      const a = (P + t) * Math.pow(10000, (-2 * j) / hd);
      cos[t * hd + j] = cos[t * hd + j + hd / 2] = Math.cos(a);
      sin[t * hd + j] = sin[t * hd + j + hd / 2] = Math.sin(a);
    }
  }
  const past = rand(rng, G * maxLen * hd);
  const pastV = rand(rng, G * maxLen * hd);
  return withBackend(backend, () => {
    const mk = (): Float32Array | Uint16Array => (s.half ? new Uint16Array(G * maxLen * hd) : new Float32Array(G * maxLen * hd));
    const keys = mk();
    const values = mk();
    // the first P positions through kvWrite (the cache's own writer), as [P, G, hd] rows
    const rows = (src: Float32Array): Float32Array => {
      const r = new Float32Array(P * G * hd);
      for (let p = 0; p < P; p++) for (let g = 0; g < G; g++) r.set(src.subarray((g * maxLen + p) * hd, (g * maxLen + p + 1) * hd), (p * G + g) * hd);
      return r;
    };
    kernel('kvWrite')(rows(past), keys, P, G, hd, maxLen, 0);
    kernel('kvWrite')(rows(pastV), values, P, G, hd, maxLen, 0);
    const out = new Float32Array(T * H * hd);
    kernel('qkvAttention')(qkv, qBias, kBias, vBias, qNorm, kNorm, s.normMode, 1e-5, cos, sin, keys, values, out, T, H, G, hd, maxLen, P, s.window,
      1 / Math.sqrt(hd));
    return { out, keys, values };
  });
}

describe('qkvAttention: native = js reference', () => {
  const setups: Array<[string, Setup]> = [
    ['decode, MHA, full QK-norm', { T: 1, H: 4, G: 4, hd: 16, P: 7, maxLen: 16, window: 0, normMode: 1, bias: false, half: false }],
    ['decode, GQA, biases, per-head norm, f16 cache', { T: 1, H: 8, G: 2, hd: 32, P: 20, maxLen: 32, window: 0, normMode: 2, bias: true, half: true }],
    ['3 rows, window 4, no norm', { T: 3, H: 4, G: 1, hd: 8, P: 9, maxLen: 16, window: 4, normMode: 0, bias: false, half: false }],
    ['first step (P = 0), 5 rows', { T: 5, H: 2, G: 2, hd: 64, P: 0, maxLen: 8, window: 0, normMode: 1, bias: true, half: true }],
  ];
  for (const [what, s] of setups) {
    test(what, (t) => {
      if (!backendsUnderTest().includes('native')) return t.skip('native backend not built');
      const js = run('js', s, 17);
      const nat = run('native', s, 17);
      const diff = maxDiff(js.out, nat.out);
      assert.ok(diff <= 2e-6, `${what}: max |native - js| out = ${diff}`);
      // the new positions were written to the cache; the old ones kept
      assert.ok(maxDiff(js.keys, nat.keys) <= (s.half ? 1 : 2e-6), `${what}: caches differ`);
      const scale = Math.max(...Array.from(nat.out, Math.abs));
      assert.ok(scale > 0.01, 'attention output is not trivially zero');
    });
  }
});

describe('qkvAttention: bad input is refused with a named error', () => {
  for (const backend of backendsUnderTest()) {
    test(backend, () => {
      withBackend(backend, () => {
        const H = 2;
        const G = 1;
        const hd = 8;
        const maxLen = 4;
        const qkv = new Float32Array((H + 2 * G) * hd);
        const cs = new Float32Array(hd);
        const keys = new Float32Array(G * maxLen * hd);
        const out = new Float32Array(H * hd);
        const k = kernel('qkvAttention');
        const call = (o: Partial<{ qkv: Float32Array; P: number; normMode: number; hd: number; qBias: Float32Array }>): void =>
          k(o.qkv ?? qkv, o.qBias ?? null, null, null, null, null, o.normMode ?? 0, 1e-5, cs, cs, keys, keys.slice(), out, 1, H, G, o.hd ?? hd,
            maxLen, o.P ?? 0, 0, 1);
        assert.throws(() => call({ P: 4 }), /P \+ T = 5 positions exceed maxLen = 4/);
        assert.throws(() => call({ qkv: new Float32Array(5) }), /qkv has 5 elements/);
        assert.throws(() => call({ normMode: 1 }), /qNorm and kNorm weights are needed/);
        assert.throws(() => call({ normMode: 3 }), /normMode must be 0/);
        assert.throws(() => call({ hd: 7 }), /hd = 7 must be even/);
        assert.throws(() => call({ qBias: new Float32Array(3) }), /Bias has 3 elements|bias has 3 elements/);
        call({});
      });
    });
  }
});
