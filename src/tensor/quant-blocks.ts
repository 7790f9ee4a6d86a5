// ggml's Q8_0 and Q4_0 block formats: byte layout, quantisation (ggml's reference rounding, the one
// llama.cpp's converter uses for model files) and dequantisation. Pure codec, no engine imports, so
// kernels, file formats and the inference layer can all share it.
//
// Q8_0 block (34 bytes): f16 scale d, then 32 int8 q; x = d * q.
// Q4_0 block (18 bytes): f16 scale d, then 16 bytes of nibbles; x = d * (q - 8). Byte j holds value
// j in its low nibble and value j + 16 in its high nibble.

import { floatToHalf, halfTable } from './half.js';

export type QuantType = 'q8_0' | 'q4_0';
export const QUANT_TYPES: readonly QuantType[] = ['q8_0', 'q4_0'];

/** Values per block: every quantised row length must be a multiple of it (ggml refuses others). */
export const QK = 32;

export const BLOCK_BYTES: Readonly<Record<QuantType, number>> = { q8_0: 34, q4_0: 18 };

/** Codes shared with the native addon (quant.cc). */
export const QUANT_CODE: Readonly<Record<QuantType, number>> = { q8_0: 0, q4_0: 1 };

export function isQuantType(s: string): s is QuantType {
  return (QUANT_TYPES as readonly string[]).includes(s);
}

/** Bytes of `n` values in blocks of `type`; n must be a multiple of 32. */
export function quantizedBytes(type: QuantType, n: number): number {
  if (n % QK !== 0) throw new Error(`${type}: ${n} values is not a multiple of the block size ${QK}`);
  return (n / QK) * BLOCK_BYTES[type];
}

const fr = Math.fround;

/** C's roundf: halves away from zero (Math.round sends -2.5 to -2). Exact for float32 inputs. */
function roundAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

function checkFinite(src: ArrayLike<number>, off: number, n: number, what: string): void {
  for (let i = 0; i < n; i++) {
    const v = src[off + i]!;
    if (!Number.isFinite(v)) throw new Error(`${what}: value ${v} at index ${i} cannot be quantised (not finite)`);
  }
}

/**
 * Quantises n values (a multiple of 32) of src from srcOff into dst at dstOff, with ggml's
 * quantize_row_q8_0_ref / quantize_row_q4_0_ref arithmetic in float32: the same bytes as llama.cpp.
 * Non-finite inputs are refused (ggml would write garbage).
 */
export function quantizeRow(type: QuantType, src: ArrayLike<number>, srcOff: number, n: number, dst: Uint8Array, dstOff: number): void {
  if (n % QK !== 0) throw new Error(`quantize ${type}: row length ${n} is not a multiple of ${QK}`);
  checkFinite(src, srcOff, n, `quantize ${type}`);
  const bb = BLOCK_BYTES[type];
  for (let b = 0; b < n / QK; b++) {
    const s = srcOff + b * QK;
    const o = dstOff + b * bb;
    if (type === 'q8_0') {
      let amax = 0;
      for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(fr(src[s + j]!)));
      const d = fr(amax / 127);
      const id = d !== 0 ? fr(1 / d) : 0;
      const h = floatToHalf(d);
      dst[o] = h & 0xff;
      dst[o + 1] = h >>> 8;
      for (let j = 0; j < QK; j++) dst[o + 2 + j] = roundAway(fr(fr(src[s + j]!) * id)) & 0xff;
    } else {
      // The signed value of largest magnitude (the first one on ties) maps to -8.
      let amax = 0;
      let max = 0;
      for (let j = 0; j < QK; j++) {
        const v = fr(src[s + j]!);
        if (amax < Math.abs(v)) {
          amax = Math.abs(v);
          max = v;
        }
      }
      const d = fr(max / -8);
      const id = d !== 0 ? fr(1 / d) : 0;
      const h = floatToHalf(d);
      dst[o] = h & 0xff;
      dst[o + 1] = h >>> 8;
      for (let j = 0; j < QK / 2; j++) {
        const x0 = fr(fr(src[s + j]!) * id);
        const x1 = fr(fr(src[s + QK / 2 + j]!) * id);
        // (int8_t)(x + 8.5f): truncation toward zero, then clamp to 15.
        const q0 = Math.min(15, Math.trunc(fr(x0 + 8.5)));
        const q1 = Math.min(15, Math.trunc(fr(x1 + 8.5)));
        dst[o + 2 + j] = q0 | (q1 << 4);
      }
    }
  }
}

/** Dequantises n values (a multiple of 32) from the blocks at srcOff into dst at dstOff; exact in float32. */
export function dequantizeRow(type: QuantType, src: Uint8Array, srcOff: number, n: number, dst: Float32Array, dstOff: number): void {
  if (n % QK !== 0) throw new Error(`dequantize ${type}: row length ${n} is not a multiple of ${QK}`);
  const half = halfTable();
  const bb = BLOCK_BYTES[type];
  for (let b = 0; b < n / QK; b++) {
    const i = srcOff + b * bb;
    const o = dstOff + b * QK;
    const d = half[src[i]! | (src[i + 1]! << 8)]!;
    if (type === 'q8_0') {
      for (let j = 0; j < QK; j++) dst[o + j] = d * ((src[i + 2 + j]! << 24) >> 24);
    } else {
      for (let j = 0; j < QK / 2; j++) {
        const q = src[i + 2 + j]!;
        dst[o + j] = d * ((q & 0x0f) - 8);
        dst[o + QK / 2 + j] = d * ((q >> 4) - 8);
      }
    }
  }
}

/** Quantises a whole buffer of n values (a multiple of 32) into a new Uint8Array. */
export function quantizeArray(type: QuantType, src: ArrayLike<number>, n = src.length): Uint8Array {
  const out = new Uint8Array(quantizedBytes(type, n));
  quantizeRow(type, src, 0, n, out, 0);
  return out;
}

/** Dequantises n values from blocks into a new Float32Array. */
export function dequantizeArray(type: QuantType, src: Uint8Array, n: number): Float32Array {
  const need = quantizedBytes(type, n);
  if (src.length < need) throw new Error(`dequantize ${type}: ${n} values need ${need} bytes, got ${src.length}`);
  const out = new Float32Array(n);
  dequantizeRow(type, src, 0, n, out, 0);
  return out;
}
