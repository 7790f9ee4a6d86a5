// The expert MLPs of an MoE layer as one op with its own backward: gather rows by token, grouped
// GEMM, activation, grouped GEMM, gate scaling, scatter-add back to tokens. Backward keeps only
// the hidden pre-activations (plus index vectors and gates): the activation, the permuted input
// rows and the expert outputs are recomputed or never needed (the gate gradient is read off the
// hidden layer, where the backward GEMM already lands).

import { Tensor } from '../tensor/tensor.js';
import { isGradEnabled, isRetainingGraph, record, type Saved } from '../tensor/autograd.js';
import { shapeStr } from '../tensor/shape.js';
import { kernel } from '../kernels/registry.js';
import type { FloatArray } from '../tensor/dtype.js';
import { giveScratch, takeScratch } from '../tensor/scratch.js';
import { assertFloat, assertIndicesInRange, assertSameDtype, emptyLike, floatData, uninitLike } from './util.js';

let groupedEpilogue = true;

/**
 * Whether the forward applies bias, activation and gate scaling inside the grouped GEMM
 * (groupedMatmulEpilogue; the default) or as separate passes after it; returns the previous
 * setting. Both give the same numbers; the switch exists for A/B benchmarks and tests.
 */
export function setExpertMLPEpilogue(on: boolean): boolean {
  const prev = groupedEpilogue;
  groupedEpilogue = on;
  return prev;
}

export const EXPERT_MLP_ACTIVATIONS = ['gelu', 'geluTanh', 'relu', 'silu', 'swiglu'] as const;
export type ExpertMLPActivation = (typeof EXPERT_MLP_ACTIVATIONS)[number];

export interface ExpertMLPWeights {
  /** [E, d, h] */
  w1: Tensor;
  /** [E, h, d] */
  w2: Tensor;
  /** [E, d, h]: the linear branch of SwiGLU (swiglu only). */
  w3?: Tensor | null;
  /** [E, h], added after w1 (not to the w3 branch). */
  b1?: Tensor | null;
  /** [E, d] */
  b2?: Tensor | null;
}

export interface ExpertMLPOptions {
  /**
   * Source row of x for each expert row [A'] (MoE dispatch: the token of each assignment in expert
   * order). Given: the expert rows are x[rowIndex[r]] and the output [N, d] sums each row's
   * result into row rowIndex[r] (rows nobody targets stay zero). Absent: x holds the expert rows
   * and the output has one row per input row.
   */
  rowIndex?: Int32Array;
  /** Weight of each expert row [A'] (the router's gate), multiplied into its output. */
  gates?: Tensor;
  /** Expert of each expert row [A'], needed with biases (rows of a group share one expert). */
  rowExpert?: Int32Array;
}

/**
 * y = scatter_r gate_r * MLP_{e(r)}(x[rowIndex[r]]), rows grouped by expert in consecutive runs
 * of groupSizes [E]; MLP_e(v) = act(v W1_e + b1_e) W2_e + b2_e, or for swiglu
 * (silu(v W1_e + b1_e) * v W3_e) W2_e + b2_e.
 */
export function expertMLP(x: Tensor, groupSizes: Int32Array, activation: ExpertMLPActivation, weights: ExpertMLPWeights,
  opts: ExpertMLPOptions = {}): Tensor {
  const { w1, w2 } = weights;
  const w3 = weights.w3 ?? null;
  const b1 = weights.b1 ?? null;
  const b2 = weights.b2 ?? null;
  const { rowIndex, gates, rowExpert } = opts;
  const desc = (): string => `x ${shapeStr(x.shape)}, w1 ${shapeStr(w1.shape)}, w2 ${shapeStr(w2.shape)}, ${groupSizes.length} groups`;
  const fail = (why: string): never => { throw new Error(`expertMLP: ${why} (${desc()})`); };
  if (!EXPERT_MLP_ACTIVATIONS.includes(activation)) fail(`activation '${String(activation)}' is unknown (known: ${EXPERT_MLP_ACTIVATIONS.join(', ')})`);
  const floats = [x, w1, w2, ...(w3 ? [w3] : []), ...(b1 ? [b1] : []), ...(b2 ? [b2] : []), ...(gates ? [gates] : [])];
  assertFloat('expertMLP', ...floats);
  for (const t of floats) assertSameDtype('expertMLP', x, t);
  if (x.rank !== 2) fail('x must be [rows, d]');
  if (w1.rank !== 3 || w2.rank !== 3) fail('w1 must be [E, d, h] and w2 [E, h, d]');
  const E = w1.shape[0]!;
  const d = w1.shape[1]!;
  const h = w1.shape[2]!;
  if (x.shape[1] !== d) fail(`x has ${x.shape[1]} columns, w1 expects d = ${d}`);
  if (w2.shape[0] !== E || w2.shape[1] !== h || w2.shape[2] !== d) fail(`w2 must be [${E}, ${h}, ${d}]`);
  if ((activation === 'swiglu') !== (w3 !== null)) fail(activation === 'swiglu' ? 'swiglu needs w3' : `w3 is only used by swiglu, not ${activation}`);
  if (w3 && (w3.rank !== 3 || w3.shape[0] !== E || w3.shape[1] !== d || w3.shape[2] !== h)) fail(`w3 ${shapeStr(w3.shape)} must be [${E}, ${d}, ${h}]`);
  if (b1 && (b1.rank !== 2 || b1.shape[0] !== E || b1.shape[1] !== h)) fail(`b1 ${shapeStr(b1.shape)} must be [${E}, ${h}]`);
  if (b2 && (b2.rank !== 2 || b2.shape[0] !== E || b2.shape[1] !== d)) fail(`b2 ${shapeStr(b2.shape)} must be [${E}, ${d}]`);
  if (groupSizes.length !== E) fail(`${groupSizes.length} group sizes for ${E} experts`);
  const N = x.shape[0]!;
  const rows = rowIndex ? rowIndex.length : N;
  let total = 0;
  for (let g = 0; g < E; g++) {
    if (groupSizes[g]! < 0) fail(`group ${g} has negative size ${groupSizes[g]}`);
    total += groupSizes[g]!;
  }
  if (total !== rows) fail(`group sizes sum to ${total}, but there are ${rows} expert rows`);
  if (rowIndex) assertIndicesInRange('expertMLP', rowIndex, N, 'rowIndex entry');
  if (gates && (gates.rank !== 1 || gates.shape[0] !== rows)) fail(`gates ${shapeStr(gates.shape)} must be [${rows}], one per expert row`);
  if (b1 || b2) {
    if (!rowExpert) fail('rowExpert is required when the experts have biases');
    if (rowExpert!.length !== rows) fail(`rowExpert has ${rowExpert!.length} entries for ${rows} expert rows`);
    assertIndicesInRange('expertMLP', rowExpert!, E, 'rowExpert entry');
  }
  // the caller may reuse its index buffers before backward
  const sizes = Int32Array.from(groupSizes);
  const idx = rowIndex ? Int32Array.from(rowIndex) : null;
  const ex = rowExpert && (b1 || b2) ? Int32Array.from(rowExpert) : null;
  const dt = x.dtype;
  const F = (t: Tensor): FloatArray => floatData(t);
  const gemm = kernel('groupedMatmul');

  // forward: xp [A', d] -> pre [A', h] (+ pre3) -> act [A', h] -> yp [A', d] -> out
  const needBackward = isGradEnabled() && floats.some((t) => t.requiresGrad);
  // Transients nobody outside this call sees come from the scratch pool (tensor/scratch.ts) and go
  // back as soon as their last reader is done: the gathered rows, the hidden activation, the
  // expert outputs before the scatter; and the pre-activations, after the forward without backward
  // or after the first backward (a 64 MiB allocation per step at E = 8, T = 4096 made V8 collect
  // garbage on its helper threads while the next GEMM ran: 8-18 ms of a ~320 ms step).
  const fdt = dt as 'float32' | 'float64';
  const scratch = (n: number, s: number[]): Tensor => new Tensor(takeScratch(fdt, n), s);
  const xp = idx ? gatherRowsRaw(x, idx) : x;
  let pre: Tensor;
  let pre3: Tensor | null = null;
  let act: Tensor;
  const hidden = (): Tensor => scratch(rows * h, [rows, h]);
  const yp = idx ? scratch(rows * d, [rows, d]) : uninitLike([rows, d], dt);
  if (groupedEpilogue) {
    // bias, activation and gate scaling on each group right after its product (one pass less
    // over the hidden, and none over an extra buffer when backward does not need the pre-activation)
    const gemmEp = kernel('groupedMatmulEpilogue');
    const b1d = b1 ? F(b1) : null;
    if (w3) {
      pre = hidden();
      gemmEp(F(xp), F(w1), sizes, F(pre), d, h, false, b1d, null, null, null);
      pre3 = hidden();
      gemm(F(xp), F(w3), sizes, F(pre3), d, h, false);
      act = activate(activation, pre, pre3, hidden());
    } else {
      act = hidden();
      pre = needBackward ? hidden() : act;
      gemmEp(F(xp), F(w1), sizes, F(act), d, h, false, b1d, activation as Exclude<ExpertMLPActivation, 'swiglu'>, null,
        needBackward ? F(pre) : null);
    }
    if (idx) giveScratch(F(xp));
    gemmEp(F(act), F(w2), sizes, F(yp), h, d, false, b2 ? F(b2) : null, null, gates ? F(gates) : null, null);
  } else {
    pre = hidden();
    gemm(F(xp), F(w1), sizes, F(pre), d, h, false);
    if (b1) addRowBias(F(pre), F(b1), ex!, h);
    if (w3) {
      pre3 = hidden();
      gemm(F(xp), F(w3), sizes, F(pre3), d, h, false);
    }
    if (idx) giveScratch(F(xp));
    act = activate(activation, pre, pre3, hidden());
    gemm(F(act), F(w2), sizes, F(yp), h, d, false);
    if (b2) addRowBias(F(yp), F(b2), ex!, d);
    if (gates) scaleRows(yp, gates); // in place: same arithmetic as mul(yp, gates[:, None])
  }
  // act may be pre (no backward, no SwiGLU): one buffer, given back once
  giveScratch(F(act));
  if (!needBackward) giveScratch(F(pre), pre3 ? F(pre3) : null);
  let out = yp;
  if (idx) {
    out = emptyLike([N, d], dt);
    kernel('scatterAddRows')(F(yp), idx, F(out), N, d);
    giveScratch(F(yp));
  }
  if (!needBackward) return out;

  const inputs: Tensor[] = [x, w1, w2];
  if (w3) inputs.push(w3);
  if (b1) inputs.push(b1);
  if (b2) inputs.push(b2);
  if (gates) inputs.push(gates);
  const saved: Saved[] = [x, w1, w2, pre, sizes];
  if (pre3) saved.push(pre3);
  for (const t of [w3, b1, b2, gates]) if (t) saved.push(t);
  for (const a of [idx, ex]) if (a) saved.push(a);

  let released = false;
  return record(out, 'expertMLP', inputs, (gOut) => {
    if (released) {
      throw new Error('expertMLP: backward through this graph a second time, but the first backward released its saved pre-activations; '
        + 'pass { retainGraph: true } to the first backward to run another, or run the forward again');
    }
    // gp [A', d]: the output gradient of each expert row, before the gate
    // (every [A', *] transient here is scratch, given back at the end of this closure)
    const gp = idx ? gatherRowsRaw(gOut, idx) : gOut;
    // u = gp W2^T [A', h]; with y_r = gate_r * (act_r W2 + b2), dgate_r = <u_r, act_r> + <gp_r, b2>
    const u = scratch(rows * h, [rows, h]);
    gemm(F(gp), F(w2), sizes, F(u), d, h, true);
    let dGates: Tensor | null = null;
    if (gates?.requiresGrad) {
      dGates = emptyLike([rows], dt);
      // the bias part <gp_r, b2_e> of dgate_r, read before gp is scaled in place below
      if (b2) addBiasDot(F(dGates), F(gp), F(b2), ex!, d);
    }
    // recompute the hidden activation from the kept pre-activation
    let silu1: Tensor | null = null;
    const hAct = scratch(rows * h, [rows, h]);
    if (pre3) {
      silu1 = scratch(rows * h, [rows, h]);
      kernel('unary')('silu', F(pre), F(silu1));
      kernel('binary')('mul', F(silu1), [rows, h], F(pre3), [rows, h], F(hAct), [rows, h]);
    } else {
      // one pass over the hidden: the activation, <u_r, act_r> into dgate_r, and u becomes
      // dpre = gate * u * act'(pre) (for the exact GELU one erfc serves value and derivative)
      kernel('activationBackwardRows')(activation as Exclude<ExpertMLPActivation, 'swiglu'>, F(pre), F(u), gates ? F(gates) : null,
        F(hAct), dGates ? F(dGates) : null, rows, h);
    }
    // gps: the gate-scaled output gradient, the gradient of act W2 + b2 (gp is ours when
    // gathered; otherwise it is the caller's gradient and must stay unchanged)
    let gps = gp;
    if (gates) {
      gps = idx ? gp : copyOf(gp, scratch(rows * d, [rows, d]));
      scaleRows(gps, gates);
    }
    const dw2 = w2.requiresGrad ? weightGrad(w2, hAct, gps, sizes, h, d) : null;
    const db2 = b2?.requiresGrad ? sumRowsByExpert(F(gps), ex!, E, d, dt) : null;
    let dpre3: Tensor | null = null;
    if (pre3) {
      if (gates) {
        if (dGates) {
          // + <u_r, act_r>, as a native elementwise product and row sum; act is not needed past dW2,
          // so the product overwrites it (same-index elementwise, safe in place)
          kernel('binary')('mul', F(u), [rows, h], F(hAct), [rows, h], F(hAct), [rows, h]);
          const dot = emptyLike([rows], dt);
          kernel('reduce')('sum', F(hAct), F(dot), null, rows, h, 1);
          const dg = F(dGates);
          const dd = F(dot);
          for (let r = 0; r < rows; r++) dg[r] = dg[r]! + dd[r]!;
        }
        // u becomes d(act) = gate * u, in place
        scaleRows(u, gates);
      }
      // act = silu(p1) * p3: dp3 = dact * silu(p1); dp1 = dact * p3 * silu'(p1)
      dpre3 = scratch(rows * h, [rows, h]);
      kernel('binary')('mul', F(u), [rows, h], F(silu1!), [rows, h], F(dpre3), [rows, h]);
      // elementwise kernels read and write the same index, so these may work in place on u
      kernel('binary')('mul', F(u), [rows, h], F(pre3), [rows, h], F(u), [rows, h]);
      kernel('unaryBackward')('silu', F(pre), F(silu1!), F(u), F(u));
    }
    const dpre = u;
    // the permuted input rows, re-gathered only now that they are needed (cheap next to the GEMMs)
    const needX = w1.requiresGrad || (w3?.requiresGrad ?? false);
    const xr = needX && idx ? gatherRowsRaw(x, idx) : x;
    const dw1 = w1.requiresGrad ? weightGrad(w1, xr, dpre, sizes, d, h) : null;
    const dw3 = w3?.requiresGrad ? weightGrad(w3, xr, dpre3!, sizes, d, h) : null;
    const db1 = b1?.requiresGrad ? sumRowsByExpert(F(dpre), ex!, E, h, dt) : null;
    if (xr !== x) giveScratch(F(xr));
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      const dxp = idx ? scratch(rows * d, [rows, d]) : uninitLike([rows, d], dt);
      gemm(F(dpre), F(w1), sizes, F(dxp), h, d, true);
      if (w3) {
        const dxp3 = scratch(rows * d, [rows, d]);
        gemm(F(dpre3!), F(w3), sizes, F(dxp3), h, d, true);
        kernel('binary')('add', F(dxp), [rows, d], F(dxp3), [rows, d], F(dxp), [rows, d]);
        giveScratch(F(dxp3));
      }
      if (idx) {
        dx = emptyLike([N, d], dt);
        kernel('scatterAddRows')(F(dxp), idx, F(dx), N, d);
        giveScratch(F(dxp));
      } else {
        dx = dxp;
      }
    }
    // gp and gps are ours only when gathered or copied (otherwise gp is the caller's gradient)
    giveScratch(F(u), F(hAct), silu1 ? F(silu1) : null, dpre3 ? F(dpre3) : null, gps !== gOut ? F(gps) : null);
    if (idx) giveScratch(F(gp));
    if (!isRetainingGraph()) {
      giveScratch(F(pre), pre3 ? F(pre3) : null);
      released = true;
    }
    const grads: Array<Tensor | null> = [dx, dw1, dw2];
    if (w3) grads.push(dw3);
    if (b1) grads.push(db1);
    if (b2) grads.push(db2);
    if (gates) grads.push(dGates);
    return grads;
  }, saved);
}

/** src's rows idx [A', d], in a scratch buffer (the caller gives it back). */
function gatherRowsRaw(src: Tensor, idx: Int32Array): Tensor {
  const d = src.shape[1]!;
  const out = new Tensor(takeScratch(src.dtype as 'float32' | 'float64', idx.length * d), [idx.length, d]);
  kernel('gatherRows')(floatData(src), idx, floatData(out), src.shape[0]!, d);
  return out;
}

function copyOf(t: Tensor, into: Tensor): Tensor {
  (into.data as FloatArray).set(t.data as FloatArray);
  return into;
}

/** Hidden activation [A', h] from the pre-activation (and the SwiGLU linear branch). */
function activate(activation: ExpertMLPActivation, pre: Tensor, pre3: Tensor | null, out: Tensor): Tensor {
  const shape = pre.shape;
  if (activation === 'swiglu') {
    kernel('unary')('silu', floatData(pre), floatData(out));
    kernel('binary')('mul', floatData(out), shape, floatData(pre3!), shape, floatData(out), shape);
  } else {
    kernel('unary')(activation, floatData(pre), floatData(out));
  }
  return out;
}

/** rows of t [A', n] times gates [A'], in place. */
function scaleRows(t: Tensor, gates: Tensor): void {
  const shape = t.shape;
  kernel('binary')('mul', floatData(t), shape, floatData(gates), [shape[0]!, 1], floatData(t), shape);
}

/** Calls f(e, r0, r1) for each run of consecutive rows r0 <= r < r1 of one expert e = ex[r]. */
function eachExpertRun(ex: Int32Array, f: (e: number, r0: number, r1: number) => void): void {
  for (let r0 = 0; r0 < ex.length;) {
    let r1 = r0 + 1;
    while (r1 < ex.length && ex[r1] === ex[r0]) r1++;
    f(ex[r0]!, r0, r1);
    r0 = r1;
  }
}

/** out[r, :] += b[ex[r], :]: one broadcasting add per run of rows of one expert (native: vectorised). */
function addRowBias(out: FloatArray, b: FloatArray, ex: Int32Array, n: number): void {
  eachExpertRun(ex, (e, r0, r1) => {
    const rows = out.subarray(r0 * n, r1 * n);
    kernel('binary')('add', rows, [r1 - r0, n], b.subarray(e * n, (e + 1) * n), [n], rows, [r1 - r0, n]);
  });
}

/** dg[r] += <gp[r, :], b[ex[r], :]> (the gate gradient's part from the output bias). */
function addBiasDot(dg: FloatArray, gp: FloatArray, b: FloatArray, ex: Int32Array, d: number): void {
  for (let r = 0; r < ex.length; r++) {
    let s = 0;
    const o = ex[r]! * d;
    for (let j = 0; j < d; j++) s += gp[r * d + j]! * b[o + j]!;
    dg[r] = dg[r]! + s;
  }
}

/** [E, n] with row e the sum of the rows of src [A', n] whose expert is e (the bias gradient). */
function sumRowsByExpert(src: FloatArray, ex: Int32Array, E: number, n: number, dtype: Tensor['dtype']): Tensor {
  const out = emptyLike([E, n], dtype);
  const o = floatData(out);
  const part = floatData(emptyLike([n], dtype));
  eachExpertRun(ex, (e, r0, r1) => {
    // a column sum of the run, added to the expert's row (an expert may own several runs)
    kernel('reduce')('sum', src.subarray(r0 * n, r1 * n), part, null, 1, r1 - r0, n);
    const row = o.subarray(e * n, (e + 1) * n);
    kernel('binary')('add', row, [n], part, [n], row, [n]);
  });
  return out;
}

/**
 * Weight gradient dW_g = a_g^T dy_g [E, k, n] for row groups. When w is a leaf that already holds
 * a gradient, it is accumulated into that buffer in place (no second [E, k, n] buffer, which at
 * many experts is the largest transient of backward) and null is returned, so the engine adds
 * nothing; otherwise a fresh gradient is returned for the engine to store or sum.
 */
function weightGrad(w: Tensor, a: Tensor, dy: Tensor, sizes: Int32Array, k: number, n: number): Tensor | null {
  const g = w.grad;
  if (!w.node && g && g.dtype === w.dtype && g.size === w.size && g.data.buffer !== w.data.buffer) {
    const gd = floatData(g);
    const ad = floatData(a);
    const yd = floatData(dy);
    const mm = kernel('matmul');
    let r0 = 0;
    for (let e = 0; e < sizes.length; e++) {
      const m = sizes[e]!;
      if (m > 0) {
        // [m, k]^T @ [m, n] added into the expert's slice of the gradient
        mm(ad.subarray(r0 * k, (r0 + m) * k), yd.subarray(r0 * n, (r0 + m) * n), gd.subarray(e * k * n, (e + 1) * k * n),
          1, k, n, m, true, false, false, false, true);
      }
      r0 += m;
    }
    return null;
  }
  const out = uninitLike(w.shape, w.dtype);
  kernel('groupedMatmulWeightGrad')(floatData(a), floatData(dy), sizes, floatData(out), k, n);
  return out;
}
