// Child process of quant.test.ts: runs the native block dots picked by MOE_QUANT_SIMD against the js
// reference and prints one JSON line ({ simd, exact, scalarBitExactOnRandom }).

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
const simd = nativeQuantSimd();
process.stdout.write(`${JSON.stringify({ simd, exact, scalarBitExactOnRandom: simd === 'scalar' ? randomSame : null })}\n`);
