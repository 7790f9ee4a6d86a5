// Decoder-only MoE transformer (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE): one class, a typed config, KV-cached inference.
//
// T = new tokens, P = positions already in the cache, L = P + T, d = hidden size, H = query
// heads, G = key/value heads, g = H / G, hd = head size, E = experts, k = experts per token.

import { Module } from '../nn/module.js';
import { RMSNorm } from '../nn/norm.js';
import { KVCache, type KVCacheDtype } from '../nn/kv-cache.js';
import { kernel, prefetchHint } from '../kernels/registry.js';
import { FUSED_DECODE_MAX_ROWS } from '../kernels/kernels.js';
import { Tensor } from '../tensor/tensor.js';
import { isGradEnabled, noGrad } from '../tensor/autograd.js';
import { add, matmul, mul, reshape, sigmoid, silu, softmax, transpose } from '../ops/index.js';
import { TopKRouter } from '../moe/routers/topk.js';
import { SigmoidGroupRouter } from '../moe/routers/sigmoid-group.js';
import type { Router } from '../moe/routers/types.js';
import { planDispatch } from '../moe/permute/bins.js';
import { permute, unpermute } from '../moe/permute/permute.js';
import type { HFConfig } from '../formats/hf/config.js';
import { isSparseLayer, validateMoEDecoderConfig, type MoEDecoderConfig } from './moe-decoder-config.js';
import { addExpertsInto, embedRows, expertSwiGLU, linear, newMatrix, type Weight } from './moe-decoder-weights.js';
import { quantizedBytes, type QuantType } from '../tensor/quant-blocks.js';
import { QuantWeight } from '../infer/quant/index.js';
import { attentionMask, cachedAttention, rotary, rotaryTables } from './moe-decoder-attention.js';

export * from './moe-decoder-config.js';
export { linear, expertLinear, expertSwiGLU, type Weight } from './moe-decoder-weights.js';
export { rotaryTables, attentionMask } from './moe-decoder-attention.js';

/** Called per MoE layer with the experts each token chose ([T, k] row-major) and their gate weights. */
export type RoutingHook = (layer: number, expertIndices: Int32Array, expertWeights: Float32Array) => void;


const zeros = (shape: number[]): Tensor => Tensor.empty(shape);


/** SwiGLU MLP with HF-layout weights: down(silu(gate x) * up x). Dense layers and Qwen2's shared expert. */
export class DenseMLP extends Module {
  readonly gate: Weight; // [h, d]
  readonly up: Weight; // [h, d]
  readonly down: Weight; // [d, h]
  constructor(d: number, h: number, quant: QuantType | null = null) {
    super();
    const reg = (n: string, t: Tensor): Tensor => this.param(n, t);
    this.gate = newMatrix(reg, 'gate', [h, d], quant);
    this.up = newMatrix(reg, 'up', [h, d], quant);
    this.down = newMatrix(reg, 'down', [d, h], quant);
  }
  forward(x: Tensor): Tensor {
    return linear(mul(silu(linear(x, this.gate)), linear(x, this.up)), this.down);
  }
}

/** Routed SwiGLU experts with stacked weights, plus Qwen2's optional gated shared expert. */
export class SparseMoeBlock extends Module {
  readonly router: Router & Module & { weight: Tensor };
  // not readonly: offloadExperts swaps in the expert cache's weights
  w1: Weight; // [E, h, d] gate (SiLU) branch
  w3: Weight; // [E, h, d] linear branch
  w2: Weight; // [E, d, h] output
  readonly shared: DenseMLP | null;
  readonly sharedGate: Tensor | null; // [1, d]
  readonly numExperts: number;
  /** Called with this block's input before its experts run (pre-gating: the next MoE layer's router predicts and loads its experts). */
  beforeExperts: ((x: Tensor) => void) | null = null;

  constructor(c: MoEDecoderConfig, quant: QuantType | null = null) {
    super();
    const { hiddenSize: d, moeIntermediateSize: h, numExperts: E, topK: k } = c;
    this.numExperts = E;
    const r = c.router;
    this.router = this.module('router', r.type === 'softmax'
      ? new TopKRouter(d, E, { k, order: 'softmax-topk', normalize: r.normTopkProb })
      : new SigmoidGroupRouter(d, E, { k, groups: r.groups, topkGroups: r.topkGroups, routedScaling: r.routedScaling, normalize: r.normTopkProb, biasRate: 0 }));
    const reg = (n: string, t: Tensor): Tensor => this.param(n, t);
    this.w1 = newMatrix(reg, 'w1', [h, d], quant, E);
    this.w3 = newMatrix(reg, 'w3', [h, d], quant, E);
    this.w2 = newMatrix(reg, 'w2', [d, h], quant, E);
    this.shared = c.sharedExpertIntermediateSize > 0 ? this.module('shared', new DenseMLP(d, c.sharedExpertIntermediateSize, quant)) : null;
    this.sharedGate = c.sharedExpertGate ? this.param('sharedGate', zeros([1, d])) : null;
  }

  /**
   * Replaces the expert stacks (the expert cache's offloaded weights); a float32 stack's parameter
   * registration goes too, so namedWeights and the parameter list name each weight once.
   */
  setExperts(w1: Weight, w3: Weight, w2: Weight): void {
    const params = (this as unknown as { params: Map<string, Tensor> }).params; // Module keeps it private; no unregister exists
    for (const [n, w] of [['w1', this.w1], ['w3', this.w3], ['w2', this.w2]] as const) if (params.get(n) === w) params.delete(n);
    this.w1 = w1;
    this.w3 = w3;
    this.w2 = w2;
  }

  /**
   * Steps of at most this many rows (decode, a batched decode of up to 16 sequences) run the routed
   * experts as one fused kernel (addExpertsInto) when a residual is given; false: always the grouped path.
   */
  fusedDecode = true;

  /** x [T, d] -> [T, d]; hook gets the routing. With residual [T, d]: residual + the block's output. */
  forward(x: Tensor, hook?: (expert: Int32Array, gates: Float32Array) => void, residual?: Tensor): Tensor {
    const T = x.shape[0]!;
    const routing = this.router.route(x);
    if (hook) hook(Int32Array.from(routing.expert), Float32Array.from(routing.gates.data));
    if (this.beforeExperts) this.beforeExperts(x);
    let s: Tensor | null = null;
    if (this.shared) {
      s = this.shared.forward(x);
      if (this.sharedGate) s = mul(sigmoid(linear(x, this.sharedGate)), s); // [T, 1] gate broadcast over d
    }
    if (residual && this.fusedDecode && T <= FUSED_DECODE_MAX_ROWS && !isGradEnabled() && residual.data instanceof Float32Array
      && routing.gates.data instanceof Float32Array) {
      // residual + (experts + shared), the grouped path's order, so both give the same bits
      const out = s ? (s.data as Float32Array).slice() : residual.data.slice();
      if (addExpertsInto(x, routing.token, routing.expert, routing.gates.data, this.w1, this.w3, this.w2, out)) {
        const y = new Tensor(out, [T, x.shape[1]!]);
        return s ? add(residual, y) : y;
      }
    }
    const plan = planDispatch(routing.token, routing.expert, routing.gates.data, this.numExperts, null);
    const xp = permute(x, plan); // [T*k, d] in expert order
    let y = unpermute(expertSwiGLU(xp, this.w1, this.w3, this.w2, plan.groupSizes), routing.gates, plan, T);
    if (s) y = add(y, s);
    return residual ? add(residual, y) : y;
  }
}

/** Causal self-attention with GQA, optional qkv bias and QK-norm, rotary positions, KV cache. */
export class DecoderAttention extends Module {
  readonly q: Weight; // [H*hd, d], rows 0 .. H*hd of qkv
  readonly k: Weight; // [G*hd, d], the next G*hd rows
  readonly v: Weight; // [G*hd, d], the last G*hd rows
  /** q, k and v stacked (the parameters above are views of it); not a parameter itself. */
  readonly qkv: Weight; // [(H + 2G) hd, d]
  readonly o: Weight; // [d, H*hd]
  readonly qBias: Tensor | null;
  readonly kBias: Tensor | null;
  readonly vBias: Tensor | null;
  readonly qNorm: RMSNorm | null;
  readonly kNorm: RMSNorm | null;

  constructor(private readonly c: MoEDecoderConfig, quant: QuantType | null = null) {
    super();
    const { hiddenSize: d, numHeads: H, numKVHeads: G, headDim: hd } = c;
    const reg = (n: string, t: Tensor): Tensor => this.param(n, t);
    // q, k and v are row blocks of one [(H + 2G) hd, d] matrix (views, no copies): inference
    // projects them in one product, one activation quantisation and one pool hand-off instead of
    // three (1b Q8_0: 3 x 1.1 MB calls took 280-305 us per layer, one 3.3 MB call 220-240 us).
    this.qkv = newMatrix((_n, t) => t, 'qkv', [(H + 2 * G) * hd, d], quant);
    const rows = (name: string, r0: number, r1: number): Weight => {
      const w = this.qkv;
      if (w instanceof QuantWeight) {
        const rowBytes = quantizedBytes(w.type, d);
        return new QuantWeight(w.type, [r1 - r0, d], w.data.subarray(r0 * rowBytes, r1 * rowBytes));
      }
      return this.param(name, new Tensor((w.data as Float32Array).subarray(r0 * d, r1 * d), [r1 - r0, d]));
    };
    this.q = rows('q', 0, H * hd);
    this.k = rows('k', H * hd, (H + G) * hd);
    this.v = rows('v', (H + G) * hd, (H + 2 * G) * hd);
    this.o = newMatrix(reg, 'o', [d, H * hd], quant);
    this.qBias = c.qkvBias ? this.param('qBias', zeros([H * hd])) : null;
    this.kBias = c.qkvBias ? this.param('kBias', zeros([G * hd])) : null;
    this.vBias = c.qkvBias ? this.param('vBias', zeros([G * hd])) : null;
    const normWidth = (n: number): number => (c.qkNorm === 'head' ? hd : n * hd);
    this.qNorm = c.qkNorm === 'none' ? null : this.module('qNorm', new RMSNorm(normWidth(H), { eps: c.rmsNormEps }));
    this.kNorm = c.qkNorm === 'none' ? null : this.module('kNorm', new RMSNorm(normWidth(G), { eps: c.rmsNormEps }));
  }

  /** x [T, d], rotary tables [T, 1, hd], additive mask [T, T] or null -> [T, d]: the uncached forward (positions from 0). */
  forward(x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | null): Tensor {
    const { numHeads: H, numKVHeads: G, headDim: hd } = this.c;
    const T = x.shape[0]!;
    const g = H / G;
    const [q, k, v] = this.project(x, cos, sin);
    // Query head h uses key head floor(h / g): heads grouped per key head as [G, g*T, hd].
    const qg = reshape(transpose(q, [1, 0, 2]), [G, g * T, hd]);
    const kt = transpose(k, [1, 0, 2]); // [G, T, hd]
    const vt = transpose(reshape(v, [T, G, hd]), [1, 0, 2]); // [G, T, hd]
    let scores = mul(matmul(qg, kt, { transB: true }), 1 / Math.sqrt(hd)); // [G, g*T, T]
    if (mask) scores = add(reshape(scores, [G, g, T, T]), mask);
    const att = reshape(softmax(scores, -1), [G, g * T, T]);
    const heads = reshape(matmul(att, vt), [H, T, hd]);
    return linear(reshape(transpose(heads, [1, 0, 2]), [T, H * hd]), this.o);
  }

  /**
   * Rows of x [N, d] belonging to several sequences (segments of consecutive rows, each with its
   * own cache, positions and mask; rotary tables [N, 1, hd] per row): the projections run over
   * all N rows at once, attention per segment over its own cache. Inference only (under noGrad).
   */
  forwardSegments(x: Tensor, cos: Tensor, sin: Tensor, segs: readonly Segment[], layer: number): Tensor {
    if (this.fusedDecode && x.shape[0]! <= FUSED_DECODE_MAX_ROWS && x.data instanceof Float32Array && !isGradEnabled()) {
      const y = this.fusedSegments(x, cos, sin, segs, layer);
      if (y) return y;
    }
    const [q, k, v] = this.project(x, cos, sin);
    return this.attendSegments(q, k, v, segs, layer);
  }

  /** Steps of at most FUSED_DECODE_MAX_ROWS rows run everything between the qkv and output products as one kernel per sequence (qkvAttention). */
  fusedDecode = true;

  /** forwardSegments' decode path: the qkv product, one qkvAttention per segment, the output product; null when a norm has no weight. */
  private fusedSegments(x: Tensor, cos: Tensor, sin: Tensor, segs: readonly Segment[], layer: number): Tensor | null {
    const { numHeads: H, numKVHeads: G, headDim: hd, qkNorm } = this.c;
    const data = (t: Tensor | null | undefined): Float32Array | null => (t ? (t.data as Float32Array) : null);
    const qNorm = data(this.qNorm?.weight);
    const kNorm = data(this.kNorm?.weight);
    if (qkNorm !== 'none' && (!qNorm || !kNorm)) return null;
    const N = x.shape[0]!;
    const row = (H + 2 * G) * hd;
    const qkv = linear(x, this.qkv).data as Float32Array; // [N, (H + 2G) hd]
    const out = new Float32Array(N * H * hd);
    const cd = cos.data as Float32Array;
    const sd = sin.data as Float32Array;
    const attend = kernel('qkvAttention');
    for (const { start, T, cache } of segs) {
      if (T === 0) continue;
      attend(qkv.subarray(start * row, (start + T) * row), data(this.qBias), data(this.kBias), data(this.vBias), qNorm, kNorm,
        qkNorm === 'full' ? 1 : qkNorm === 'head' ? 2 : 0, this.qNorm?.eps ?? 0, cd.subarray(start * hd, (start + T) * hd),
        sd.subarray(start * hd, (start + T) * hd), cache.keys(layer), cache.values(layer), out.subarray(start * H * hd, (start + T) * H * hd),
        T, H, G, hd, cache.maxLen, cache.length, this.c.slidingWindow ?? 0, 1 / Math.sqrt(hd));
    }
    return linear(new Tensor(out, [N, H * hd]), this.o);
  }

  /** x [N, d] -> q [N, H, hd] and k [N, G, hd] (biased, QK-normed, rotated), v [N, G*hd]. */
  private project(x: Tensor, cos: Tensor, sin: Tensor): [Tensor, Tensor, Tensor] {
    const { numHeads: H, numKVHeads: G, headDim: hd } = this.c;
    const N = x.shape[0]!;
    let q: Tensor, k: Tensor, v: Tensor;
    if (isGradEnabled()) {
      // the graph must reach the q, k, v parameters themselves
      q = linear(x, this.q, this.qBias); // [N, H*hd]
      k = linear(x, this.k, this.kBias); // [N, G*hd]
      v = linear(x, this.v, this.vBias); // [N, G*hd]
    } else {
      [q, k, v] = splitColumns(linear(x, this.qkv), [H * hd, G * hd, G * hd]);
      if (this.qBias) q = add(q, this.qBias);
      if (this.kBias) k = add(k, this.kBias);
      if (this.vBias) v = add(v, this.vBias);
    }
    if (this.c.qkNorm === 'full') {
      q = this.qNorm!.forward(q);
      k = this.kNorm!.forward(k);
    }
    q = reshape(q, [N, H, hd]);
    k = reshape(k, [N, G, hd]);
    if (this.c.qkNorm === 'head') {
      q = this.qNorm!.forward(q);
      k = this.kNorm!.forward(k);
    }
    return [rotary(q, cos, sin), rotary(k, cos, sin), v];
  }

  /** q [N, H, hd] and k, v [N, G*hd] (after rotary) -> [N, d]: each segment writes its cache and attends over it. */
  private attendSegments(q: Tensor, k: Tensor, v: Tensor, segs: readonly Segment[], layer: number): Tensor {
    const { numHeads: H, numKVHeads: G, headDim: hd } = this.c;
    const N = q.shape[0]!;
    const kd = k.data as Float32Array;
    const vd = v.data as Float32Array;
    const qd = q.data as Float32Array;
    const row = G * hd;
    const out = new Float32Array(N * H * hd); // [N, H*hd]
    for (const { start, T, cache } of segs) {
      if (T === 0) continue;
      cache.write(layer, kd.subarray(start * row, (start + T) * row), vd.subarray(start * row, (start + T) * row), T);
      const qs = new Tensor(qd.subarray(start * H * hd, (start + T) * H * hd), [T, H, hd]);
      cachedAttention(qs, cache, layer, cache.length, this.c.slidingWindow, out.subarray(start * H * hd, (start + T) * H * hd));
    }
    return linear(new Tensor(out, [N, H * hd]), this.o);
  }
}

/** y [N, sum(widths)] -> one [N, w] tensor per width, column blocks in order (views when N = 1). */
function splitColumns(y: Tensor, widths: readonly number[]): Tensor[] {
  const N = y.shape[0]!;
  const W = y.shape[1]!;
  const data = y.data as Float32Array;
  let c0 = 0;
  return widths.map((w) => {
    const at = c0;
    c0 += w;
    if (N === 1) return new Tensor(data.subarray(at, at + w), [1, w]);
    const out = new Float32Array(N * w);
    for (let r = 0; r < N; r++) out.set(data.subarray(r * W + at, r * W + at + w), r * w);
    return new Tensor(out, [N, w]);
  });
}

/** One sequence's rows in a batched forward: rows start .. start + T - 1 and its cache. */
export interface Segment {
  start: number;
  T: number;
  cache: KVCache;
}

export class DecoderLayer extends Module {
  readonly inputNorm: RMSNorm;
  readonly attn: DecoderAttention;
  readonly postAttnNorm: RMSNorm;
  readonly moe: SparseMoeBlock | null;
  readonly mlp: DenseMLP | null;

  constructor(c: MoEDecoderConfig, readonly index: number, quant: QuantType | null = null) {
    super();
    this.inputNorm = this.module('inputNorm', new RMSNorm(c.hiddenSize, { eps: c.rmsNormEps }));
    this.attn = this.module('attn', new DecoderAttention(c, quant));
    this.postAttnNorm = this.module('postAttnNorm', new RMSNorm(c.hiddenSize, { eps: c.rmsNormEps }));
    const sparse = isSparseLayer(c, index);
    this.moe = sparse ? this.module('moe', new SparseMoeBlock(c, quant)) : null;
    this.mlp = sparse ? null : this.module('mlp', new DenseMLP(c.hiddenSize, c.denseIntermediateSize, quant));
  }

  /** The uncached forward (positions from 0), mask [T, T] or null. */
  forward(x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | null, hook: RoutingHook | undefined): Tensor {
    return this.ffn(add(x, this.attn.forward(this.inputNorm.forward(x), cos, sin, mask)), hook);
  }

  /** Several sequences' rows at once: attention per segment, the MoE block (router, grouped GEMMs) over all rows. */
  forwardSegments(x: Tensor, cos: Tensor, sin: Tensor, segs: readonly Segment[], hook: RoutingHook | undefined): Tensor {
    return this.ffn(add(x, this.attn.forwardSegments(this.inputNorm.forward(x), cos, sin, segs, this.index)), hook);
  }

  /**
   * The layer after this one (set by MoEDecoder): during decode its attention weights are queued
   * for the native pool's idle workers to read ahead (prefetchHint) while this layer's MoE block
   * runs with JS between its kernels.
   */
  next: DecoderLayer | null = null;

  /** h + MoE or dense MLP of norm(h). */
  private ffn(h: Tensor, hook: RoutingHook | undefined): Tensor {
    // decode-sized steps only: a prefill's products are compute-bound and read their weights anyway
    if (this.next && h.shape[0]! <= 16) {
      // replace: what is left of this layer's own hint is stale now (its attention has run)
      prefetchHint(this.next.attn.qkv.data, true);
      prefetchHint(this.next.attn.o.data);
    }
    const n = this.postAttnNorm.forward(h);
    if (this.moe) return this.moe.forward(n, hook ? (e, w) => hook(this.index, e, w) : undefined, h);
    return add(h, this.mlp!.forward(n));
  }
}

/**
 * The model. Parameters start at zero: fill them from a checkpoint (fromHF in moe-decoder-hf.ts,
 * or randomHFTensors in moe-decoder-create.ts through fromHF). forward() with a cache runs under
 * noGrad; without one it records the graph as usual (gradients reach every parameter, but no
 * training recipe exists for this model yet).
 */
export class MoEDecoder extends Module {
  readonly config: Readonly<MoEDecoderConfig>;
  readonly embed: Weight; // [V, d]
  readonly layers: DecoderLayer[];
  readonly norm: RMSNorm;
  readonly lmHead: Weight | null; // [V, d]; null when tied to embed
  /** The block format of the quantised matrices, or null (all float32). */
  readonly quant: QuantType | null;
  /** Sees every MoE layer's routing of every forward. */
  onRouting: RoutingHook | undefined;
  /** The config.json this model was read from, written back unchanged by toHF. */
  hfConfig: HFConfig | null = null;

  /**
   * quant: hold the matrices as Q8_0/Q4_0 blocks, allocated here at their quantised size (no float32
   * copy) and filled by fromHF. Quantised: attention and MLP/expert projections, the embedding table
   * and lm_head (a GGUF stores them so; a decode step dequantises one embedding row). Kept float32:
   * norms (vectors), the router and Qwen2's shared-expert gate (tiny; their rounding would flip
   * discrete expert choices; llama.cpp keeps ffn_gate_inp in F32 too), and any matrix whose input
   * width is not a multiple of 32.
   */
  constructor(config: MoEDecoderConfig, opts: { quant?: QuantType | null } = {}) {
    super();
    validateMoEDecoderConfig(config);
    this.config = Object.freeze({ ...config, denseLayers: [...config.denseLayers] });
    const quant = opts.quant ?? null;
    this.quant = quant;
    const { vocabSize: V, hiddenSize: d } = config;
    const reg = (n: string, t: Tensor): Tensor => this.param(n, t);
    this.embed = newMatrix(reg, 'embed', [V, d], quant);
    this.layers = Array.from({ length: config.numLayers }, (_, l) => this.module(`layers.${l}`, new DecoderLayer(this.config, l, quant)));
    this.layers.forEach((layer, l) => { layer.next = this.layers[l + 1] ?? null; });
    this.norm = this.module('norm', new RMSNorm(d, { eps: config.rmsNormEps }));
    this.lmHead = config.tieWordEmbeddings ? null : newMatrix(reg, 'lmHead', [V, d], quant);
  }

  /** Every weight with its module path: float32 parameters and quantised matrices. */
  namedWeights(): Array<[string, Weight]> {
    const out: Array<[string, Weight]> = [];
    const seen = new Set<Weight>();
    const put = (name: string, w: Weight | null): void => {
      if (w && !seen.has(w)) { seen.add(w); out.push([name, w]); }
    };
    for (const [n, p] of this.namedParameters()) put(n, p);
    put('embed', this.embed);
    put('lmHead', this.lmHead);
    this.layers.forEach((layer, l) => {
      for (const k of ['q', 'k', 'v', 'o'] as const) put(`layers.${l}.attn.${k}`, layer.attn[k]);
      const mlp = (prefix: string, m: DenseMLP | null): void => {
        if (m) for (const k of ['gate', 'up', 'down'] as const) put(`${prefix}.${k}`, m[k]);
      };
      if (layer.moe) for (const k of ['w1', 'w2', 'w3'] as const) put(`layers.${l}.moe.${k}`, layer.moe[k]);
      mlp(`layers.${l}.moe.shared`, layer.moe?.shared ?? null);
      mlp(`layers.${l}.mlp`, layer.mlp);
    });
    return out;
  }

  /**
   * A cache sized for this model. Default capacity: maxPositionEmbeddings up to 4096 positions
   * (real configs say 32768 and more, gigabytes of cache that a short generation never uses).
   */
  newCache(maxLen = Math.min(this.config.maxPositionEmbeddings, 4096), dtype: KVCacheDtype = this.kvCacheDtype): KVCache {
    const c = this.config;
    return new KVCache({ numLayers: c.numLayers, maxLen, numKVHeads: c.numKVHeads, headDim: c.headDim, dtype });
  }

  /**
   * Element type of the caches newCache makes by default (generate, the server): float32, or
   * float16 as llama.cpp does by default (half the cache memory and attention's bytes per token).
   */
  kvCacheDtype: KVCacheDtype = 'float32';

  /**
   * Whether decode steps (at most 16 rows) run fused kernels: qkvAttention for everything between
   * the qkv and output products, expertSwiGLU for the routed experts (default true; false: the
   * kernel-per-op path, for comparisons).
   */
  get fusedDecode(): boolean {
    return this.layers.some((l) => l.attn.fusedDecode || l.moe?.fusedDecode);
  }
  set fusedDecode(on: boolean) {
    for (const l of this.layers) {
      l.attn.fusedDecode = on;
      if (l.moe) l.moe.fusedDecode = on;
    }
  }

  /** Logits [T, V] of the new tokens ids; with a cache, positions continue from cache.length and the cache grows by T. */
  forward(ids: Int32Array, cache: KVCache | null = null): Tensor {
    if (!(ids instanceof Int32Array)) throw new Error('MoEDecoder.forward: ids must be an Int32Array');
    if (cache) return this.forwardBatch([{ ids, cache }], 'MoEDecoder.forward')[0]!;
    return this.run(ids);
  }

  /**
   * One step of several sequences together (the server's continuous batching): seqs[i].ids are
   * sequence i's new tokens (a prompt chunk in prefill, one token in decode; any mix), at positions
   * continuing from seqs[i].cache.length. Embedding, every dense product, the router and the expert
   * GEMMs run over all sum(T) rows at once (tokens of different sequences routed to the same expert
   * share one grouped GEMM per projection); attention runs per sequence over its own cache.
   * Returns logits [T_i, V] per sequence (same values as forward(ids_i, cache_i) alone); every
   * cache grows by its T_i. onRouting sees the batch's rows in the order of seqs.
   * opts.lastOnly: logits [1, V] of each sequence's last new row only ([0, V] when T_i = 0): the
   * lm_head skips the other rows, which only a prefill chunk has and nothing samples from.
   */
  forwardBatch(seqs: ReadonlyArray<{ ids: Int32Array; cache: KVCache }>, op = 'MoEDecoder.forwardBatch', opts: { lastOnly?: boolean } = {}): Tensor[] {
    const c = this.config;
    const seen = new Set<KVCache>();
    seqs.forEach(({ ids, cache }, i) => {
      const at = seqs.length > 1 ? ` (sequence ${i})` : '';
      if (!(ids instanceof Int32Array)) throw new Error(`${op}: ids${at} must be an Int32Array`);
      if (!(cache instanceof KVCache)) throw new Error(`${op}: cache${at} must be a KVCache`);
      if (cache.numLayers !== c.numLayers || cache.numKVHeads !== c.numKVHeads || cache.headDim !== c.headDim) {
        throw new Error(`${op}: cache${at} is for ${cache.numLayers} layers x ${cache.numKVHeads} kv heads x ${cache.headDim}, the model has ${c.numLayers} x ${c.numKVHeads} x ${c.headDim}`);
      }
      if (seen.has(cache)) throw new Error(`${op}: sequence ${i} uses the same cache as an earlier sequence; each sequence needs its own`);
      seen.add(cache);
      try {
        cache.checkRoom(ids.length);
      } catch (e) {
        throw new Error(`${op}${at}: ${(e as Error).message}`);
      }
    });
    return noGrad(() => this.runBatch(seqs, opts.lastOnly ?? false));
  }

  private runBatch(seqs: ReadonlyArray<{ ids: Int32Array; cache: KVCache }>, lastOnly: boolean): Tensor[] {
    const c = this.config;
    const hd = c.headDim;
    const N = seqs.reduce((s, q) => s + q.ids.length, 0);
    const V = c.vocabSize;
    if (N === 0) return seqs.map(() => Tensor.empty([0, V]));
    const ids = new Int32Array(N);
    const cosD = new Float32Array(N * hd);
    const sinD = new Float32Array(N * hd);
    const segs: Segment[] = [];
    let start = 0;
    for (const { ids: si, cache } of seqs) {
      const T = si.length;
      const P = cache.length;
      ids.set(si, start);
      const [cs, sn] = rotaryTables(c, P, T);
      cosD.set(cs.data as Float32Array, start * hd);
      sinD.set(sn.data as Float32Array, start * hd);
      segs.push({ start, T, cache });
      start += T;
    }
    const cos = new Tensor(cosD, [N, 1, hd]);
    const sin = new Tensor(sinD, [N, 1, hd]);
    let x = embedRows(this.embed, ids); // [N, d]
    for (const layer of this.layers) x = layer.forwardSegments(x, cos, sin, segs, this.onRouting);
    for (const s of segs) s.cache.advance(s.T);
    if (lastOnly) {
      // the norm and lm_head are per row: run them on each sequence's last row only (S <= N rows)
      const d = c.hiddenSize;
      const xd = x.data as Float32Array;
      const live = segs.filter((s) => s.T > 0);
      const last = new Float32Array(live.length * d);
      live.forEach((s, i) => last.set(xd.subarray((s.start + s.T - 1) * d, (s.start + s.T) * d), i * d));
      const lg = live.length === 0 ? new Float32Array(0) : (linear(this.norm.forward(new Tensor(last, [live.length, d])), this.lmHead ?? this.embed).data as Float32Array);
      let i = 0;
      return segs.map((s) => (s.T === 0 ? Tensor.empty([0, V]) : new Tensor(lg.slice(i * V, ++i * V), [1, V])));
    }
    const logits = linear(this.norm.forward(x), this.lmHead ?? this.embed).data as Float32Array; // [N, V]
    if (segs.length === 1) return [new Tensor(logits, [N, V])];
    return segs.map((s) => new Tensor(logits.slice(s.start * V, (s.start + s.T) * V), [s.T, V]));
  }

  /** The full forward without a cache (positions from 0; records the graph when gradients are on). */
  private run(ids: Int32Array): Tensor {
    // quantised products are inference only: no graph to record
    if (this.quant && isGradEnabled()) return noGrad(() => this.run(ids));
    const T = ids.length;
    const c = this.config;
    if (T === 0) return Tensor.empty([0, c.vocabSize]);
    const [cos, sin] = rotaryTables(c, 0, T);
    const mask = attentionMask(T, 0, c.slidingWindow);
    let x = embedRows(this.embed, ids); // [T, d]
    for (const layer of this.layers) x = layer.forward(x, cos, sin, mask, this.onRouting);
    return linear(this.norm.forward(x), this.lmHead ?? this.embed);
  }
}
