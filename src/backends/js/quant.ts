// Reference quantised products (the definition the native kernels are tested against): activations
// quantised to Q8_0 per row, block dots as exact integer sums, scaled and summed in float32 in block
// order, as ggml's scalar ggml_vec_dot_q8_0_q8_0 / ggml_vec_dot_q4_0_q8_0 do.

import type { KernelImpls } from '../../kernels/kernels.js';
import type { FloatArray } from '../../tensor/dtype.js';
import { halfTable } from '../../tensor/half.js';
import { BLOCK_BYTES, QK, quantizeRow, type QuantType } from '../../tensor/quant-blocks.js';

const fr = Math.fround;

/** Activation rows quantised to Q8_0, unpacked: int8 values [t, k] and float scales [t, k/32]. */
interface QuantRows {
  q: Int8Array;
  d: Float32Array;
}

function quantizeActivations(x: FloatArray, xOff: number, t: number, k: number): QuantRows {
  const nb = k / QK;
  const blocks = new Uint8Array(t * nb * BLOCK_BYTES.q8_0);
  for (let r = 0; r < t; r++) quantizeRow('q8_0', x, xOff + r * k, k, blocks, r * nb * BLOCK_BYTES.q8_0);
  const half = halfTable();
  const q = new Int8Array(t * k);
  const d = new Float32Array(t * nb);
  for (let b = 0; b < t * nb; b++) {
    const o = b * BLOCK_BYTES.q8_0;
    d[b] = half[blocks[o]! | (blocks[o + 1]! << 8)]!;
    for (let j = 0; j < QK; j++) q[b * QK + j] = (blocks[o + 2 + j]! << 24) >> 24;
  }
  return { q, d };
}

/** Dot of weight row `row` (blocks starting at byte wOff) with activation row r. */
function dotRow(type: QuantType, w: Uint8Array, wOff: number, a: QuantRows, r: number, nb: number, half: Float32Array): number {
  const bb = BLOCK_BYTES[type];
  let acc = 0;
  for (let b = 0; b < nb; b++) {
    const o = wOff + b * bb;
    const xq = (r * nb + b) * QK;
    let sumi = 0;
    if (type === 'q8_0') {
      for (let j = 0; j < QK; j++) sumi += ((w[o + 2 + j]! << 24) >> 24) * a.q[xq + j]!;
    } else {
      for (let j = 0; j < QK / 2; j++) {
        const v = w[o + 2 + j]!;
        sumi += ((v & 0x0f) - 8) * a.q[xq + j]! + ((v >> 4) - 8) * a.q[xq + QK / 2 + j]!;
      }
    }
    // sumf += sumi * (d_w * d_x), every step rounded to float32 as in C.
    acc = fr(acc + fr(sumi * fr(half[w[o]! | (w[o + 1]! << 8)]! * a.d[r * nb + b]!)));
  }
  return acc;
}

/** out[t, n] = x[t, k] (from xOff) against weight rows [n, k] of type (from byte wOff), activations quantised to Q8_0 first. */
export function product(x: FloatArray, xOff: number, w: Uint8Array, wOff: number, out: FloatArray, outOff: number, t: number, n: number, k: number,
  type: QuantType): void {
  if (t === 0 || n === 0) return;
  const nb = k / QK;
  const a = quantizeActivations(x, xOff, t, k);
  const half = halfTable();
  const rowBytes = nb * BLOCK_BYTES[type];
  for (let r = 0; r < t; r++) {
    for (let o = 0; o < n; o++) out[outOff + r * n + o] = dotRow(type, w, wOff + o * rowBytes, a, r, nb, half);
  }
}

function check(name: string, w: Uint8Array, wRows: number, k: number, type: QuantType): void {
  if (k % QK !== 0) throw new Error(`${name}: in = ${k} is not a multiple of ${QK}; ggml's ${type} blocks need whole blocks per row`);
  const need = wRows * (k / QK) * BLOCK_BYTES[type];
  if (w.length < need) throw new Error(`${name}: weight has ${w.length} bytes but ${wRows} rows of ${k} ${type} values need ${need}`);
}

export const quantMatmul: KernelImpls['quantMatmul'] = (x, w, out, t, n, k, type) => {
  check('quantMatmul', w, n, k, type);
  product(x, 0, w, 0, out, 0, t, n, k, type);
};

export const quantGroupedMatmul: KernelImpls['quantGroupedMatmul'] = (x, w, groupSizes, out, n, k, type) => {
  check('quantGroupedMatmul', w, groupSizes.length * n, k, type);
  const matBytes = n * (k / QK) * BLOCK_BYTES[type];
  let row = 0;
  for (let g = 0; g < groupSizes.length; g++) {
    const rows = groupSizes[g]!;
    product(x, row * k, w, g * matBytes, out, row * n, rows, n, k, type);
    row += rows;
  }
};
