// Soft MoE (Puigcerver et al. 2023). Per group of m tokens (one example), logits = X Phi over
// n*p slots, with tokens and Phi's columns l2-normalised and a learned scale. D = softmax over
// tokens (each slot a convex combination of tokens), C = softmax over slots (each output a convex
// combination of slot outputs): slots = D^T X; expert j runs on its p slots; Y = C * outputs.
// Replaces router, bins, permute and un-permute; the expert bank (step 4) is shared.

import { Module } from '../nn/module.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { normal } from '../nn/init.js';
import { add, div, matmul, mul, reshape, softmax, sqrt, square, sum, transpose } from '../ops/index.js';
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
  /** Seed for Phi and the experts (default 0). */
  seed?: number;
}

const KEYS = ['dModel', 'numExperts', 'slotsPerExpert', 'dFF', 'activation', 'bias', 'normalize', 'seed'] as const;

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
  metrics: SoftMoEMetrics;
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
    const rng = new Rng(config.seed ?? 0);
    this.phi = this.param('phi', normal([config.dModel, config.numExperts * this.slotsPerExpert], 1 / Math.sqrt(config.dModel), rng));
    this.scale = this.normalize ? this.param('scale', Tensor.empty([1])) : null;
    if (this.scale) this.scale.data[0] = 1;
    this.experts = this.module('experts', new ExpertBank(config.numExperts, config.dModel, config.dFF, {
      activation: config.activation ?? 'gelu', bias: config.bias ?? false, seed: (config.seed ?? 0) + 1,
    }));
  }

  /** Logits [B, m, n*p]. */
  logits(x: Tensor): Tensor {
    if (!this.normalize) return matmul(x, this.phi);
    return mul(matmul(l2normalize(x, -1), l2normalize(this.phi, 0)), this.scale!);
  }

  /** x [B, m, d] (or [m, d]) -> D, C [B, m, n*p]. */
  weights(x: Tensor): { x3: Tensor; dispatch: Tensor; combine: Tensor } {
    const x3 = this.asBatch(x);
    const lg = this.logits(x3);
    return { x3, dispatch: softmax(lg, 1), combine: softmax(lg, 2) };
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
    const slots = matmul(dispatch, x3, { transA: true }); // [B, n*p, d]
    const y = matmul(combine, this.runExperts(slots)); // [B, m, d]
    return { y: reshape(y, x.shape), dispatch, combine, metrics: noGrad(() => softMetrics(dispatch, combine, this.numExperts, this.slotsPerExpert)) };
  }
}

export function softMetrics(D: Tensor, C: Tensor, n: number, p: number): SoftMoEMetrics {
  const per = new Array<number>(n).fill(0);
  const cd = C.data;
  const np = n * p;
  for (let i = 0; i < cd.length; i++) per[Math.floor((i % np) / p)]! += cd[i]!;
  const range = (t: Tensor): [number, number] => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of t.data) { if (v < lo) lo = v; if (v > hi) hi = v; }
    return [lo, hi];
  };
  const [dispatchMin, dispatchMax] = range(D);
  const [combineMin, combineMax] = range(C);
  return { combineSumPerExpert: per, dispatchMin, dispatchMax, combineMin, combineMax };
}
