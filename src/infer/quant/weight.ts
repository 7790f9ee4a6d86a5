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

/** A QuantWeight from stored blocks, e.g. a GGUF source's readRaw(name) ({ dtype: 'Q8_0' | 'Q4_0', shape, data }). */
export function quantWeightFromRaw(raw: { dtype: string; shape: readonly number[]; data: Uint8Array }): QuantWeight {
  const type = raw.dtype.toLowerCase();
  if (type !== 'q8_0' && type !== 'q4_0') throw new Error(`quantWeightFromRaw: stored type ${raw.dtype} is not a block format (Q8_0, Q4_0)`);
  return new QuantWeight(type, raw.shape.slice(), raw.data);
}

/** Stacks same-shaped [out, in] weights of one type into [E, out, in] (the expert layout of quantGroupedMatmul). */
export function stackQuantWeights(ws: readonly QuantWeight[]): QuantWeight {
  if (ws.length === 0) throw new Error('stackQuantWeights: no weights');
  const first = ws[0]!;
  for (const [i, w] of ws.entries()) {
    if (w.type !== first.type || w.shape.length !== first.shape.length || w.shape.some((d, j) => d !== first.shape[j])) {
      throw new Error(`stackQuantWeights: weight ${i} is ${w.type} ${shapeStr(w.shape)}, weight 0 is ${first.type} ${shapeStr(first.shape)}`);
    }
  }
  const data = new Uint8Array(first.bytes * ws.length);
  ws.forEach((w, i) => data.set(w.data, i * first.bytes));
  return new QuantWeight(first.type, [ws.length, ...first.shape], data);
}
