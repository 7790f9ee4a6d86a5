// quantMatmul and its expert variant: products of float activations with quantised weights.
// Inference only: no gradient is recorded (a tensor that requires one is refused).

import { Tensor } from '../../tensor/tensor.js';
import { shapeStr } from '../../tensor/shape.js';
import { kernel } from '../../kernels/registry.js';
import type { QuantWeight } from './weight.js';

function checkInput(op: string, x: Tensor, w: QuantWeight, wRank: number): { t: number; k: number } {
  if (x.requiresGrad) throw new Error(`${op}: inference only, x ${shapeStr(x.shape)} requires a gradient`);
  if (x.dtype !== 'float32') throw new Error(`${op}: x must be float32, got ${x.dtype}`);
  if (x.rank !== 2) throw new Error(`${op}: x must be [T, in], got ${shapeStr(x.shape)}`);
  if (w.shape.length !== wRank) {
    throw new Error(`${op}: weight must be ${wRank === 2 ? '[out, in]' : '[E, out, in]'}, got ${w.type} ${shapeStr(w.shape)}`);
  }
  const [t, k] = x.shape as [number, number];
  if (w.shape[wRank - 1] !== k) throw new Error(`${op}: x ${shapeStr(x.shape)} has ${k} features, weight ${shapeStr(w.shape)} expects ${w.shape[wRank - 1]}`);
  return { t, k };
}

/** x [T, in] times W^T for W [out, in] quantised: [T, out]. Activations are quantised to Q8_0 per row first (as llama.cpp does). */
export function quantMatmul(x: Tensor, w: QuantWeight): Tensor {
  const { t, k } = checkInput('quantMatmul', x, w, 2);
  const n = w.shape[0]!;
  const out = new Float32Array(t * n);
  kernel('quantMatmul')(x.data as Float32Array, w.data, out, t, n, k, w.type);
  return new Tensor(out, [t, n]);
}

/**
 * Expert product (ggml's mul_mat_id over rows sorted by expert): x [T, in] holds consecutive row
 * groups of sizes groupSizes (one per expert, sum T); group e is multiplied by W[e]^T, W [E, out, in].
 */
export function quantGroupedMatmul(x: Tensor, w: QuantWeight, groupSizes: Int32Array): Tensor {
  const { t, k } = checkInput('quantGroupedMatmul', x, w, 3);
  const [e, n] = w.shape as [number, number, number];
  if (groupSizes.length !== e) throw new Error(`quantGroupedMatmul: ${groupSizes.length} group sizes for ${e} experts`);
  let sum = 0;
  for (let g = 0; g < e; g++) {
    const s = groupSizes[g]!;
    if (!Number.isInteger(s) || s < 0) throw new Error(`quantGroupedMatmul: group size ${s} of expert ${g} is negative`);
    sum += s;
  }
  if (sum !== t) throw new Error(`quantGroupedMatmul: group sizes sum to ${sum}, x has ${t} rows`);
  const out = new Float32Array(t * n);
  kernel('quantGroupedMatmul')(x.data as Float32Array, w.data, groupSizes, out, n, k, w.type);
  return new Tensor(out, [t, n]);
}
