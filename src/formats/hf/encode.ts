// f32 values to the stored bytes of F32, F16 or BF16 (little-endian, round to nearest even).

import { floatToHalf } from '../../tensor/half.js';
import { LITTLE_ENDIAN_HOST } from '../../io/safetensors.js';

export type WriteDType = 'F32' | 'F16' | 'BF16';

/** IEEE binary16 bits of x, ties to even (the one f16 encoder of the project, shared with the quantised blocks). */
export const floatToF16 = floatToHalf;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bfloat16 bits of x: the top half of its float32 bits, rounded to nearest even; NaN stays NaN. */
export function floatToBF16(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff; // quiet NaN, sign kept
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The bytes a safetensors file stores for data in dtype. F32 on a little-endian host is a view, not a copy. */
export function encodeFloats(data: Float32Array, dtype: WriteDType): Uint8Array {
  if (dtype === 'F32') {
    if (LITTLE_ENDIAN_HOST) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const out = new Uint8Array(data.length * 4);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < data.length; i++) dv.setFloat32(i * 4, data[i]!, true);
    return out;
  }
  const out = new Uint8Array(data.length * 2);
  const dv = new DataView(out.buffer);
  const conv = dtype === 'F16' ? floatToF16 : floatToBF16;
  for (let i = 0; i < data.length; i++) dv.setUint16(i * 2, conv(data[i]!), true);
  return out;
}
