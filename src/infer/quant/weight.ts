// QuantWeight: a weight matrix (or a stack of expert matrices) held as raw ggml blocks, row-major,
// the last axis (the input features) a multiple of 32.

import { shapeStr } from '../../tensor/shape.js';
import { QK, QUANT_TYPES, dequantizeArray, quantizeArray, quantizedBytes, type QuantType } from '../../tensor/quant-blocks.js';

export class QuantWeight {
  /**
   * @param type the block format
   * @param shape [out, in] for a linear layer, [E, out, in] for stacked experts; in % 32 === 0
   * @param data the blocks: each row of `in` values is in/32 consecutive blocks
   */
  constructor(readonly type: QuantType, readonly shape: readonly number[], readonly data: Uint8Array) {
    if (!QUANT_TYPES.includes(type)) throw new Error(`QuantWeight: unknown block type '${String(type)}' (known: ${QUANT_TYPES.join(', ')})`);
    if (shape.length < 1 || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new Error(`QuantWeight: invalid shape ${shapeStr(shape)}`);
    }
    const inner = shape[shape.length - 1]!;
    if (inner % QK !== 0) {
      throw new Error(`QuantWeight: the last axis (${inner}, shape ${shapeStr(shape)}) is not a multiple of ${QK}; ${type} stores whole blocks of ${QK}`);
    }
    const need = quantizedBytes(type, shape.reduce((a, b) => a * b, 1));
    if (data.length !== need) throw new Error(`QuantWeight: ${type} ${shapeStr(shape)} needs ${need} bytes, got ${data.length}`);
  }

  /** Number of values. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Bytes of the blocks (what a product reads). */
  get bytes(): number {
    return this.data.length;
  }
}

/** Quantises row-major float32 values of `shape` (last axis a multiple of 32) with ggml's reference rounding. */
export function quantize(values: Float32Array, shape: readonly number[], type: QuantType): QuantWeight {
  const n = shape.reduce((a, b) => a * b, 1);
  if (values.length !== n) throw new Error(`quantize: shape ${shapeStr(shape)} has ${n} values, got ${values.length}`);
  const inner = shape[shape.length - 1] ?? 0;
  if (inner % QK !== 0) throw new Error(`quantize: the last axis of ${shapeStr(shape)} is not a multiple of ${QK}, which ${type} requires`);
  return new QuantWeight(type, shape.slice(), quantizeArray(type, values, n));
}

/** The float32 values of a quantised weight (exact: every block value is representable). */
export function dequantize(w: QuantWeight): Float32Array {
  return dequantizeArray(w.type, w.data, w.size);
}
