// Child process of quant.test.ts: runs the native block dots picked by MOE_QUANT_SIMD against the js
// reference and prints one JSON line ({ simd, exact, quantiserSame, scalarBitExactOnRandom }).

import { Rng, Tensor, withBackend } from '../src/index.js';
import { QuantWeight, floatToHalf, quantMatmul, quantize, BLOCK_BYTES, type QuantType } from '../src/infer/quant/index.js';
import { nativeQuantSimd } from '../src/backends/native/index.js';

const rng = new Rng(3);
let exact = true;
let randomSame = true;
for (const type of ['q8_0', 'q4_0'] as QuantType[]) {
  for (const [t, n, k] of [[1, 13, 32], [4, 19, 160], [5, 40, 1024]] as Array<[number, number, number]>) {
    // Power-of-two scales and integer activations with 127 in every block: float sums are exact.
    const x = new Float32Array(t * k);
    for (let i = 0; i < x.length; i++) x[i] = i % 32 === 0 ? -127 : rng.int(255) - 127;
    const bb = BLOCK_BYTES[type];
    const data = new Uint8Array(n * (k / 32) * bb);
    for (let b = 0; b < n * (k / 32); b++) {
      const h = floatToHalf(2 ** -(rng.int(5) + 1));
      data[b * bb] = h & 0xff;
      data[b * bb + 1] = h >> 8;
      for (let j = 2; j < bb; j++) data[b * bb + j] = rng.int(256);
    }
    const w = new QuantWeight(type, [n, k], data);
    const xt = new Tensor(x, [t, k]);
    const a = withBackend('js', () => quantMatmul(xt, w)).data;
    const b = withBackend('native', () => quantMatmul(xt, w)).data;
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) exact = false;

    const xr = new Float32Array(t * k);
    for (let i = 0; i < xr.length; i++) xr[i] = rng.normal();
    const wr = new Float32Array(n * k);
    for (let i = 0; i < wr.length; i++) wr[i] = rng.normal() * 0.05;
    const wq = quantize(wr, [n, k], type);
    const c = withBackend('js', () => quantMatmul(new Tensor(xr, [t, k]), wq)).data;
    const d = withBackend('native', () => quantMatmul(new Tensor(xr, [t, k]), wq)).data;
    for (let i = 0; i < c.length; i++) if (!Object.is(c[i], d[i])) randomSame = false;
  }
}
// The activation quantiser, exactly, on random rows (ties included): a Q8_0 weight whose row j is
// the one-hot value 1 at column j with scale 1 makes out[j] = q_x[j] * d_x, a single exact product,
// so js and native agree bit for bit only if they quantised x to the same blocks.
let quantiserSame = true;
{
  const k = 256;
  const t = 3;
  const data = new Uint8Array(k * (k / 32) * 34);
  const one = floatToHalf(1);
  for (let j = 0; j < k; j++) {
    for (let b = 0; b < k / 32; b++) {
      const at = (j * (k / 32) + b) * 34;
      data[at] = one & 0xff;
      data[at + 1] = one >> 8;
    }
    data[(j * (k / 32) + Math.floor(j / 32)) * 34 + 2 + (j % 32)] = 1;
  }
  const w = new QuantWeight('q8_0', [k, k], data);
  const x = new Float32Array(t * k);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal() * 3;
  // exact halves after scaling: a block whose amax is 127 has id = 1, so x.5 values are ties
  for (let i = 0; i < 32; i++) x[i] = i === 0 ? 127 : (rng.int(254) - 127) + 0.5 * (i % 2);
  for (let i = 32; i < 64; i++) x[i] = 0;
  const xt = new Tensor(x, [t, k]);
  const a = withBackend('js', () => quantMatmul(xt, w)).data;
  const b = withBackend('native', () => quantMatmul(xt, w)).data;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) quantiserSame = false;
}
const simd = nativeQuantSimd();
process.stdout.write(`${JSON.stringify({ simd, exact, quantiserSame, scalarBitExactOnRandom: simd === 'scalar' ? randomSame : null })}\n`);
