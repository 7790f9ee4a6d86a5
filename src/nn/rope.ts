// Rotary position embedding (RoFormer), the "rotate half" convention of GPT-NeoX and LLaMA.
//
// Channel i of a head (hd = head size, h = hd/2) is paired with channel i + h and the pair is
// rotated by angle pos * base^(-2(i mod h)/hd). Built from mul/add/narrow/concat/neg, so gradients
// flow to q and k through the ordinary ops; the tables are constants.

import { Tensor } from '../tensor/tensor.js';
import { allocArray, type DType } from '../tensor/dtype.js';
import { add, concat, mul, narrow, neg } from '../ops/index.js';

export interface RotaryOptions {
  /** Positions the tables cover (offset + T must not exceed it). */
  maxSeqLen: number;
  /** Wavelength base (default 10000). */
  base?: number;
}

/**
 * x [..., T, hd] rotated by tables cos, sin [T, hd] (each half repeated: cos[t, i] = cos[t, i + hd/2]).
 * out = x * cos + rotateHalf(x) * sin, rotateHalf(x) = concat(-x2, x1).
 */
export function applyRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const hd = x.shape[x.rank - 1]!;
  const h = hd / 2;
  const x1 = narrow(x, -1, 0, h);
  const x2 = narrow(x, -1, h, h);
  const rotated = concat([neg(x2), x1], -1);
  return add(mul(x, cos), mul(rotated, sin));
}

export class RotaryEmbedding {
  readonly maxSeqLen: number;
  readonly base: number;
  // maxSeqLen = P, hd = head size
  private readonly cos64: Float64Array; // [P, hd]
  private readonly sin64: Float64Array; // [P, hd]

  constructor(readonly headDim: number, opts: RotaryOptions) {
    if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) throw new Error(`RotaryEmbedding: headDim must be a positive even integer, got ${headDim}`);
    if (!Number.isInteger(opts.maxSeqLen) || opts.maxSeqLen <= 0) throw new Error(`RotaryEmbedding: maxSeqLen must be a positive integer, got ${opts.maxSeqLen}`);
    this.maxSeqLen = opts.maxSeqLen;
    this.base = opts.base ?? 10000;
    if (!(this.base > 1 && Number.isFinite(this.base))) throw new Error(`RotaryEmbedding: base must be a finite number > 1, got ${this.base}`);
    const h = headDim / 2;
    this.cos64 = new Float64Array(this.maxSeqLen * headDim);
    this.sin64 = new Float64Array(this.maxSeqLen * headDim);
    for (let p = 0; p < this.maxSeqLen; p++) {
      for (let j = 0; j < h; j++) {
        // angles in float64, so float32 tables are correctly rounded even at large positions
        const angle = p * Math.pow(this.base, (-2 * j) / headDim);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const o = p * headDim;
        this.cos64[o + j] = this.cos64[o + j + h] = c;
        this.sin64[o + j] = this.sin64[o + j + h] = s;
      }
    }
  }

  /** cos and sin tables [T, hd] for positions offset .. offset + T - 1, in dtype. */
  tables(T: number, offset: number, dtype: DType): [Tensor, Tensor] {
    if (!Number.isInteger(offset) || offset < 0 || offset + T > this.maxSeqLen) {
      throw new Error(`RotaryEmbedding: positions ${offset} .. ${offset + T - 1} exceed maxSeqLen = ${this.maxSeqLen}`);
    }
    const hd = this.headDim;
    const take = (src: Float64Array): Tensor => {
      const d = allocArray(dtype, T * hd);
      d.set(src.subarray(offset * hd, (offset + T) * hd));
      return new Tensor(d, [T, hd]);
    };
    return [take(this.cos64), take(this.sin64)];
  }

  /** x [..., T, hd] -> [..., T, hd], token t at position offset + t. */
  forward(x: Tensor, offset = 0): Tensor {
    if (x.rank < 2 || x.shape[x.rank - 1] !== this.headDim) {
      throw new Error(`RotaryEmbedding: input must be [..., T, ${this.headDim}], got [${x.shape.join(', ')}]`);
    }
    const [cos, sin] = this.tables(x.shape[x.rank - 2]!, offset, x.dtype);
    return applyRotary(x, cos, sin);
  }
}
