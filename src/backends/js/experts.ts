// Reference of the fused decode experts (expertSwiGLU): each assignment's SwiGLU expert as plain
// products, the gated rows summed per token in expert order (stable), then added to out, the order
// the native kernel sums in.

import type { KernelImpls } from '../../kernels/kernels.js';
import type { FloatArray } from '../../tensor/dtype.js';
import { BLOCK_BYTES, QK } from '../../tensor/quant-blocks.js';
import { matmul } from './matmul.js';
import { product } from './quant.js';
import { sigmoid } from './math.js';

export const expertSwiGLU: KernelImpls['expertSwiGLU'] = (x, token, expert, gates, w1, w3, w2, out, T, d, h, E, type) => {
  const A = expert.length;
  if (token.length !== A || gates.length !== A) {
    throw new Error(`expertSwiGLU: token, expert and gates must have one entry per assignment: ${token.length}, ${A}, ${gates.length}`);
  }
  if (type !== 'f32' && (d % QK !== 0 || h % QK !== 0)) throw new Error(`expertSwiGLU: d = ${d} and h = ${h} must be multiples of ${QK} for ${type} weights`);
  const rowBytes = (cols: number): number => (type === 'f32' ? cols : (cols / QK) * BLOCK_BYTES[type]);
  const need = (w: FloatArray | Uint8Array, name: string, rows: number, cols: number): void => {
    if ((type === 'f32') === (w instanceof Uint8Array)) throw new Error(`expertSwiGLU: ${name} must be ${type === 'f32' ? 'float values' : 'a Uint8Array of blocks'} for ${type} weights`);
    if (w.length < E * rows * rowBytes(cols)) throw new Error(`expertSwiGLU: ${name} has ${w.length} elements but ${E} experts of [${rows}, ${cols}] need ${E * rows * rowBytes(cols)}`);
  };
  need(w1, 'w1', h, d);
  need(w3, 'w3', h, d);
  need(w2, 'w2', d, h);
  if (x.length < T * d || out.length < T * d) throw new Error(`expertSwiGLU: x and out need ${T * d} elements, have ${x.length} and ${out.length}`);
  for (let a = 0; a < A; a++) {
    if (!(token[a]! >= 0 && token[a]! < T)) throw new Error(`expertSwiGLU: token[${a}] = ${token[a]} is outside 0..${T - 1}`);
    if (!(expert[a]! >= 0 && expert[a]! < E)) throw new Error(`expertSwiGLU: expert[${a}] = ${expert[a]} is outside 0..${E - 1}`);
  }
  const mk = (n: number): FloatArray => (x instanceof Float64Array ? new Float64Array(n) : new Float32Array(n));
  const round = x instanceof Float64Array ? (v: number): number => v : Math.fround;
  // rows [rows, cols] of expert e (one matrix of the stack) against the vector v -> [rows]
  const apply = (w: FloatArray | Uint8Array, e: number, rows: number, cols: number, v: FloatArray): FloatArray => {
    const y = mk(rows);
    if (w instanceof Uint8Array) product(v, 0, w, e * rows * rowBytes(cols), y, 0, 1, rows, cols, type as Exclude<typeof type, 'f32'>);
    else matmul(v, w.subarray(e * rows * cols, (e + 1) * rows * cols), y, 1, 1, rows, cols, false, true, false, false, false);
    return y;
  };
  if (type !== 'f32') {
    for (let t = 0; t < T; t++) {
      if (!x.subarray(t * d, (t + 1) * d).every(Number.isFinite)) throw new Error(`expertSwiGLU: x row ${t} holds a non-finite value, which cannot be quantised`);
    }
  }
  const order = Array.from({ length: A }, (_, a) => a).sort((p, q) => expert[p]! - expert[q]! || p - q);
  const sum = mk(T * d);
  for (const a of order) {
    const e = expert[a]!;
    const t = token[a]!;
    const xt = x.subarray(t * d, (t + 1) * d);
    const g = apply(w1, e, h, d, xt);
    const u = apply(w3, e, h, d, xt);
    const act = mk(h);
    // silu(g) rounded to the activation's precision before the product, as the grouped path's silu
    // and mul ops store it (js backend: fused and grouped decode agree bit for bit)
    for (let j = 0; j < h; j++) act[j] = round(g[j]! * sigmoid(g[j]!)) * u[j]!;
    if (type !== 'f32' && !act.every(Number.isFinite)) {
      throw new Error(`expertSwiGLU: the hidden activation of token ${t} holds a non-finite value, which cannot be quantised`);
    }
    const z = apply(w2, e, d, h, act);
    // the gated row rounded before it is added, as float arithmetic (and the grouped path's ops) do
    for (let j = 0; j < d; j++) sum[t * d + j] += round(gates[a]! * z[j]!);
  }
  for (let i = 0; i < T * d; i++) out[i] += sum[i]!;
};
