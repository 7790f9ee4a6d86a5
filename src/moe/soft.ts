// Soft MoE (Puigcerver et al. 2023). Per group of m tokens (one example), logits = X Phi over
// n*p slots, with tokens and Phi's columns l2-normalised and a learned scale. D = softmax over
// tokens (each slot a convex combination of tokens), C = softmax over slots (each output a convex
// combination of slot outputs): slots = D^T X (or D^T X-hat, the normalised tokens, as Chung et
// al.'s code does); expert j runs on its p slots; Y = C * outputs.
// Replaces router, bins, permute and un-permute; the expert bank (step 4) is shared. With many
// small experts the same function runs reassociated, without forming slots (tokenSide).

import { Module } from '../nn/module.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { normal, uniform } from '../nn/init.js';
import { add, div, gelu, geluTanh, matmul, mul, relu, reshape, silu, softmax, sqrt, square, sum, transpose } from '../ops/index.js';
import { ExpertBank, expertOfRows, type Activation } from './experts/bank.js';
import { checkKeys, checkType } from './config.js';
import { checkInt } from './util.js';

export interface SoftMoEConfig {
  /** Token width d. */
  dModel: number;
  /** Number of experts n. */
  numExperts: number;
  /** Slots per expert p (default 1). */
  slotsPerExpert?: number;
  /** Hidden width of each expert. */
  dFF: number;
  /** Expert activation (default 'gelu'). */
  activation?: Activation;
  /** Expert biases (default false). */
  bias?: boolean;
  /** l2-normalise tokens and Phi's columns, with a learned scale (default true, as in the paper). */
  normalize?: boolean;
  /**
   * What the slots are formed from: 'raw' tokens, slots = D^T X (default; Puigcerver et al.'s
   * Algorithm 2 and the original Soft MoE code), or the l2-'normalized' tokens the router sees,
   * slots = D^T X-hat (Chung et al.'s code). 'normalized' needs normalize: true.
   */
  slotInputs?: 'raw' | 'normalized';
  /**
   * Phi's initialisation: 'normal' N(0, 1/d) (default; columns of norm ~1) or 'uniform' U[-1, 1]
   * (Chung et al.'s code; columns of norm ~sqrt(d/3), so under Adam the direction of a column moves
   * sqrt(d/3) times slower relative to its size).
   */
  phiInit?: 'normal' | 'uniform';
  /** Seed for Phi and the experts (default 0). */
  seed?: number;
}

const KEYS = ['dModel', 'numExperts', 'slotsPerExpert', 'dFF', 'activation', 'bias', 'normalize', 'slotInputs', 'phiInit', 'seed'] as const;

/**
 * What the slot side pays per element of a [B, n*p, d] slot tensor beyond its multiply-adds, in
 * multiply-adds: strided copies, fresh output pages, and GEMMs too small or thin to run near peak
 * (see chooseFormulation). Calibrated on the paper's grid (m = 4, d = 196, h = floor(784/n);
 * 2 vCPUs AVX2 EPYC, shared, 2026-11-30; ms per training step, slots vs tokens, medians of 21
 * interleaved rounds, MOE_NATIVE_THREADS=1): n = 8: 32 vs 47, n = 16: 40 vs 53, n = 32: 75 vs 50;
 * the estimate crosses between n = 16 and 32 for constants from ~140 to ~290.
 */
const SLOT_TRAFFIC = 256;

export interface SoftMoEMetrics {
  /** Sum of C per expert, over the batch, tokens and the expert's slots. */
  combineSumPerExpert: number[];
  dispatchMin: number;
  dispatchMax: number;
  combineMin: number;
  combineMax: number;
}

export interface SoftMoEOutput {
  y: Tensor;
  /** Dispatch weights D [B, m, n*p] (softmax over tokens). */
  dispatch: Tensor;
  /** Combine weights C [B, m, n*p] (softmax over slots). */
  combine: Tensor;
  /** Computed on first read. */
  readonly metrics: SoftMoEMetrics;
}

/** x / sqrt(sum(x^2) + eps) along an axis. */
function l2normalize(x: Tensor, axis: number): Tensor {
  return div(x, sqrt(add(sum(square(x), axis, true), 1e-6)));
}

export class SoftMoELayer extends Module {
  readonly phi: Tensor;
  readonly scale: Tensor | null;
  readonly experts: ExpertBank;
  readonly slotsPerExpert: number;
  readonly numExperts: number;
  readonly dModel: number;
  readonly normalize: boolean;
  readonly slotInputs: 'raw' | 'normalized';
  /**
   * Which of two equal formulations forward runs: 'slots' forms the slots (the paper's order),
   * 'tokens' reassociates so that no [B, n*p, d] tensor is formed (see tokenSide), 'auto' (the
   * default) picks the cheaper by a cost estimate; many experts with few hidden units each favour
   * 'tokens'. Outputs and gradients agree up to float rounding.
   */
  formulation: 'auto' | 'slots' | 'tokens' = 'auto';

  constructor(config: SoftMoEConfig) {
    super();
    checkKeys('SoftMoELayer', config, KEYS);
    for (const k of ['dModel', 'numExperts', 'slotsPerExpert', 'dFF', 'seed'] as const) checkType('SoftMoELayer', k, config[k], 'number');
    checkInt('SoftMoELayer', 'dModel', config.dModel, 1);
    checkInt('SoftMoELayer', 'numExperts', config.numExperts, 1);
    checkInt('SoftMoELayer', 'dFF', config.dFF, 1);
    this.slotsPerExpert = config.slotsPerExpert ?? 1;
    checkInt('SoftMoELayer', 'slotsPerExpert', this.slotsPerExpert, 1);
    this.numExperts = config.numExperts;
    this.dModel = config.dModel;
    this.normalize = config.normalize ?? true;
    checkType('SoftMoELayer', 'normalize', config.normalize, 'boolean');
    this.slotInputs = config.slotInputs ?? 'raw';
    if (this.slotInputs !== 'raw' && this.slotInputs !== 'normalized') throw new Error(`SoftMoELayer: slotInputs must be 'raw' or 'normalized', got ${JSON.stringify(config.slotInputs)}`);
    if (this.slotInputs === 'normalized' && !this.normalize) throw new Error("SoftMoELayer: slotInputs 'normalized' forms slots from the l2-normalised tokens the router sees, so it needs normalize: true");
    const phiInit = config.phiInit ?? 'normal';
    if (phiInit !== 'normal' && phiInit !== 'uniform') throw new Error(`SoftMoELayer: phiInit must be 'normal' or 'uniform', got ${JSON.stringify(config.phiInit)}`);
    const rng = new Rng(config.seed ?? 0);
    const phiShape = [config.dModel, config.numExperts * this.slotsPerExpert];
    this.phi = this.param('phi', phiInit === 'uniform' ? uniform(phiShape, 1, rng) : normal(phiShape, 1 / Math.sqrt(config.dModel), rng));
    this.scale = this.normalize ? this.param('scale', Tensor.empty([1])) : null;
    if (this.scale) this.scale.data[0] = 1;
    this.experts = this.module('experts', new ExpertBank(config.numExperts, config.dModel, config.dFF, {
      activation: config.activation ?? 'gelu', bias: config.bias ?? false, seed: (config.seed ?? 0) + 1,
    }));
  }

  /** Logits [B, m, n*p]. */
  logits(x: Tensor): Tensor {
    return this.route(x).logits;
  }

  /** The logits and the tokens the router saw (l2-normalised rows of x when normalize is on). */
  private route(x: Tensor): { logits: Tensor; routed: Tensor } {
    if (!this.normalize) return { logits: matmul(x, this.phi), routed: x };
    const xn = l2normalize(x, -1);
    return { logits: mul(matmul(xn, l2normalize(this.phi, 0)), this.scale!), routed: xn };
  }

  /**
   * x [B, m, d] (or [m, d]) -> D, C [B, m, n*p], and x3 [B, m, d]: the tokens the slots are formed
   * from, slots = D^T x3. That is the input itself, or its l2-normalised rows when slotInputs is
   * 'normalized'; callers that form slots (Algorithm 1, the per-expert terms) use x3 for it.
   */
  weights(x: Tensor): { x3: Tensor; dispatch: Tensor; combine: Tensor } {
    const xb = this.asBatch(x);
    const { logits: lg, routed } = this.route(xb);
    return { x3: this.slotInputs === 'normalized' ? routed : xb, dispatch: softmax(lg, 1), combine: softmax(lg, 2) };
  }

  asBatch(x: Tensor): Tensor {
    const d = this.dModel;
    if (x.rank === 2 && x.shape[1] === d) return reshape(x, [1, x.shape[0]!, d]);
    if (x.rank !== 3 || x.shape[2] !== d) throw new Error(`SoftMoELayer: input must be [B, m, ${d}] or [m, ${d}], got [${x.shape.join(', ')}]`);
    return x;
  }

  /** Runs expert j on its slots: slots [B, n*p, d] -> outputs [B, n*p, d]. */
  runExperts(slots: Tensor): Tensor {
    const [B] = slots.shape as [number];
    const n = this.numExperts;
    const p = this.slotsPerExpert;
    const d = this.dModel;
    // expert-major rows: [n, B, p, d], each expert one contiguous group of B*p rows
    const rows = reshape(transpose(reshape(slots, [B, n, p, d]), [1, 0, 2, 3]), [n * B * p, d]);
    const sizes = new Int32Array(n).fill(B * p);
    const out = this.experts.forward(rows, sizes, this.experts.b1 ? expertOfRows(sizes) : undefined);
    return reshape(transpose(reshape(out, [n, B, p, d]), [1, 0, 2, 3]), [B, n * p, d]);
  }

  forward(x: Tensor): SoftMoEOutput {
    const { x3, dispatch, combine } = this.weights(x);
    const y = this.chooseFormulation(x3.shape[1]!) === 'slots' ? this.slotSide(x3, dispatch, combine) : this.tokenSide(x3, dispatch, combine);
    // metrics on first read: they cost a pass over D and C that a training step need not pay
    let metrics: SoftMoEMetrics | null = null;
    const n = this.numExperts;
    const p = this.slotsPerExpert;
    return {
      y: reshape(y, x.shape), dispatch, combine,
      get metrics(): SoftMoEMetrics { return (metrics ??= noGrad(() => softMetrics(dispatch, combine, n, p))); },
    };
  }

  /** The formulation forward uses for groups of m tokens (see `formulation`). */
  chooseFormulation(m: number): 'slots' | 'tokens' {
    if (this.formulation !== 'auto') return this.formulation;
    const { numExperts: n, slotsPerExpert: p, dModel: d } = this;
    const h = this.experts.dHidden;
    const L = this.experts.activation === 'swiglu' ? 3 : 2; // expert matrices
    // multiply-adds per group (forward; backward scales alike): the slot side contracts D and C
    // with [n*p, d] slots and runs each expert on its p slots; the token side runs every expert on
    // all m tokens and contracts D and C with [n*p, h] hidden rows. The slot side also streams
    // [n*p, d] slot tensors through memory several times (transposes, expert inputs and outputs,
    // their gradients): SLOT_TRAFFIC weighs that per element, measured by `moe bench soft-moe`.
    const slotSide = n * p * d * (2 * m + L * h + SLOT_TRAFFIC);
    const tokenSide = m * n * h * (L * d + 2 * p);
    return tokenSide < slotSide ? 'tokens' : 'slots';
  }

  /** The paper's order: slots = D^T X [B, n*p, d], expert j on its p slots, Y = C outputs. */
  slotSide(x3: Tensor, dispatch: Tensor, combine: Tensor): Tensor {
    const slots = matmul(dispatch, x3, { transA: true }); // [B, n*p, d]
    return matmul(combine, this.runExperts(slots)); // [B, m, d]
  }

  /**
   * The same function reassociated so that no [B, n*p, d] tensor exists. An expert's first layer
   * is linear in its slot, and a slot is a D-weighted sum of tokens, so slot (j, q)'s pre-activation
   * is sum_t D[t, (j,q)] (x_t W1_j): one GEMM of all tokens against every expert's W1 side by side
   * ([B*m, d] @ [d, n*h]), then a contraction over the m tokens. Likewise Y = sum_s C[:, s]
   * (a_s W2_j) = (sum_q C[:, (j,q)] a_(j,q))_j @ [W2_1; ...; W2_n]: one [B*m, n*h] @ [n*h, d] GEMM.
   * The contractions over the m tokens and p slots are broadcast products summed over an axis: the
   * biggest intermediates are [B, m, n*p, h] (p times the m*n*h of the GEMM outputs). (Fused loops
   * in TypeScript did the same in one pass each but ran 2-6x slower than the native elementwise
   * kernels here; a native kernel would need the backend registry.)
   */
  tokenSide(x3: Tensor, dispatch: Tensor, combine: Tensor): Tensor {
    const [B, m, d] = x3.shape as [number, number, number];
    const n = this.numExperts;
    const p = this.slotsPerExpert;
    const bank = this.experts;
    const h = bank.dHidden;
    const x2 = reshape(x3, [B * m, d]);
    const D = reshape(dispatch, [B, m, n, p, 1]);
    // pre-activation of every slot [B, n, p, h]: sum over tokens of D times the token's W1_j row
    const slotPre = (w: Tensor): Tensor => {
      const xw = reshape(matmul(x2, reshape(transpose(w, [1, 0, 2]), [d, n * h])), [B, m, n, 1, h]);
      return sum(mul(D, xw), 1);
    };
    let a = slotPre(bank.w1);
    if (bank.b1) a = add(a, reshape(bank.b1, [n, 1, h]));
    switch (bank.activation) {
      case 'gelu': a = gelu(a); break;
      case 'geluTanh': a = geluTanh(a); break;
      case 'relu': a = relu(a); break;
      case 'silu': a = silu(a); break;
      case 'swiglu': a = mul(silu(a), slotPre(bank.w3!)); break;
    }
    // each token's C-weighted hidden rows per expert [B, m, n, h], summed over the expert's p slots
    const Cw = mul(reshape(combine, [B, m, n, p, 1]), reshape(a, [B, 1, n, p, h]));
    const z = p === 1 ? reshape(Cw, [B * m, n * h]) : reshape(sum(Cw, 3), [B * m, n * h]);
    let y = matmul(z, reshape(bank.w2, [n * h, d]));
    if (bank.b2) {
      // sum_s C[:, s] b2_j(s): each token's total combine weight per expert times the expert's bias
      const cPerExpert = p === 1 ? reshape(combine, [B * m, n]) : sum(reshape(combine, [B * m, n, p]), 2);
      y = add(y, matmul(cPerExpert, bank.b2));
    }
    return reshape(y, [B, m, d]);
  }
}

export function softMetrics(D: Tensor, C: Tensor, n: number, p: number): SoftMoEMetrics {
  // plain indexed loops: this runs on every training step of a configured run, over B*m*n*p values
  const per = new Float64Array(n);
  const cd = C.data;
  const np = n * p;
  for (let o = 0; o < cd.length; o += np) {
    for (let j = 0, i = o; j < n; j++) {
      let s = 0;
      for (let q = 0; q < p; q++) s += cd[i++]!;
      per[j]! += s;
    }
  }
  const range = (t: Tensor): [number, number] => {
    const v = t.data;
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < v.length; i++) {
      const x = v[i]!;
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
    return [lo, hi];
  };
  const [dispatchMin, dispatchMax] = range(D);
  const [combineMin, combineMax] = range(C);
  return { combineSumPerExpert: Array.from(per), dispatchMin, dispatchMax, combineMin, combineMax };
}
