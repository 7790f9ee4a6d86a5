// IEEE half precision (f16) <-> float32 conversions, round-to-nearest-even like F16C and numpy.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * The f16 bit pattern nearest to x (after rounding x to float32), ties to even; overflow gives
 * infinity, NaN stays a quiet NaN. Exactly what ggml's GGML_FP32_TO_FP16 does on x86 (F16C), so
 * that quantised blocks written here are byte-identical to llama.cpp's.
 */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // re-biased exponent (127 -> 15)
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): the 24-bit significand shifted so that one unit is 2^-24.
    const s = 126 - exp;
    if (s > 24) return sign;
    const m = mant | 0x800000;
    let h = m >>> s;
    const rem = m & ((1 << s) - 1);
    const halfway = 1 << (s - 1);
    if (rem > halfway || (rem === halfway && (h & 1) === 1)) h++; // a carry into 0x400 is the smallest normal, correctly
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // a carry may reach the exponent, or infinity: both correct
  return h;
}

/** The value of an f16 bit pattern (exact in float32). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

let table: Float32Array | null = null;

/** All 65536 f16 values as float32 (256 KiB, built on first use): bulk conversion by lookup. */
export function halfTable(): Float32Array {
  if (table) return table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = halfToFloat(h);
  table = t;
  return t;
}
