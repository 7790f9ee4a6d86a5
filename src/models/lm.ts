// Byte-level decoder-only language model (vocabulary 256) whose feed-forwards are MoE layers or
// dense MLPs, with a typed config, active/total parameter counts and seeded sampling (KV-cached: lm-kv.ts).
//
// B = batch, T = time, d = channels (dModel), V = 256 bytes.

import { Module } from '../nn/module.js';
import { Embedding } from '../nn/embedding.js';
import { Linear } from '../nn/linear.js';
import { LayerNorm, RMSNorm } from '../nn/norm.js';
import { normal } from '../nn/init.js';
import type { TransformerBlock } from '../nn/transformer.js';
import { transformerBlock, type FeedForwardConfig } from './block.js';
import { validateAttention, type AttentionConfig } from './attention-config.js';
import { SwitchHead } from '../moe/attention/switchhead.js';
import { MoELayer, activeParameterCount } from '../moe/layer.js';
import type { RouterConfig } from '../moe/routers/index.js';
import { validateGrowSchedule, type GrowEntry } from '../moe/grow.js';
import type { RouterMetrics } from '../moe/metrics.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { noGrad } from '../tensor/autograd.js';
import { add, dropout, matmul, narrow } from '../ops/index.js';
import { deriveSeed } from '../data/batches.js';
import { BYTE_VOCAB_SIZE } from '../data/text.js';
import { validate, type Schema } from '../config/schema.js';
import { forwardCached, newByteLMCache } from './lm-kv.js';

export interface LMConfig {
  dModel: number;
  layers: number;
  heads: number;
  maxSeqLen: number;
  positions: 'rope' | 'learned';
  norm: 'rms' | 'layer';
  ffn: 'moe' | 'dense';
  moeEvery: number;
  numExperts: number;
  k: number;
  dFF: number;
  router: RouterConfig;
  capacityFactor: number | null;
  loadBalanceCoef: number;
  zLossCoef: number;
  /** Coefficients of the router's own aux losses by name (e.g. { topology: 0.1 } for device-limited's topology loss). */
  routerLossCoefs: Record<string, number>;
  activation: 'gelu' | 'swiglu';
  denseHidden: number | null;
  dropout: number;
  tieEmbeddings: boolean;
  /** Continual MoE growth schedule, applied by the trainer (train/growth.ts); the model is built with numExperts. */
  grow: GrowEntry[];
  /** Mixture-of-Depths capacity of the blocks that skip (1: off). */
  depthCapacity: number;
  /** With depthCapacity < 1: block i routes its depth when (i + 1) % depthEvery == 0. */
  depthEvery: number;
  /** Mixture-of-Depths: train a predictor of each routed block's top-c choice, so decoding chooses causally (with the KV cache). */
  depthPredictor: boolean;
  /** Every block's attention: dense multi-head ('mha') or attention-MoE ('switchhead'). */
  attention: AttentionConfig;
  /** Biases on the dense attention's qkv and output projections (the HF MoE families have none). */
  attentionBias: boolean;
}

export const LM_SCHEMA: Schema = {
  dModel: { type: 'integer', default: 128, min: 1, doc: 'channels d of the residual stream' },
  layers: { type: 'integer', default: 4, min: 1, doc: 'transformer blocks' },
  heads: { type: 'integer', default: 4, min: 1, doc: 'attention heads (must divide dModel)' },
  maxSeqLen: { type: 'integer', default: 128, min: 1, doc: 'longest context in bytes: sizes the rotary or learned position tables; generation crops to it' },
  positions: { type: 'string', default: 'rope', oneOf: ['rope', 'learned'], doc: "'rope' (rotary on q and k) or 'learned' (absolute position embeddings added to the input)" },
  norm: { type: 'string', default: 'rms', oneOf: ['rms', 'layer'], doc: "pre-norm of every block and the final norm: 'rms' (RMSNorm) or 'layer' (LayerNorm)" },
  ffn: { type: 'string', default: 'moe', oneOf: ['moe', 'dense'], doc: "'moe' (sparse feed-forwards, see moeEvery) or 'dense' (the dense counterpart: every block an MLP of denseHidden)" },
  moeEvery: { type: 'integer', default: 1, min: 1, doc: 'with ffn moe: block i is MoE when (i + 1) % moeEvery == 0 (1: every block; 2: every other block, starting dense), the others dense' },
  numExperts: { type: 'integer', default: 8, min: 1, doc: 'routed experts E per MoE block' },
  k: { type: 'integer', default: 2, min: 1, doc: 'experts per token, passed to the router unless router sets its own k' },
  dFF: { type: 'integer', default: 256, min: 1, doc: 'hidden width of each expert' },
  router: { type: 'json', default: { type: 'topk' }, doc: "router config { type, ...options } (topk, switch, noisy-topk, hash, expert-choice, sigmoid-group, dynamic, differentiable-topk); k comes from the k field unless set here" },
  capacityFactor: { type: 'number', default: null, nullable: true, min: 0, doc: 'training capacity factor, capacity = ceil(cf * tokens * k / E); null = dropless' },
  loadBalanceCoef: { type: 'number', default: 0.01, min: 0, doc: 'coefficient of the Switch/GShard load-balance loss' },
  zLossCoef: { type: 'number', default: 0.001, min: 0, doc: 'coefficient of the router z-loss' },
  routerLossCoefs: {
    type: 'json', default: {}, check: validateLossCoefs,
    doc: "coefficients of a router's own aux losses by name, e.g. { \"topology\": 0.1 } for the device-limited router's topology loss (docs/routers.md); a loss not named gets 0.01",
  },
  activation: { type: 'string', default: 'gelu', oneOf: ['gelu', 'swiglu'], doc: "expert and dense MLP activation: 'gelu' (2 matrices) or 'swiglu' (3 matrices)" },
  denseHidden: { type: 'integer', default: null, nullable: true, min: 1, doc: 'hidden width of dense blocks; null = k * dFF, so a dense model has the active expert parameters per token of the MoE model' },
  dropout: { type: 'number', default: 0, min: 0, max: 1, doc: 'dropout on the embeddings, attention weights and residual branches, in training mode' },
  tieEmbeddings: { type: 'boolean', default: false, doc: 'the output head reuses the byte embedding matrix (no separate [256, d] head)' },
  grow: {
    type: 'json', default: [], check: validateGrowSchedule,
    doc: 'continual MoE: [{ step, add, freezeOld?, offset?, rampSteps? }], every MoE block gains `add` experts before optimizer step `step` (see docs/variants.md)',
  },
  depthCapacity: { type: 'number', default: 1, min: 0.001, max: 1, doc: 'Mixture-of-Depths: the fraction of each sequence\'s tokens that run a routed block, the rest skip it (1: off; needs positions learned; docs/variants.md)' },
  depthPredictor: {
    type: 'boolean', default: false,
    doc: "with depthCapacity < 1: each routed block trains a small predictor of its top-c choice (binary cross-entropy, added to the aux loss); generate then chooses each token's blocks causally from the predictor and decodes with the KV cache (docs/variants.md)",
  },
  attention: {
    type: 'json', default: { type: 'mha' }, check: validateAttention,
    doc: "every block's attention: { type: 'mha' } (dense, heads of dModel / heads) or { type: 'switchhead', heads?, headDim?, experts?, k? } (SwitchHead attention-MoE: k of E value and output experts per head; heads defaults to the heads field; docs/variants.md)",
  },
  attentionBias: {
    type: 'boolean', default: true,
    doc: "biases on the dense attention's qkv and output projections (mha only: switchhead has none); false gives the layout of the HF MoE families (Mixtral, Qwen2-MoE), which `moe convert` of a byte LM needs",
  },
  depthEvery: { type: 'integer', default: 2, min: 1, doc: 'with depthCapacity < 1: block i routes its depth when (i + 1) % depthEvery == 0 (2: every other block, as Raposo et al.)' },
};

// Router types whose constructor takes k; the others fix it (switch: 1) or have none (expert choice, dynamic).
const ROUTERS_WITH_K = new Set(['topk', 'noisy-topk', 'hash', 'sigmoid-group', 'differentiable-topk', 'hierarchical', 'straight-through', 'device-limited']);

function validateLossCoefs(v: unknown, path: string): Record<string, number> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: expected an object { lossName: coefficient }, got ${JSON.stringify(v)}`);
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) throw new Error(`${path}.${k}: expected a finite number >= 0, got ${JSON.stringify(x)}`);
  }
  return v as Record<string, number>;
}

/** Fills defaults and rejects unknown keys and wrong types (the schema's rules), then checks cross-field constraints. */
export function lmConfig(partial: Partial<LMConfig> = {}): LMConfig {
  const c = validate<LMConfig>(LM_SCHEMA, partial, 'model (byte-lm)');
  const r = c.router as unknown;
  if (typeof r !== 'object' || r === null || Array.isArray(r) || typeof (r as { type?: unknown }).type !== 'string') {
    throw new Error(`model (byte-lm).router: expected a router config object { type, ... }, got ${JSON.stringify(r)}`);
  }
  if (c.dModel % c.heads !== 0) throw new Error(`model (byte-lm): heads = ${c.heads} must divide dModel = ${c.dModel}`);
  if (c.depthCapacity < 1 && c.positions === 'rope') throw new Error(`model (byte-lm).depthCapacity = ${c.depthCapacity} needs positions: 'learned' (tokens that skip a block would shift the rotary positions of the others)`);
  if (c.positions === 'rope' && (c.dModel / c.heads) % 2 !== 0) throw new Error(`model (byte-lm): rope needs an even head width, dModel / heads = ${c.dModel / c.heads}`);
  if (c.depthPredictor && c.depthCapacity >= 1) throw new Error('model (byte-lm).depthPredictor: needs depthCapacity < 1 (there is no choice to predict)');
  const att = c.attention;
  if (att.type === 'switchhead') {
    const h = att.heads ?? c.heads;
    if (att.headDim === undefined && c.dModel % h !== 0) throw new Error(`model (byte-lm).attention.heads: ${h} must divide dModel = ${c.dModel} (or set headDim)`);
    const hd = att.headDim ?? c.dModel / h;
    if (c.positions === 'rope' && hd % 2 !== 0) throw new Error(`model (byte-lm).attention: rope needs an even head width, got ${hd}`);
  }
  // a copy, so that the schema's default object is never shared between models
  return { ...c, router: { ...c.router }, attention: { ...c.attention }, routerLossCoefs: { ...c.routerLossCoefs } };
}

/** The router config a block gets: the k field filled in where the router takes a k and does not set one. */
export function effectiveRouter(c: LMConfig): RouterConfig {
  const r = { ...c.router } as RouterConfig & { k?: number };
  if (ROUTERS_WITH_K.has(r.type) && r.k === undefined) r.k = c.k;
  return r;
}

/** Experts a token uses on average under the router config: its k, 1 for switch, the capacity factor for expert choice, maxK for dynamic. */
export function nominalK(c: LMConfig): number {
  const r = effectiveRouter(c) as { type: string; k?: number; capacityFactor?: number; maxK?: number };
  if (r.type === 'switch') return 1;
  if (r.type === 'expert-choice') return r.capacityFactor ?? c.k;
  if (r.type === 'dynamic') return r.maxK ?? c.k;
  return r.k ?? c.k;
}

/** Hidden width of the dense blocks: denseHidden, or k * dFF (equal active expert parameters per token). */
export function denseHiddenOf(c: LMConfig): number {
  return c.denseHidden ?? Math.max(1, Math.round(nominalK(c) * c.dFF));
}

/** The same model with dense feed-forwards of k * dFF (unless denseHidden says otherwise): the equal-active-parameters baseline. */
export function denseCounterpart(c: Partial<LMConfig>): LMConfig {
  return lmConfig({ ...c, ffn: 'dense' });
}

export function isMoEBlock(c: LMConfig, i: number): boolean {
  return c.ffn === 'moe' && (i + 1) % c.moeEvery === 0;
}

export interface LMOutput {
  /** [B, T, 256]: next-byte logits at every position. */
  logits: Tensor;
  /** Sum of the MoE blocks' weighted aux losses (scalar); null when no block is MoE. */
  auxLoss: Tensor | null;
  /**
   * Router metrics averaged over the MoE blocks (entropy, entropyOfMean, dropFraction, loadCV,
   * maxOverMean) plus deadExperts, the total count of experts that got no token, over all blocks;
   * empty for a dense model. Metrics a router does not define (entropy of hash routing) are absent.
   */
  metrics: Record<string, number>;
}

type Norm = LayerNorm | RMSNorm;

export class ByteLM extends Module {
  readonly config: LMConfig;
  readonly tokenEmbedding: Embedding;
  /** [maxSeqLen, d] with positions 'learned'; null with rope. */
  readonly positionEmbedding: Tensor | null;
  readonly blocks: Array<TransformerBlock<RouterMetrics>>;
  readonly finalNorm: Norm;
  /** Linear(d, 256, no bias); null when tied to the token embedding. */
  readonly head: Linear | null;
  private rng: Rng;

  constructor(config: Partial<LMConfig> = {}, seed = 0) {
    super();
    const c = (this.config = lmConfig(config));
    const d = c.dModel;
    const rng = new Rng(seed);
    this.rng = new Rng(deriveSeed(seed, 1));
    // GPT-2's 0.02 rather than PyTorch's 1: a tied head multiplies by this matrix, and unit-scale
    // rows would start the logits at ~sqrt(d)
    this.tokenEmbedding = this.module('tokenEmbedding', new Embedding(BYTE_VOCAB_SIZE, d, { std: 0.02, rng }));
    this.positionEmbedding = c.positions === 'learned' ? this.param('positionEmbedding', normal([c.maxSeqLen, d], 0.02, rng)) : null;
    const routerCfg = effectiveRouter(c);
    const hidden = denseHiddenOf(c);
    this.blocks = [];
    for (let i = 0; i < c.layers; i++) {
      const ffn: FeedForwardConfig = isMoEBlock(c, i)
        ? {
          type: 'moe', dFF: c.dFF, numExperts: c.numExperts, router: routerCfg, activation: c.activation,
          capacityFactor: c.capacityFactor, loadBalanceCoef: c.loadBalanceCoef, zLossCoef: c.zLossCoef,
          routerLossCoefs: { ...c.routerLossCoefs }, seed: deriveSeed(seed, 2, i) | 0,
        }
        : { type: 'mlp', hidden, activation: c.activation };
      this.blocks.push(this.module(`blocks.${i}`, transformerBlock({
        dModel: d, heads: c.heads, maxSeqLen: c.maxSeqLen, causal: true, ffn, norm: c.norm, attention: c.attention,
        rope: c.positions === 'rope', dropout: c.dropout, rng,
        ...(c.attention.type === 'mha' ? { bias: c.attentionBias } : {}),
        ...(c.depthCapacity < 1 && (i + 1) % c.depthEvery === 0 ? { depthCapacity: c.depthCapacity, depthPredictor: c.depthPredictor } : {}),
      })));
    }
    this.finalNorm = this.module('finalNorm', c.norm === 'rms' ? new RMSNorm(d) : new LayerNorm(d));
    this.head = c.tieEmbeddings ? null : this.module('head', new Linear(d, BYTE_VOCAB_SIZE, { bias: false, rng }));
  }

  /** ids int32 [B, T] (T <= maxSeqLen), bytes 0..255 -> logits [B, T, 256], aux loss, router metrics. */
  forward(ids: Tensor): LMOutput {
    if (ids.dtype !== 'int32' || ids.rank !== 2) throw new Error(`ByteLM: ids must be int32 [B, T], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    const T = ids.shape[1]!;
    if (T > this.config.maxSeqLen) throw new Error(`ByteLM: sequence length ${T} exceeds maxSeqLen = ${this.config.maxSeqLen}`);
    let x = this.tokenEmbedding.forward(ids); // [B, T, d]
    if (this.positionEmbedding) x = add(x, narrow(this.positionEmbedding, 0, 0, T)); // + [T, d], broadcast over B
    if (this.training && this.config.dropout > 0) x = dropout(x, this.config.dropout, { training: true, rng: this.rng });
    const tokenIds = ids.data as Int32Array; // B*T ids, for hash routing
    let auxLoss: Tensor | null = null;
    const blockMetrics: RouterMetrics[] = [];
    for (const block of this.blocks) {
      const out = block.forward(x, { tokenIds });
      x = out.y;
      if (out.auxLoss) auxLoss = auxLoss ? add(auxLoss, out.auxLoss) : out.auxLoss;
      if (out.metrics) blockMetrics.push(out.metrics);
    }
    const h = this.finalNorm.forward(x); // [B, T, d]
    const logits = this.head ? this.head.forward(h) : matmul(h, this.tokenEmbedding.weight, { transB: true }); // [B, T, 256]
    return { logits, auxLoss, metrics: averageMetrics(blockMetrics) };
  }

  /** Restarts the embedding-dropout generator (Module.reseedAll calls it each training step). */
  reseed(seed: number): void {
    this.rng = new Rng(seed);
  }

  moeLayers(): MoELayer[] {
    return this.blocks.flatMap((b) => (b.ffn instanceof MoELayer ? [b.ffn] : []));
  }

  totalParameters(): number {
    return this.numParameters();
  }

  /** Parameters one token uses: everything except the experts it is not routed to (router + k experts per MoE block; embeddings and head counted). */
  activeParameters(): number {
    // attention-MoE: a token runs k of E value and output experts per head
    const idleAttention = this.blocks.reduce((s, b) => s + (b.attn instanceof SwitchHead ? (1 - b.attn.topK / b.attn.experts) * (b.attn.wv.size + b.attn.wo.size) : 0), 0);
    return activeParameterCount(this, nominalK(this.config)) - idleAttention;
  }

  /** Router parameters over all MoE blocks: what a MoE model has active beyond its dense counterpart. */
  routerParameters(): number {
    return this.moeLayers().reduce((s, m) => s + m.router.numParameters(), 0);
  }
}

function averageMetrics(ms: RouterMetrics[]): Record<string, number> {
  if (ms.length === 0) return {};
  const out: Record<string, number> = {};
  for (const key of ['entropy', 'entropyOfMean', 'dropFraction', 'loadCV', 'maxOverMean'] as const) {
    const vals = ms.map((m) => m[key]).filter((v) => Number.isFinite(v));
    if (vals.length > 0) out[key] = vals.reduce((a, b) => a + b, 0) / vals.length;
  }
  out['deadExperts'] = ms.reduce((s, m) => s + m.deadExperts.length, 0);
  return out;
}

export interface GenerateOptions {
  /** Bytes to append to the prompt. */
  maxNewTokens: number;
  /** Softmax temperature; 0 (default) = greedy arg-max. */
  temperature?: number;
  /** Sample among the topK most likely bytes only (default: all 256). */
  topK?: number;
  /** Seed of the sampling generator (default 0); the same seed gives the same bytes. */
  seed?: number;
  /** Decode with the KV cache while the text fits in maxSeqLen (default true); false re-runs the window per byte. */
  useCache?: boolean;
}

/**
 * The prompt followed by maxNewTokens sampled bytes, in eval mode without recording gradients
 * (the model's mode is restored afterwards). While the text fits in maxSeqLen, the prompt is run
 * once and each new byte attends to cached keys and values (lm-kv.ts); past maxSeqLen each step
 * re-runs the model on the last maxSeqLen bytes (learned positions cannot slide), as without a cache.
 */
export function generate(model: ByteLM, prompt: Uint8Array, opts: GenerateOptions): Uint8Array {
  const n = opts.maxNewTokens;
  const temperature = opts.temperature ?? 0;
  const topK = opts.topK ?? BYTE_VOCAB_SIZE;
  if (!(Number.isInteger(n) && n >= 0)) throw new Error(`generate: maxNewTokens must be a non-negative integer, got ${n}`);
  if (!(temperature >= 0 && Number.isFinite(temperature))) throw new Error(`generate: temperature must be a finite number >= 0, got ${temperature}`);
  if (!(Number.isInteger(topK) && topK >= 1)) throw new Error(`generate: topK must be a positive integer, got ${topK}`);
  if (prompt.length === 0) throw new Error('generate: the prompt must hold at least one byte (e.g. a newline)');
  const rng = new Rng(opts.seed ?? 0);
  const out = new Uint8Array(prompt.length + n);
  out.set(prompt);
  const maxLen = model.config.maxSeqLen;
  // Mixture-of-Depths: top-c chooses tokens over the whole window (no cache, each step re-runs the
  // window); with predictors every token's choice is causal, and the cache works
  const routers = model.blocks.flatMap((b) => (b.depth ? [b.depth] : []));
  const causal = routers.length > 0 && routers.every((r) => r.predictor !== null);
  const cache = (opts.useCache ?? true) && (routers.length === 0 || causal) && n > 0 && prompt.length <= maxLen ? newByteLMCache(model, maxLen) : null;
  const wasTraining = model.training;
  const modes = routers.map((r) => r.selection);
  if (causal) for (const r of routers) r.selection = 'causal';
  model.eval();
  try {
    noGrad(() => {
      for (let len = prompt.length; len < out.length; len++) {
        if (cache && len <= maxLen) {
          // the cache holds bytes 0 .. cache.length - 1: feed the rest (the prompt once, then one byte)
          const ids = Int32Array.from(out.subarray(cache.length, len));
          const logits = forwardCached(model, ids, cache).data; // [T, 256]
          out[len] = sampleByte(logits, (ids.length - 1) * BYTE_VOCAB_SIZE, temperature, topK, rng);
          continue;
        }
        const start = Math.max(0, len - maxLen);
        const T = len - start;
        const ids = new Tensor(Int32Array.from(out.subarray(start, len)), [1, T]);
        const logits = model.forward(ids).logits.data; // [1, T, 256]; only the last row is used
        out[len] = sampleByte(logits, (T - 1) * BYTE_VOCAB_SIZE, temperature, topK, rng);
      }
    });
  } finally {
    model.train(wasTraining);
    routers.forEach((r, i) => { r.selection = modes[i]!; });
  }
  return out;
}

function sampleByte(logits: ArrayLike<number>, off: number, temperature: number, topK: number, rng: Rng): number {
  const V = BYTE_VOCAB_SIZE;
  let best = 0;
  for (let v = 1; v < V; v++) if (logits[off + v]! > logits[off + best]!) best = v;
  if (temperature === 0) return best;
  // the topK largest; ties broken by byte value so the draw is reproducible
  const order = Array.from({ length: V }, (_, v) => v).sort((a, b) => logits[off + b]! - logits[off + a]! || a - b).slice(0, Math.min(topK, V));
  const maxL = logits[off + best]!;
  const w = order.map((v) => Math.exp((logits[off + v]! - maxL) / temperature));
  let u = rng.next() * w.reduce((a, b) => a + b, 0);
  for (let i = 0; i < order.length; i++) {
    u -= w[i]!;
    if (u < 0) return order[i]!;
  }
  return order[order.length - 1]!;
}
