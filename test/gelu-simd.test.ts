// The native addon's hand-vectorised exact GELU (gelu_simd.h): every SIMD tier this CPU runs
// against a double-precision reference in ulps over the whole float range, the special values,
// the unary kernels using it, and the one-pass backward over an expert MLP's hidden rows.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/index.js';
import { findBackend } from '../src/kernels/registry.js';
import { erf, gelu as geluJs } from '../src/backends/js/math.js';

interface GeluAddon {
  geluSimd(tier: number, backward: boolean, x: Float32Array, dy: Float32Array, out: Float32Array): void;
  activationBackwardRows(op: number, pre: Float32Array, dy: Float32Array, gates: Float32Array | null, act: Float32Array,
    dot: Float32Array | null, rows: number, n: number): void;
}

const native = findBackend('native');
const js = findBackend('js')!;
/** The addon's op code of the exact GELU (native/index.ts's UNARY_CODE). */
const GELU = 10;
const addonPath = process.env['MOE_NATIVE_ADDON'] || fileURLToPath(new URL('../../src/backends/native/addon/build/Release/moe_native.node', import.meta.url));
const addon = native && existsSync(addonPath) ? (createRequire(import.meta.url)(addonPath) as GeluAddon) : null;
const skip = (addon === null || typeof addon.geluSimd !== 'function') && 'the native addon (with geluSimd) is not built here';

/** Tiers the CPU runs: 1 baseline always, 2 AVX2+FMA and 3 AVX-512 where present (0 = the one picked). */
function tiers(): number[] {
  const out = [0, 1];
  const x = new Float32Array(1);
  for (const t of [2, 3]) {
    try {
      addon!.geluSimd(t, false, x, x, new Float32Array(1));
      out.push(t);
    } catch (e) {
      assert.match(String(e), /needs a CPU feature this one lacks|not compiled/);
    }
  }
  return out;
}

/**
 * erfc(z) for z >= 0 in double without cancellation: 1 - erf below 2.5 (erfc >= 4e-4 there), the
 * continued fraction (200 terms, bottom-up) above. The js reference computes 0.5 x (1 + erf), which
 * is exact enough for training but cancels to 0 below x ~ -8; the tails need erfc.
 */
function erfcPos(z: number): number {
  if (z < 2.5) return 1 - erf(z);
  let f = z;
  for (let n = 200; n >= 1; n--) f = z + n / 2 / f;
  return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
}

function geluRef(x: number): number {
  if (Number.isNaN(x) || x === -Infinity) return geluJs(x);
  return x >= 0 ? x * (1 - 0.5 * erfcPos(x * Math.SQRT1_2)) : 0.5 * x * erfcPos(-x * Math.SQRT1_2);
}

function geluGradRef(x: number): number {
  const cdf = x >= 0 ? 1 - 0.5 * erfcPos(x * Math.SQRT1_2) : 0.5 * erfcPos(-x * Math.SQRT1_2);
  return cdf + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
}

/** The float32 spacing at |v| (the denormal spacing below the smallest normal). */
function ulp(v: number): number {
  const a = Math.max(Math.abs(v), 2 ** -126);
  return 2 ** (Math.floor(Math.log2(a)) - 23);
}

/** Inputs: a dense sweep over [-16, 16], a walk over every binade of both signs, and edge values. */
function inputs(): Float32Array {
  const xs: number[] = [];
  for (let v = -16; v <= 16; v += 1 / 1024 + 1e-7) xs.push(v);
  const bits = new Uint32Array(1);
  const f = new Float32Array(bits.buffer);
  for (let u = 0; u < 0x7f800000; u += 0x1f3d1) {
    bits[0] = u;
    xs.push(f[0]!, -f[0]!);
  }
  xs.push(1e-45, -1e-45, 1e-40, -1e-40, 2 ** -126, -(2 ** -126), 3.4e38, -3.4e38, -14.2, -14.3, -14.5, -13.2, 16, -16, 16.001, -16.001, -0.7518);
  return Float32Array.from(xs);
}

test('gelu on every SIMD tier is within 8 ulp of a double reference, its derivative within 8 ulp + 3e-7', { skip }, (t) => {
  const x = inputs();
  const n = x.length;
  const dy = new Float32Array(n).fill(1);
  for (const tier of tiers()) {
    const y = new Float32Array(n);
    const g = new Float32Array(n);
    addon!.geluSimd(tier, false, x, dy, y);
    addon!.geluSimd(tier, true, x, dy, g);
    let worstY = 0;
    let worstG = 0;
    for (let i = 0; i < n; i++) {
      const v = x[i]!;
      const ry = geluRef(v);
      const rg = geluGradRef(v);
      const ey = Math.abs(y[i]! - ry) / ulp(ry);
      // the derivative crosses zero at x = -0.7518 (Phi(x) + x phi(x) cancels): there its error is absolute
      const eg = Math.abs(g[i]! - rg) / (ulp(rg) + 3e-7 / 8);
      assert.ok(ey <= 8, `tier ${tier}: gelu(${v}) = ${y[i]}, reference ${ry} (${ey.toFixed(1)} ulp)`);
      assert.ok(eg <= 8, `tier ${tier}: gelu'(${v}) = ${g[i]}, reference ${rg}`);
      worstY = Math.max(worstY, ey);
      worstG = Math.max(worstG, eg);
    }
    t.diagnostic(`tier ${tier}: ${n} inputs, gelu worst ${worstY.toFixed(2)} ulp, gelu' worst ${worstG.toFixed(2)} (ulp + 3e-7/8 units)`);
  }
});

test('gelu special values: signed zero, infinities and NaN as the js reference, denormal results', { skip }, () => {
  const x = Float32Array.from([0, -0, Infinity, -Infinity, NaN, 1e-45, -1e-45, -14, -20, 20, 1e30, -1e30]);
  const dy = new Float32Array(x.length).fill(1);
  for (const tier of tiers()) {
    const y = new Float32Array(x.length);
    const g = new Float32Array(x.length);
    addon!.geluSimd(tier, false, x, dy, y);
    addon!.geluSimd(tier, true, x, dy, g);
    const what = `tier ${tier}`;
    assert.ok(Object.is(y[0], 0) && Object.is(y[1], -0), `${what}: gelu(+-0) = +-0, got ${y[0]}, ${y[1]}`);
    assert.equal(y[2], Infinity, `${what}: gelu(inf)`);
    assert.ok(Number.isNaN(y[3]!) && Number.isNaN(geluJs(-Infinity)), `${what}: gelu(-inf) is NaN as in the reference (-inf * 0)`);
    assert.ok(Number.isNaN(y[4]!) && Number.isNaN(g[4]!), `${what}: NaN propagates`);
    assert.ok(Number.isNaN(g[2]!) && Number.isNaN(g[3]!), `${what}: gelu'(+-inf) is NaN as in the reference`);
    assert.equal(g[0], 0.5, `${what}: gelu'(0)`);
    assert.ok(y[6]! <= 0 && y[6]! > -1e-45, `${what}: gelu(-1e-45) rounds to (-)0 or the smallest denormal`);
    // gelu(-14) = -1.0911e-43 is a denormal (78 steps of 2^-149): within 2 steps
    assert.ok(Math.abs(y[7]! - geluRef(-14)) <= 2 * 2 ** -149, `${what}: gelu(-14) = ${y[7]}, reference ${geluRef(-14)}`);
    assert.ok(Object.is(y[8], -0), `${what}: gelu(-20) underflows to -0, got ${y[8]}`);
    assert.equal(y[9], 20, `${what}: gelu(20)`);
    assert.equal(y[10], Math.fround(1e30), `${what}: gelu(1e30)`);
    assert.ok(Object.is(y[11], -0), `${what}: gelu(-1e30) = -0, got ${y[11]}`);
    assert.equal(g[9], 1, `${what}: gelu'(20)`);
    assert.ok(Object.is(g[8], 0), `${what}: gelu'(-20) = 0, got ${g[8]}`);
  }
});

test('the unary kernels run the SIMD gelu: bit for bit, at lengths with tails and across threads', { skip }, () => {
  const rng = new Rng(3);
  for (const n of [0, 1, 7, 9, 17, 31, 100_003]) {
    const x = new Float32Array(n);
    rng.fillUniform(x, -6, 6);
    const dy = new Float32Array(n);
    rng.fillUniform(dy, -1, 1);
    const want = new Float32Array(n);
    const got = new Float32Array(n);
    addon!.geluSimd(0, false, x, dy, want);
    native!.kernels.unary!('gelu', x, got);
    assert.deepEqual(got, want, `unary gelu, n = ${n}`);
    addon!.geluSimd(0, true, x, dy, want);
    native!.kernels.unaryBackward!('gelu', x, got, dy, got);  // y (unused by gelu's derivative) shares dx's buffer
    assert.deepEqual(got, want, `unaryBackward gelu, n = ${n}`);
  }
});

test('activationBackwardRows (gelu): the activation as forward, the gate-scaled gradient and the row dots in one pass', { skip }, () => {
  const rng = new Rng(5);
  for (const [rows, n] of [[1, 1], [3, 7], [5, 33], [64, 2048], [0, 8], [4, 0]] as const) {
    const pre = new Float32Array(rows * n);
    rng.fillUniform(pre, -5, 5);
    const u = new Float32Array(rows * n);
    rng.fillUniform(u, -1, 1);
    const gates = new Float32Array(rows);
    rng.fillUniform(gates, 0, 1);
    const act = new Float32Array(rows * n);
    const dot = Float32Array.from({ length: rows }, (_, r) => r * 0.25);  // accumulated into
    const dy = u.slice();
    addon!.activationBackwardRows(GELU, pre, dy, gates, act, dot, rows, n);
    const wantAct = new Float32Array(rows * n);
    addon!.geluSimd(0, false, pre, pre, wantAct);
    assert.deepEqual(act, wantAct, `act [${rows}, ${n}]`);
    const scaled = new Float32Array(rows * n);
    for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) scaled[r * n + j] = u[r * n + j]! * gates[r]!;
    const wantDy = new Float32Array(rows * n);
    addon!.geluSimd(0, true, pre, scaled, wantDy);
    assert.deepEqual(dy, wantDy, `gate-scaled gradient [${rows}, ${n}]`);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      let mag = 0;
      for (let j = 0; j < n; j++) {
        s += u[r * n + j]! * geluRef(pre[r * n + j]!);
        mag += Math.abs(u[r * n + j]! * wantAct[r * n + j]!);
      }
      assert.ok(Math.abs(dot[r]! - (r * 0.25 + s)) <= 1e-6 * (mag + 1), `dot[${r}] = ${dot[r]}, want ${r * 0.25 + s} ([${rows}, ${n}])`);
    }
    // without gates and dots: gate 1, nothing accumulated
    const dy2 = u.slice();
    addon!.activationBackwardRows(GELU, pre, dy2, null, act, null, rows, n);
    addon!.geluSimd(0, true, pre, u, wantDy);
    assert.deepEqual(dy2, wantDy, `ungated gradient [${rows}, ${n}]`);
  }
});

test('activationBackwardRows and geluSimd refuse bad arguments, naming them', { skip }, () => {
  const a = new Float32Array(6);
  assert.throws(() => addon!.activationBackwardRows(GELU, a, a, null, new Float32Array(5), null, 2, 3), /activationBackwardRows.*act has 5 elements/);
  assert.throws(() => addon!.activationBackwardRows(GELU, a, a, new Float32Array(1), a, null, 2, 3), /gates has 1 elements/);
  assert.throws(() => addon!.activationBackwardRows(99, a, a, null, a, null, 2, 3), /unknown unary op code 99/);
  assert.throws(() => addon!.activationBackwardRows(GELU, a, a, null, a, new Float32Array(1), 2, 3), /dot has 1 elements/);
  assert.throws(() => addon!.geluSimd(0, false, a, a, new Float32Array(2)), /out has 2 elements/);
  assert.throws(() => addon!.geluSimd(7, false, a, a, a), /tier must be 0/);
});

test('activationBackwardRows on native equals the js reference for the expert activations', { skip }, () => {
  const rng = new Rng(9);
  for (const op of ['gelu', 'geluTanh', 'relu', 'silu'] as const) {
    for (const [rows, n, gated] of [[3, 13, true], [40, 300, true], [2, 5, false], [0, 4, true]] as const) {
      const pre = new Float32Array(rows * n);
      rng.fillUniform(pre, -4, 4);
      const u = new Float32Array(rows * n);
      rng.fillUniform(u, -1, 1);
      const gates = gated ? Float32Array.from({ length: rows }, () => 0.1 + rng.next()) : null;
      const run = (k: typeof js.kernels): [Float32Array, Float32Array, Float32Array] => {
        const dy = u.slice();
        const act = new Float32Array(rows * n);
        const dot = new Float32Array(rows).fill(0.5);
        k.activationBackwardRows!(op, pre, dy, gates, act, gated ? dot : null, rows, n);
        return [dy, act, dot];
      };
      const [dyJ, actJ, dotJ] = run(js.kernels);
      const [dyN, actN, dotN] = run(native!.kernels);
      const what = `${op} [${rows}, ${n}]${gated ? ' gated' : ''}`;
      for (let i = 0; i < rows * n; i++) {
        assert.ok(Math.abs(actN[i]! - actJ[i]!) <= 1e-6 + 1e-6 * Math.abs(actJ[i]!), `${what}: act[${i}] ${actN[i]} vs ${actJ[i]}`);
        assert.ok(Math.abs(dyN[i]! - dyJ[i]!) <= 1e-6 + 1e-5 * Math.abs(dyJ[i]!), `${what}: dy[${i}] ${dyN[i]} vs ${dyJ[i]}`);
      }
      for (let r = 0; r < rows; r++) assert.ok(Math.abs(dotN[r]! - dotJ[r]!) <= 1e-4 * (1 + Math.abs(dotJ[r]!)), `${what}: dot[${r}]`);
    }
  }
});
