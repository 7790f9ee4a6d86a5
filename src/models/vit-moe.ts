// Sparse MoE image classifier: patch embedding plus learned positions, pre-norm Transformer
// blocks whose MLP is an MoE layer (any router), mean pooling, a linear head. ffn: 'dense' gives
// the counterpart with the same active parameters per token (MLP width k * dFF).

import { Module } from '../nn/module.js';
import { Linear } from '../nn/linear.js';
import { LayerNorm } from '../nn/norm.js';
import type { TransformerBlock } from '../nn/transformer.js';
import { transformerBlock } from './block.js';
import { normal } from '../nn/init.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { add, mean, reshape, transpose } from '../ops/index.js';
import type { Schema } from '../config/schema.js';
import type { RouterConfig } from '../moe/routers/index.js';
import type { Activation } from '../nn/activations.js';
import type { RouterMetrics } from '../moe/metrics.js';
import { activeParameterCount } from '../moe/layer.js';

export interface VitMoEConfig {
  imageSize: number;
  channels: number;
  classes: number;
  patch: number;
  dModel: number;
  layers: number;
  heads: number;
  ffn: 'moe' | 'dense';
  moeEvery: number;
  numExperts: number;
  k: number;
  dFF: number;
  router: Record<string, unknown>;
  capacityFactor: number | null;
  evalCapacityFactor: number | null;
  loadBalanceCoef: number;
  zLossCoef: number;
  activation: Activation;
  denseHidden: number | null;
  dropout: number;
}

export const VIT_MOE_SCHEMA: Schema = {
  imageSize: { type: 'integer', default: 28, min: 1, doc: 'image side in pixels (square)' },
  channels: { type: 'integer', default: 1, min: 1, doc: 'image channels (1 for the MNIST family, 3 for CIFAR)' },
  classes: { type: 'integer', default: 10, min: 2, doc: 'number of classes' },
  patch: { type: 'integer', default: 7, min: 1, doc: 'patch side: (imageSize/patch)^2 tokens' },
  dModel: { type: 'integer', default: 64, min: 1, doc: 'token width d' },
  layers: { type: 'integer', default: 4, min: 1, doc: 'Transformer blocks' },
  heads: { type: 'integer', default: 4, min: 1, doc: 'attention heads' },
  ffn: { type: 'string', default: 'moe', oneOf: ['moe', 'dense'], doc: "'moe' or 'dense' (the counterpart with equal active parameters)" },
  moeEvery: { type: 'integer', default: 1, min: 1, doc: 'MoE in every block (1) or every other block (2), dense elsewhere' },
  numExperts: { type: 'integer', default: 8, min: 1, doc: 'experts per MoE layer' },
  k: { type: 'integer', default: 2, min: 1, doc: 'experts per token (top-k routers)' },
  dFF: { type: 'integer', default: 128, min: 1, doc: 'hidden width of each expert' },
  router: { type: 'json', default: { type: 'topk' }, doc: 'router config ({ type, ...options }); k comes from the k field unless set here' },
  capacityFactor: { type: 'number', default: null, nullable: true, min: 0, doc: 'training capacity factor (null: dropless)' },
  evalCapacityFactor: { type: 'number', default: null, nullable: true, min: 0, doc: 'evaluation capacity factor (null: dropless)' },
  loadBalanceCoef: { type: 'number', default: 0.01, min: 0, doc: 'load-balance loss coefficient' },
  zLossCoef: { type: 'number', default: 0.001, min: 0, doc: 'router z-loss coefficient' },
  activation: { type: 'string', default: 'gelu', oneOf: ['gelu', 'geluTanh', 'relu', 'silu', 'swiglu'], doc: 'expert and MLP activation' },
  denseHidden: { type: 'integer', default: null, nullable: true, min: 1, doc: 'dense MLP width; null = k * dFF (equal active parameters)' },
  dropout: { type: 'number', default: 0, min: 0, max: 1, doc: 'dropout in attention and residual branches' },
};

/** Router metrics averaged over MoE blocks, as plain numbers for logs. */
export function averageRouterMetrics(ms: readonly RouterMetrics[]): Record<string, number> {
  if (ms.length === 0) return {};
  const avg = (f: (m: RouterMetrics) => number) => ms.reduce((s, m) => s + f(m), 0) / ms.length;
  return {
    entropy: avg((m) => m.entropy),
    entropyOfMean: avg((m) => m.entropyOfMean),
    dropFraction: avg((m) => m.dropFraction),
    loadCV: avg((m) => m.loadCV),
    deadExperts: avg((m) => m.deadExperts.length),
  };
}

const ROUTERS_WITH_K = ['topk', 'noisy-topk', 'sigmoid-group', 'differentiable-topk', 'hash', 'hierarchical'];

export class VitMoE extends Module {
  readonly embed: Linear;
  readonly pos: Tensor;
  readonly blocks: Array<TransformerBlock<RouterMetrics>>;
  readonly norm: LayerNorm;
  readonly head: Linear;
  readonly tokens: number;

  constructor(readonly config: VitMoEConfig, seed = 0) {
    super();
    const c = config;
    if (c.imageSize % c.patch !== 0) throw new Error(`vit-moe: patch = ${c.patch} must divide imageSize = ${c.imageSize}`);
    if (c.dModel % c.heads !== 0) throw new Error(`vit-moe: heads = ${c.heads} must divide dModel = ${c.dModel}`);
    if (c.k > c.numExperts) throw new Error(`vit-moe: k = ${c.k} must be at most numExperts = ${c.numExperts}`);
    const rng = new Rng(seed);
    this.tokens = (c.imageSize / c.patch) ** 2;
    this.embed = this.module('embed', new Linear(c.channels * c.patch * c.patch, c.dModel, { rng }));
    this.pos = this.param('pos', normal([this.tokens, c.dModel], 0.02, rng));
    const routerType = (c.router['type'] as string | undefined) ?? 'topk';
    const router = { ...(ROUTERS_WITH_K.includes(routerType) && c.router['k'] === undefined ? { k: c.k } : {}), ...c.router, type: routerType } as RouterConfig;
    this.blocks = [];
    for (let i = 0; i < c.layers; i++) {
      const moe = c.ffn === 'moe' && i % c.moeEvery === c.moeEvery - 1;
      const ffn = moe
        ? {
          type: 'moe' as const, dFF: c.dFF, numExperts: c.numExperts, router, activation: c.activation,
          capacityFactor: c.capacityFactor, evalCapacityFactor: c.evalCapacityFactor, loadBalanceCoef: c.loadBalanceCoef,
          zLossCoef: c.zLossCoef, seed: rng.nextU32(),
        }
        : { type: 'mlp' as const, hidden: c.denseHidden ?? c.k * c.dFF, activation: c.activation };
      this.blocks.push(this.module(`blocks.${i}`, transformerBlock({
        dModel: c.dModel, heads: c.heads, maxSeqLen: this.tokens, causal: false, ffn, norm: 'layer', dropout: c.dropout, rng,
      })));
    }
    this.norm = this.module('norm', new LayerNorm(c.dModel));
    this.head = this.module('head', new Linear(c.dModel, c.classes, { rng }));
  }

  /** images [B, C*S*S] (CHW) -> patches [B, N, C*P*P]. */
  patchify(images: Tensor): Tensor {
    const { imageSize: S, patch: P, channels: C } = this.config;
    const g = S / P;
    const B = images.shape[0]!;
    if (images.size !== B * C * S * S) throw new Error(`vit-moe: images must be [B, ${C * S * S}], got [${images.shape.join(', ')}]`);
    return reshape(transpose(reshape(images, [B, C, g, P, g, P]), [0, 2, 4, 1, 3, 5]), [B, g * g, C * P * P]);
  }

  classify(images: Tensor): { logits: Tensor; auxLoss: Tensor | null; metrics: Record<string, number> } {
    // B = batch, N = tokens (patches), d = channels
    let x = add(this.embed.forward(this.patchify(images)), this.pos); // [B, N, d]
    let aux: Tensor | null = null;
    const ms: RouterMetrics[] = [];
    for (const b of this.blocks) {
      const o = b.forward(x);
      x = o.y;
      if (o.auxLoss) aux = aux ? add(aux, o.auxLoss) : o.auxLoss;
      if (o.metrics) ms.push(o.metrics);
    }
    const pooled = mean(this.norm.forward(x), 1); // [B, d]
    return { logits: this.head.forward(pooled), auxLoss: aux, metrics: averageRouterMetrics(ms) };
  }

  /** Parameters one token uses: everything but the experts it is not routed to. */
  activeParameters(): number {
    return activeParameterCount(this, this.config.k);
  }
}
