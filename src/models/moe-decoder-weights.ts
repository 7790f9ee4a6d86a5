// The decoder's weight products in one place: a weight is a float32 Tensor or a QuantWeight (Q8_0/Q4_0 blocks).

import { Tensor } from '../tensor/tensor.js';
import { add, embedding, groupedMatmul, matmul, reshape } from '../ops/index.js';
import { QuantWeight, quantMatmul, quantGroupedMatmul } from '../infer/quant/index.js';
import { QK, dequantizeRow, quantizedBytes, type QuantType } from '../tensor/quant-blocks.js';
import { adviseHugePages } from '../backends/native/index.js';
import { kernel } from '../kernels/registry.js';
import { shapeStr } from '../tensor/shape.js';
import { OffloadedExperts } from '../infer/expert-cache.js';
import { swigluAct } from '../infer/expert-layer.js';

/**
 * A model matrix: float32 (trainable parameter) or quantised blocks, in the HF layout either way:
 * [out, in]; experts [E, out, in]. An expert stack may instead be OffloadedExperts (left in the
 * model file, brought into a slot pool on demand; see src/infer/expert-offload.ts).
 */
export type Weight = Tensor | QuantWeight | OffloadedExperts;

/** The dtypes a decoder can be loaded in. f16/bf16 are rounded and then held as float32 (no f16 kernel exists). */
export type LoadDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
export const LOAD_DTYPES: readonly LoadDType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'];

export function isQuantDType(d: LoadDType | null | undefined): d is QuantType {
  return d === 'q8_0' || d === 'q4_0';
}

/**
 * Every dense weight product of the model: x [..., in] times w stored [out, in] (HF layout), plus
 * an optional bias. A quantised w goes to quantMatmul (activations quantised to Q8_0 per row).
 */
export function linear(x: Tensor, w: Weight, b: Tensor | null = null): Tensor {
  if (w instanceof OffloadedExperts) throw new Error('linear: offloaded experts are a stack; they run through expertLinear');
  let y: Tensor;
  if (w instanceof QuantWeight) {
    const inner = x.shape[x.rank - 1]!;
    const y2 = quantMatmul(x.rank === 2 ? x : reshape(x, [x.size / inner, inner]), w);
    y = x.rank === 2 ? y2 : reshape(y2, [...x.shape.slice(0, -1), w.shape[0]!]);
  } else {
    y = matmul(x, w, { transB: true });
  }
  return b ? add(y, b) : y;
}

/**
 * Every expert product: rows grouped by expert (groupSizes [E]) times w stacked [E, out, in] (each
 * expert's HF matrix as is), float32 or quantised. Both skip experts with no rows, so a decode step
 * reads only the chosen experts' weights, each a row at a time front to back. (Float32 stacks were
 * [E, in, out] until the decode kernels were tuned: the HF layout loads with a copy instead of a
 * transpose and streams better at decode.)
 */
export function expertLinear(x: Tensor, w: Weight, groupSizes: Int32Array): Tensor {
  // offloaded: the experts with rows are made resident in the layer's slots, the same kernels run over the slot stack
  if (w instanceof OffloadedExperts) return w.linear(x, groupSizes);
  return w instanceof QuantWeight ? quantGroupedMatmul(x, w, groupSizes) : groupedMatmul(x, w, groupSizes, { transW: true });
}

/**
 * The routed experts' SwiGLU MLP, down(silu(gate x) * up x), for rows grouped by expert. Offloaded
 * experts run it as one schedule (each expert loaded at most once per call, all three products
 * while resident); stacks in memory as three grouped products. Same values either way.
 */
export function expertSwiGLU(x: Tensor, w1: Weight, w3: Weight, w2: Weight, groupSizes: Int32Array): Tensor {
  const act = swigluAct;
  if (w1 instanceof OffloadedExperts && w3 instanceof OffloadedExperts && w2 instanceof OffloadedExperts
    && w1.experts === w3.experts && w1.experts === w2.experts && w1.proj === 0 && w3.proj === 1 && w2.proj === 2) {
    return w1.experts.mlp(x, groupSizes, act);
  }
  return expertLinear(act(expertLinear(x, w1, groupSizes), expertLinear(x, w3, groupSizes)), w2, groupSizes);
}

/**
 * A decode step's routed experts added into out [T, d] by one fused kernel (expertSwiGLU): for each
 * assignment (token[a], expert[a], gates[a]), gates[a] * down(silu(gate x_t) * up x_t) summed into
 * out[t]. It replaces permute, the three grouped products, the activation, unpermute and the
 * residual add (ten kernels with JS between them) for steps of a few rows. Returns false, doing
 * nothing, when the stacks cannot take it (offloaded experts, float64, formats that differ).
 */
export function addExpertsInto(x: Tensor, token: Int32Array, expert: Int32Array, gates: Float32Array, w1: Weight, w3: Weight, w2: Weight,
  out: Float32Array): boolean {
  if (!(x.data instanceof Float32Array)) return false;
  let type: QuantType | 'f32';
  if (w1 instanceof QuantWeight && w3 instanceof QuantWeight && w2 instanceof QuantWeight) {
    if (w3.type !== w1.type || w2.type !== w1.type) return false;
    type = w1.type;
  } else if (w1 instanceof Tensor && w3 instanceof Tensor && w2 instanceof Tensor) {
    if (!(w1.data instanceof Float32Array && w3.data instanceof Float32Array && w2.data instanceof Float32Array)) return false;
    type = 'f32';
  } else {
    return false;
  }
  const [E, h, d] = w1.shape as [number, number, number];
  const T = x.shape[0]!;
  if (x.rank !== 2 || x.shape[1] !== d || out.length !== T * d) {
    throw new Error(`addExpertsInto: x ${shapeStr(x.shape)} and out (${out.length} values) do not fit experts of [${h}, ${d}]`);
  }
  kernel('expertSwiGLU')(x.data, token, expert, gates, w1.data as Float32Array | Uint8Array, w3.data as Float32Array | Uint8Array,
    w2.data as Float32Array | Uint8Array, out, T, d, h, E, type);
  return true;
}

/** Rows of the embedding table for ids [T] -> [T, d]; a quantised table is dequantised row by row (exact). */
export function embedRows(table: Weight, ids: Int32Array): Tensor {
  if (table instanceof OffloadedExperts) throw new Error('embedRows: an embedding table cannot be offloaded experts');
  if (!(table instanceof QuantWeight)) return embedding(table, new Tensor(ids, [ids.length]));
  const [V, d] = table.shape as [number, number];
  const rowBytes = quantizedBytes(table.type, d);
  const out = new Float32Array(ids.length * d);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!;
    if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new Error(`embedding: token id ${id} at position ${t} is outside the vocabulary of ${V}`);
    dequantizeRow(table.type, table.data, id * rowBytes, d, out, t * d);
  }
  return new Tensor(out, [ids.length, d]);
}

/**
 * A matrix of a module: quantised (zeroed blocks, filled in place by fromHF) when quant is set and
 * the input axis is a whole number of 32-value blocks; otherwise a float32 parameter registered
 * through reg. `outIn` is the HF [out, in] shape; experts > 0 stacks that many as [E, out, in].
 */
export function newMatrix(reg: (name: string, t: Tensor) => Tensor, name: string, outIn: [number, number], quant: QuantType | null, experts = 0): Weight {
  const [out, inn] = outIn;
  const shape = experts > 0 ? [experts, out, inn] : [out, inn];
  // Huge pages for the big matrices, advised while their fresh (zero) pages are still untouched.
  if (quant && inn % QK === 0) {
    const data = new Uint8Array(quantizedBytes(quant, shape.reduce((a, b) => a * b, 1)));
    adviseHugePages(data);
    return new QuantWeight(quant, shape, data);
  }
  const t = Tensor.empty(shape);
  adviseHugePages(t.data);
  return reg(name, t);
}

/** Bytes a weight occupies (what a product over all of it reads). */
export function weightBytes(w: Weight): number {
  return w instanceof QuantWeight || w instanceof OffloadedExperts ? w.bytes : w.data.byteLength;
}
