// Q8_0 / Q4_0 blocks: f16 rounding, ggml's quantisation rules on hand-checked blocks, the js reference
// product against exact float arithmetic, and every native block-dot variant against the js reference.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { availableBackends, Rng, Tensor, withBackend } from '../src/index.js';
import {
  BLOCK_BYTES, QuantWeight, dequantize, quantWeightFromRaw, stackQuantWeights, dequantizeArray, floatToHalf, halfToFloat, quantGroupedMatmul, quantMatmul, quantize,
  quantizeArray, type QuantType,
} from '../src/infer/quant/index.js';
import { nativeQuantSimd } from '../src/backends/native/index.js';
import { kernel } from '../src/kernels/registry.js';

const TYPES: QuantType[] = ['q8_0', 'q4_0'];
const hasNative = availableBackends().includes('native');

function rand(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

test('f16: every half survives a round trip; midpoints round to even; overflow, subnormals, NaN', () => {
  for (let h = 0; h < 65536; h++) {
    const v = halfToFloat(h);
    if (Number.isNaN(v)) {
      assert.ok(Number.isNaN(halfToFloat(floatToHalf(v))));
      continue;
    }
    assert.equal(floatToHalf(v), h, `half 0x${h.toString(16)}`);
    // The midpoint to the next half up in magnitude ties to the even one of the two.
    if ((h & 0x7fff) < 0x7bff) {
      const mid = (v + halfToFloat(h + 1)) / 2;
      assert.equal(floatToHalf(mid), (h & 1) === 0 ? h : h + 1, `midpoint above 0x${h.toString(16)}`);
    }
  }
  assert.equal(floatToHalf(65520), 0x7c00, '65520 rounds to infinity');
  assert.equal(floatToHalf(65519.99), 0x7bff);
  assert.equal(floatToHalf(2 ** -25), 0, 'half the smallest subnormal ties to zero (even)');
  assert.equal(floatToHalf(2 ** -25 * 1.0001), 1);
  assert.equal(floatToHalf(-0), 0x8000);
});

test('Q8_0 block: ggml rounding (roundf, halves away from zero), scale as f16, zero block', () => {
  const x = new Float32Array(64);
  x.set([127, 2.5, -2.5, 0.5, -0.5, 1.5, -126.5, 0.49999997]);
  const b = quantizeArray('q8_0', x);
  assert.equal(b.length, 68);
  assert.equal(b[0]! | (b[1]! << 8), 0x3c00, 'd = 127 / 127 = 1.0');
  const q = [...new Int8Array(b.buffer, 2, 8)];
  assert.deepEqual(q, [127, 3, -3, 1, -1, 2, -127, 0]);
  // Second block all zeros: d = 0, every q = 0.
  assert.deepEqual([...b.subarray(34)], new Array(34).fill(0));
  assert.deepEqual([...dequantizeArray('q8_0', b, 8 * 8).subarray(0, 8)], [127, 3, -3, 1, -1, 2, -127, 0]);
  // d is rounded to f16 for storage, but the quantisation used the float32 d (as ggml does).
  const y = new Float32Array(32).fill(0.3);
  y[0] = 1.1;
  const by = quantizeArray('q8_0', y);
  const d32 = Math.fround(Math.fround(1.1) / 127);
  assert.equal(by[0]! | (by[1]! << 8), floatToHalf(d32));
  assert.equal(new Int8Array(by.buffer, 2, 32)[1], Math.round(Math.fround(Math.fround(0.3) * Math.fround(1 / d32))));
});

test('Q4_0 block: signed max maps to -8, first max wins ties, nibble order, clamp at 15', () => {
  const x = new Float32Array(32);
  // max magnitude -8 -> d = 1, id = 1; q = min(15, trunc(x + 8.5))
  x.set([-8, 3.5, -0.5, 7, 8, 0.49, 7.49, -7.5]);
  x[16] = 1;
  x[31] = -3;
  const b = quantizeArray('q4_0', x);
  assert.equal(b.length, 18);
  assert.equal(b[0]! | (b[1]! << 8), 0x3c00);
  const lo = (j: number): number => b[2 + j]! & 0x0f;
  const hi = (j: number): number => b[2 + j]! >> 4;
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(lo), [0, 12, 8, 15, 15, 8, 15, 1]);
  assert.equal(hi(0), 9, 'value 16 sits in byte 0 high nibble');
  assert.equal(hi(15), 5, 'value 31 sits in byte 15 high nibble');
  // Ties: 8 comes first, so d = 8 / -8 = -1 and -8 maps to 8 * 1 + 8.5 -> 16 -> clamped to 15.
  const t = new Float32Array(32);
  t[0] = 8;
  t[1] = -8;
  const bt = quantizeArray('q4_0', t);
  assert.equal(bt[0]! | (bt[1]! << 8), 0xbc00, 'd = -1');
  assert.equal(bt[2]! & 0x0f, 0);
  assert.equal(bt[3]! & 0x0f, 15);
  const back = dequantizeArray('q4_0', bt, 32);
  assert.equal(back[0], 8);
  assert.equal(back[1], -7, 'clamped: -8 comes back as -7');
});

// The rounding used the float32 scale but the block stores it as f16 (relative error 2^-11), so the
// bound grows by |q| * d * 2^-11.
test('quantise -> dequantise error stays within half a step (a full step where Q4_0 clamps), plus the f16 scale error', () => {
  const rng = new Rng(7);
  for (const type of TYPES) {
    const x = rand(rng, 32 * 50, 0.05);
    const w = quantize(x, [50, 32], type);
    assert.equal(w.bytes, 50 * BLOCK_BYTES[type]);
    const y = dequantize(w);
    for (let b = 0; b < 50; b++) {
      const d = Math.abs(halfToFloat(w.data[b * BLOCK_BYTES[type]]! | (w.data[b * BLOCK_BYTES[type] + 1]! << 8)));
      for (let j = 0; j < 32; j++) {
        const i = b * 32 + j;
        assert.ok(Math.abs(x[i]! - y[i]!) <= d * (type === 'q8_0' ? 0.5 + 127 / 2048 : 1 + 8 / 2048) * (1 + 1e-6) + 1e-12, `${type} value ${i}`);
      }
    }
  }
});

test('quantize refuses rows that are not whole blocks and non-finite values, naming them', () => {
  assert.throws(() => quantize(new Float32Array(40), [1, 40], 'q8_0'), /not a multiple of 32/);
  const bad = new Float32Array(32);
  bad[5] = NaN;
  assert.throws(() => quantize(bad, [1, 32], 'q4_0'), /NaN at index 5/);
  assert.throws(() => new QuantWeight('q8_0', [2, 32], new Uint8Array(10)), /needs 68 bytes, got 10/);
});

/** Exact reference in float64: sum over blocks of dequantised weight x dequantised activation (every product exact). */
function exactProduct(x: Float32Array, t: number, w: QuantWeight): { out: Float64Array; mag: Float64Array } {
  const [n, k] = w.shape as [number, number];
  const wd = dequantize(w);
  const xd = dequantizeArray('q8_0', quantizeArray('q8_0', x), t * k);
  const out = new Float64Array(t * n);
  const mag = new Float64Array(t * n);
  for (let r = 0; r < t; r++) {
    for (let o = 0; o < n; o++) {
      let s = 0;
      let m = 0;
      for (let b = 0; b < k / 32; b++) {
        let blk = 0;
        for (let j = 0; j < 32; j++) blk += wd[o * k + b * 32 + j]! * xd[r * k + b * 32 + j]!;
        s += blk;
        m += Math.abs(blk);
      }
      out[r * n + o] = s;
      mag[r * n + o] = m;
    }
  }
  return { out, mag };
}

/** |a - b| within float32 summation error of nb terms, relative to the sum of the terms' magnitudes. */
function assertSumClose(a: ArrayLike<number>, b: ArrayLike<number>, mag: ArrayLike<number>, nb: number, what: string): void {
  for (let i = 0; i < a.length; i++) {
    const tol = (nb + 2) * 2 ** -23 * mag[i]! + 1e-30;
    assert.ok(Math.abs(a[i]! - b[i]!) <= tol, `${what}[${i}]: ${a[i]} vs ${b[i]} (tol ${tol})`);
  }
}

const SHAPES: Array<[number, number, number]> = [[1, 1, 32], [1, 7, 64], [3, 5, 96], [17, 33, 320], [2, 64, 4096]];

test('js reference quantMatmul equals the exact block sum up to float32 accumulation', () => {
  const rng = new Rng(11);
  withBackend('js', () => {
    for (const type of TYPES) {
      for (const [t, n, k] of SHAPES.slice(0, 4)) {
        const x = rand(rng, t * k);
        const w = quantize(rand(rng, n * k, 0.1), [n, k], type);
        const y = quantMatmul(new Tensor(x, [t, k]), w);
        assert.deepEqual([...y.shape], [t, n]);
        const { out, mag } = exactProduct(x, t, w);
        assertSumClose(y.data, out, mag, k / 32, `${type} ${t}x${n}x${k}`);
      }
    }
  });
});

/** Data whose float sums are exact (power-of-two weight scales, integer activations with a 127 in every block): any order gives the same bits. */
function exactData(rng: Rng, t: number, n: number, k: number, type: QuantType): { x: Float32Array; w: QuantWeight } {
  const x = new Float32Array(t * k);
  for (let i = 0; i < x.length; i++) x[i] = (i % 32 === 0 ? 127 : rng.int(255) - 127);
  const bb = BLOCK_BYTES[type];
  const data = new Uint8Array(n * (k / 32) * bb);
  for (let b = 0; b < n * (k / 32); b++) {
    const h = floatToHalf(2 ** -(rng.int(6) + 2));
    data[b * bb] = h & 0xff;
    data[b * bb + 1] = h >> 8;
    for (let j = 2; j < bb; j++) data[b * bb + j] = rng.int(256);
  }
  return { x, w: new QuantWeight(type, [n, k], data) };
}

test('native quantMatmul matches the js reference: bit-exact on exact data, within float32 summation error on random data', { skip: !hasNative && 'native addon not built' }, () => {
  const rng = new Rng(5);
  for (const type of TYPES) {
    for (const [t, n, k] of SHAPES) {
      const ex = exactData(rng, t, n, k, type);
      const xe = new Tensor(ex.x, [t, k]);
      const js = withBackend('js', () => quantMatmul(xe, ex.w));
      const nat = withBackend('native', () => quantMatmul(xe, ex.w));
      assert.deepEqual([...nat.data], [...js.data], `${type} ${t}x${n}x${k} exact data (${nativeQuantSimd()})`);

      const x = new Tensor(rand(rng, t * k), [t, k]);
      const w = quantize(rand(rng, n * k, 0.02), [n, k], type);
      const a = withBackend('js', () => quantMatmul(x, w));
      const b = withBackend('native', () => quantMatmul(x, w));
      const { mag } = exactProduct(x.data as Float32Array, t, w);
      assertSumClose(b.data, a.data, mag, 2 * (k / 32), `${type} ${t}x${n}x${k} random`);
    }
  }
});

test('grouped (expert) product equals one quantMatmul per group, E = 1, empty groups, T = 0', () => {
  const rng = new Rng(9);
  for (const backend of availableBackends()) {
    withBackend(backend, () => {
      for (const type of TYPES) {
        for (const groups of [[3], [0, 2, 0, 5, 1], [0, 0, 0], [1, 1, 1, 1]]) {
          const e = groups.length;
          const t = groups.reduce((a, b) => a + b, 0);
          const [n, k] = [9, 64];
          const w = quantize(rand(rng, e * n * k, 0.1), [e, n, k], type);
          const x = new Tensor(rand(rng, t * k), [t, k]);
          const y = quantGroupedMatmul(x, w, Int32Array.from(groups));
          assert.deepEqual([...y.shape], [t, n]);
          let row = 0;
          for (let g = 0; g < e; g++) {
            const rows = groups[g]!;
            const wg = new QuantWeight(type, [n, k], w.data.subarray(g * w.bytes / e, (g + 1) * w.bytes / e));
            const xg = new Tensor((x.data as Float32Array).slice(row * k, (row + rows) * k), [rows, k]);
            const yg = quantMatmul(xg, wg);
            assert.deepEqual([...y.data.subarray(row * n, (row + rows) * n)], [...yg.data], `${backend} ${type} group ${g} of ${groups}`);
            row += rows;
          }
        }
      }
    });
  }
});

test('bad inputs: in not a multiple of 32, shape mismatch, bad groups, NaN activations, gradients', () => {
  const w = quantize(new Float32Array(64), [2, 32], 'q8_0');
  for (const backend of availableBackends()) {
    withBackend(backend, () => {
      assert.throws(() => quantMatmul(new Tensor(new Float32Array(40), [1, 40]), w), /40 features, weight \[2, 32\] expects 32/);
      const nan = new Float32Array(64);
      nan[40] = NaN;
      assert.throws(() => quantMatmul(new Tensor(nan, [2, 32]), w), /non-finite|NaN/);
      const w3 = quantize(new Float32Array(2 * 64), [2, 2, 32], 'q4_0');
      assert.throws(() => quantGroupedMatmul(new Tensor(new Float32Array(96), [3, 32]), w3, Int32Array.from([1, 1])), /sum to 2, x has 3 rows/);
      assert.throws(() => quantGroupedMatmul(new Tensor(new Float32Array(96), [3, 32]), w3, Int32Array.from([3])), /1 group sizes for 2 experts/);
      const xg = new Tensor(new Float32Array(32), [1, 32]).requireGrad();
      assert.throws(() => quantMatmul(xg, w), /inference only/);
    });
  }
  // The kernels themselves refuse partial blocks (ggml requires in % 32 === 0).
  withBackend('js', () => assert.throws(() => quantMatmulKernel(40), /40 is not a multiple of 32/));
  if (hasNative) withBackend('native', () => assert.throws(() => quantMatmulKernel(40), /40 is not a multiple of 32/));
});

/** Straight to the current backend's kernel, past the op's shape checks. */
function quantMatmulKernel(k: number): void {
  kernel('quantMatmul')(new Float32Array(k), new Uint8Array(68), new Float32Array(2), 1, 2, k, 'q8_0');
}

test('every native block-dot variant this CPU has matches the js reference bit for bit on exact data', { skip: !hasNative && 'native addon not built' }, () => {
  // The variant is chosen once per process, so each runs in a child process with MOE_QUANT_SIMD set.
  const script = fileURLToPath(new URL('./quant-variant.js', import.meta.url));
  for (const simd of ['scalar', 'avx2', 'avx512vnni']) {
    const r = spawnSync(process.execPath, [script], { env: { ...process.env, MOE_QUANT_SIMD: simd }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `MOE_QUANT_SIMD=${simd}: ${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { simd: string; exact: boolean; quantiserSame: boolean; scalarBitExactOnRandom: boolean | null };
    // A variant the CPU lacks falls back to the best one it has.
    assert.ok(out.exact, `${out.simd} (asked ${simd}) differs from js on exact data`);
    assert.ok(out.quantiserSame, `${out.simd} (asked ${simd}) quantises random activations (ties included) differently from js`);
    if (out.simd === 'scalar') assert.equal(out.scalarBitExactOnRandom, true, 'the scalar path follows the js order exactly');
  }
});

test('stacked experts from per-expert raw blocks: stack + grouped product equals per-expert products', () => {
  const rng = new Rng(21);
  const ws = [0, 1, 2].map(() => quantize(rand(rng, 8 * 64, 0.1), [8, 64], 'q4_0'));
  const raw = ws.map((w) => quantWeightFromRaw({ dtype: 'Q4_0', shape: [...w.shape], data: w.data }));
  const st = stackQuantWeights(raw);
  assert.deepEqual([...st.shape], [3, 8, 64]);
  const x = new Tensor(rand(rng, 4 * 64), [4, 64]);
  const y = quantGroupedMatmul(x, st, Int32Array.from([1, 0, 3]));
  assert.deepEqual([...y.data.subarray(0, 8)], [...quantMatmul(new Tensor((x.data as Float32Array).slice(0, 64), [1, 64]), ws[0]!).data]);
  assert.deepEqual([...y.data.subarray(8)], [...quantMatmul(new Tensor((x.data as Float32Array).slice(64), [3, 64]), ws[2]!).data]);
  assert.throws(() => quantWeightFromRaw({ dtype: 'F16', shape: [8, 64], data: new Uint8Array(1024) }), /F16 is not a block format/);
  assert.throws(() => stackQuantWeights([ws[0]!, quantize(new Float32Array(64), [2, 32], 'q4_0')]), /weight 1 is q4_0 \[2, 32\]/);
});
