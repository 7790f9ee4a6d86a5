// SwitchHead (Csordás et al. 2023): attention whose value and output projections are mixtures of
// experts. Per head h, a sigmoid gate on the source token chooses k of E value experts and a sigmoid
// gate on the destination (query) token chooses k of E output experts; queries and keys stay dense:
//   s_h(x) = sigmoid(x W_S^h),  d_h(x) = sigmoid(x W_D^h)                          [E] each
//   v_{h,j} = sum_{e in topk(s_h(x_j))} s_h(x_j)_e  x_j W_V^{h,e}                   [hd]
//   a_{h,i} = sum_j softmax_j(q_{h,i} . k_{h,j} / sqrt(hd)) v_{h,j}                  (causal: j <= i)
//   y_i     = sum_h sum_{e in topk(d_h(x_i))} d_h(x_i)_e  a_{h,i} W_O^{h,e}          [d]
// The chosen (token, head, expert) rows run as grouped GEMMs over the H*E expert groups (only k
// experts per head and token are computed), gathered and scattered like the MoE layer's permute.
//
// B = batch, T = time, N = B*T tokens, d = channels, H = heads, hd = head size, E = experts per head,
// k = experts per head and token, G = H*E groups, M = N*H*k chosen rows.

import { Module } from '../../nn/module.js';
import { Linear } from '../../nn/linear.js';
import { uniform } from '../../nn/init.js';
import { RotaryEmbedding } from '../../nn/rope.js';
import { causalMask } from '../../nn/attention.js';
import type { CachedProjections, SelfAttention } from '../../nn/sublayers.js';
import type { Tensor } from '../../tensor/tensor.js';
import { Rng } from '../../tensor/rng.js';
import { add, dropout, gatherRows, groupedMatmul, matmul, mul, reshape, scatterAddRows, sigmoid, softmax, transpose } from '../../ops/index.js';
import { checkKeys } from '../config.js';
import { checkInt } from '../util.js';

export interface SwitchHeadOptions {
  /** Heads H (SwitchHead uses fewer heads than dense attention: its experts make up the width). */
  heads: number;
  /** Head size hd (default dModel / heads). */
  headDim?: number;
  /** Experts per head E for the value and for the output projection. */
  experts: number;
  /** Experts per head and token k (1 <= k <= E). */
  k: number;
  causal: boolean;
  maxSeqLen: number;
  /** Rotary embeddings on q and k (default false). */
  rope?: boolean;
  ropeBase?: number;
  /** Dropout on the attention weights and the output, in training mode (default 0). */
  dropout?: number;
  rng?: Rng;
}

const OPTION_KEYS = ['heads', 'headDim', 'experts', 'k', 'causal', 'maxSeqLen', 'rope', 'ropeBase', 'dropout', 'rng'] as const;

/** The chosen (token, head, expert) triples of one gate, sorted by group g = h*E + e (the grouped GEMM's order). */
export interface HeadExpertPlan {
  /** Token n of each row [M]. */
  token: Int32Array;
  /** Head h of each row [M]. */
  head: Int32Array;
  /** Flat index n*G + g of each row's gate in the [N, G] gate matrix [M]. */
  gate: Int32Array;
  /** Rows per group [G]. */
  sizes: Int32Array;
}

/** Per token and head, the k largest of E gate values (ties: the lower expert), as rows sorted by group. */
export function planHeadExperts(gates: ArrayLike<number>, N: number, H: number, E: number, k: number): HeadExpertPlan {
  const G = H * E;
  const chosen = new Int32Array(N * H * k); // expert of (n, h, j)
  const sizes = new Int32Array(G);
  const order = Array.from({ length: E }, (_, e) => e);
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < H; h++) {
      const base = n * G + h * E;
      const top = E === k ? order : order.slice().sort((a, b) => gates[base + b]! - gates[base + a]! || a - b).slice(0, k);
      for (let j = 0; j < k; j++) {
        chosen[(n * H + h) * k + j] = top[j]!;
        sizes[h * E + top[j]!]!++;
      }
    }
  }
  // counting sort by group, stable in (n, h, j)
  const offset = new Int32Array(G);
  for (let g = 1; g < G; g++) offset[g] = offset[g - 1]! + sizes[g - 1]!;
  const M = N * H * k;
  const plan = { token: new Int32Array(M), head: new Int32Array(M), gate: new Int32Array(M), sizes };
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < H; h++) {
      for (let j = 0; j < k; j++) {
        const g = h * E + chosen[(n * H + h) * k + j]!;
        const r = offset[g]!++;
        plan.token[r] = n;
        plan.head[r] = h;
        plan.gate[r] = n * G + g;
      }
    }
  }
  return plan;
}

/** Expert use of the latest forward: the fraction of (token, head) choices each group g = h*E + e got [G]. */
export interface SwitchHeadUsage {
  value: number[];
  output: number[];
}

export class SwitchHead extends Module implements SelfAttention {
  readonly q: Linear;
  readonly k: Linear;
  /** Source gate W_S: weight [H*E, d]. */
  readonly valueGate: Linear;
  /** Destination gate W_D: weight [H*E, d]. */
  readonly outputGate: Linear;
  /** Value experts W_V [H*E, d, hd]. */
  readonly wv: Tensor;
  /** Output experts W_O [H*E, hd, d]. */
  readonly wo: Tensor;
  readonly heads: number;
  readonly headDim: number;
  readonly experts: number;
  readonly topK: number;
  readonly causal: boolean;
  readonly maxSeqLen: number;
  readonly rotary: RotaryEmbedding | null;
  readonly dropout: number;
  /** Expert use of the latest forward (plain numbers, off the graph). */
  lastUsage: SwitchHeadUsage | null = null;
  private rng: Rng | undefined;

  constructor(readonly d: number, opts: SwitchHeadOptions) {
    super();
    checkKeys('SwitchHead', opts, OPTION_KEYS);
    checkInt('SwitchHead', 'dModel', d, 1);
    checkInt('SwitchHead', 'heads', opts.heads, 1);
    checkInt('SwitchHead', 'experts', opts.experts, 1);
    checkInt('SwitchHead', 'k', opts.k, 1);
    checkInt('SwitchHead', 'maxSeqLen', opts.maxSeqLen, 1);
    if (opts.k > opts.experts) throw new Error(`SwitchHead: k = ${opts.k} must be at most experts = ${opts.experts}`);
    const hd = opts.headDim ?? d / opts.heads;
    if (opts.headDim === undefined && d % opts.heads !== 0) throw new Error(`SwitchHead: heads = ${opts.heads} must divide dModel = ${d} (or set headDim)`);
    checkInt('SwitchHead', 'headDim', hd, 1);
    if (opts.rope && hd % 2 !== 0) throw new Error(`SwitchHead: rope needs an even head size, got ${hd}`);
    this.heads = opts.heads;
    this.headDim = hd;
    this.experts = opts.experts;
    this.topK = opts.k;
    this.causal = opts.causal;
    this.maxSeqLen = opts.maxSeqLen;
    this.dropout = opts.dropout ?? 0;
    if (!(this.dropout >= 0 && this.dropout < 1)) throw new Error(`SwitchHead: dropout must be in [0, 1), got ${this.dropout}`);
    this.rng = opts.rng;
    const H = this.heads;
    const E = this.experts;
    const rng = opts.rng ?? new Rng(0);
    this.q = this.module('q', new Linear(d, H * hd, { bias: false, rng }));
    this.k = this.module('k', new Linear(d, H * hd, { bias: false, rng }));
    this.valueGate = this.module('valueGate', new Linear(d, H * E, { bias: false, rng }));
    this.outputGate = this.module('outputGate', new Linear(d, H * E, { bias: false, rng }));
    // each expert is a Linear's weight: U(+-1/sqrt(fan in))
    this.wv = this.param('wv', uniform([H * E, d, hd], 1 / Math.sqrt(d), rng));
    this.wo = this.param('wo', uniform([H * E, hd, d], 1 / Math.sqrt(hd), rng));
    this.rotary = opts.rope ? new RotaryEmbedding(hd, { maxSeqLen: opts.maxSeqLen, ...(opts.ropeBase !== undefined ? { base: opts.ropeBase } : {}) }) : null;
  }

  /** Restarts the dropout generator (Module.reseedAll calls it). */
  reseed(seed: number): void {
    this.rng = new Rng(seed);
  }

  private drop(x: Tensor): Tensor {
    if (!this.training || this.dropout === 0) return x;
    return dropout(x, this.dropout, this.rng ? { training: true, rng: this.rng } : { training: true });
  }

  /** Sigmoid gates [N, G] of x2 [N, d] and their top-k plan. */
  private gates(gate: Linear, x2: Tensor): { s: Tensor; plan: HeadExpertPlan } {
    const N = x2.shape[0]!;
    const s = sigmoid(gate.forward(x2)); // [N, G]
    return { s, plan: planHeadExperts(s.data, N, this.heads, this.experts, this.topK) };
  }

  /** Values per head: x2 [N, d] -> [N*H, hd] (row n*H + h), each the gated sum of its k value experts. */
  private values(x2: Tensor): Tensor {
    const N = x2.shape[0]!;
    const { s, plan } = this.gates(this.valueGate, x2);
    const xg = gatherRows(x2, plan.token); // [M, d]
    const vg = groupedMatmul(xg, this.wv, plan.sizes); // [M, hd]
    const g = gatherRows(reshape(s, [s.size, 1]), plan.gate); // [M, 1]
    const dest = plan.token.map((n, r) => n * this.heads + plan.head[r]!);
    this.recordUsage('value', plan, N);
    return scatterAddRows(mul(vg, g), dest, N * this.heads); // [N*H, hd]
  }

  /** Output: per-head attention results a [N*H, hd] (row n*H + h) -> [N, d], each head through its k output experts. */
  private output(a: Tensor, gated: { s: Tensor; plan: HeadExpertPlan }): Tensor {
    const N = a.shape[0]! / this.heads;
    const { s, plan } = gated;
    const src = plan.token.map((n, r) => n * this.heads + plan.head[r]!);
    const ag = gatherRows(a, src); // [M, hd]
    const yg = groupedMatmul(ag, this.wo, plan.sizes); // [M, d]
    const g = gatherRows(reshape(s, [s.size, 1]), plan.gate); // [M, 1]
    this.recordUsage('output', plan, N);
    return scatterAddRows(mul(yg, g), plan.token, N); // [N, d]
  }

  private recordUsage(which: 'value' | 'output', plan: HeadExpertPlan, N: number): void {
    const usage = Array.from(plan.sizes, (c) => c / (N * this.topK));
    this.lastUsage = { ...(this.lastUsage ?? { value: [], output: [] }), [which]: usage };
  }

  /** x [B, T, d] -> [B, T, d]. */
  forward(x: Tensor): Tensor {
    const { d, heads: H, headDim: hd } = this;
    if (x.rank !== 3 || x.shape[2] !== d) throw new Error(`SwitchHead: input must be [B, T, ${d}], got [${x.shape.join(', ')}]`);
    const [B, T] = x.shape as [number, number, number];
    if (T > this.maxSeqLen) throw new Error(`SwitchHead: sequence length ${T} exceeds maxSeqLen = ${this.maxSeqLen}`);
    const x2 = reshape(x, [B * T, d]);
    const perHead = (t: Tensor): Tensor => transpose(reshape(t, [B, T, H, hd]), [0, 2, 1, 3]); // [B, H, T, hd]
    let q = perHead(this.q.forward(x2));
    let k = perHead(this.k.forward(x2));
    const v = perHead(this.values(x2));
    if (this.rotary) {
      q = this.rotary.forward(q);
      k = this.rotary.forward(k);
    }
    let scores = mul(matmul(q, k, { transB: true }), 1 / Math.sqrt(hd)); // [B, H, T, T]
    if (this.causal) scores = add(scores, causalMask(T, x.dtype));
    const att = this.drop(softmax(scores, -1));
    const a = reshape(transpose(matmul(att, v), [0, 2, 1, 3]), [B * T * H, hd]); // row (b*T + t)*H + h
    const y = this.output(a, this.gates(this.outputGate, x2)); // [N, d]
    return this.drop(reshape(y, [B, T, d]));
  }

  /** h [1, T, d] at positions P .. P + T - 1 -> q, k (rotated), v [H, T, hd]; the state holds the output gates. */
  cacheProjections(h: Tensor, P: number): CachedProjections {
    const { d, heads: H, headDim: hd } = this;
    const T = h.size / d;
    const x2 = reshape(h, [T, d]);
    const perHead = (t: Tensor): Tensor => transpose(reshape(t, [T, H, hd]), [1, 0, 2]); // [H, T, hd]
    const q = perHead(this.q.forward(x2));
    const k = perHead(this.k.forward(x2));
    return {
      q: this.rotary ? this.rotary.forward(q, P) : q,
      k: this.rotary ? this.rotary.forward(k, P) : k,
      v: perHead(this.values(x2)),
      state: this.gates(this.outputGate, x2),
    };
  }

  /** Attention results [T, H, hd] -> [1, T, d] through the output experts chosen in cacheProjections. */
  cacheOutput(heads: Tensor, state: unknown): Tensor {
    const T = heads.size / (this.heads * this.headDim);
    const y = this.output(reshape(heads, [T * this.heads, this.headDim]), state as { s: Tensor; plan: HeadExpertPlan });
    return reshape(y, [1, T, this.d]);
  }
}
