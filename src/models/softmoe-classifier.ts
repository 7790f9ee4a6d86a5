// The Soft MoE patch classifier of Chung et al. (2024)'s MNIST experiments: a 28x28 image cut
// into (28/patch)^2 patches = m tokens of d = patch^2 pixels; one Soft MoE layer (p slots per
// expert, no residual); experts Linear(d->h)-ReLU-Linear(h->d) without biases, h = floor(784/n)
// so the total parameter count stays fixed as the number of experts n varies; a linear decoder
// from the flattened m*d output to the classes. Two recipes: moe-ts's own, and the authors' (their
// code, YoungseogChung/beyond-param-count: slots from the normalised tokens, U[-1, 1] Phi, a
// decoder without bias); the experiment adds the recipes' pixel scaling and training loop.

import { Module } from '../nn/module.js';
import { Linear } from '../nn/linear.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { reshape, transpose } from '../ops/index.js';
import { SoftMoELayer, type SoftMoEMetrics } from '../moe/soft.js';
import { forwardSelected, type SelectOptions } from '../moe/select.js';
import type { Schema } from '../config/schema.js';

export interface SoftMoEClassifierConfig {
  /** Number of experts n (default 16). */
  numExperts: number;
  /** Expert hidden width; null = floor(784 / numExperts) (fixed total parameters). */
  hidden: number | null;
  /** Patch side: a 28x28 image gives (28/patch)^2 tokens of patch^2 pixels (default 14: 4 tokens of 196). */
  patch: number;
  /** Slots per expert p (default 1, as in the paper). */
  slotsPerExpert: number;
  /** l2-normalise tokens and Phi with a learned scale (default true). */
  normalize: boolean;
  /** Slots from the 'raw' tokens (default) or the l2-'normalized' ones (the authors'); see SoftMoEConfig. */
  slotInputs?: 'raw' | 'normalized';
  /** Phi init: 'normal' N(0, 1/d) (default) or 'uniform' U[-1, 1] (the authors'). */
  phiInit?: 'normal' | 'uniform';
  /** The decoder has a bias (default true; the authors' has none). */
  decoderBias?: boolean;
  /** Image side (default 28) and classes (default 10). */
  imageSize: number;
  classes: number;
}

export const SOFTMOE_CLASSIFIER_SCHEMA: Schema = {
  numExperts: { type: 'integer', default: 16, min: 1, doc: 'number of experts n' },
  hidden: { type: 'integer', default: null, nullable: true, min: 1, doc: 'expert hidden width; null = floor(784 / n), fixed total parameters' },
  patch: { type: 'integer', default: 14, min: 1, doc: 'patch side; 14 gives 4 tokens of 196 pixels' },
  slotsPerExpert: { type: 'integer', default: 1, min: 1, doc: 'slots per expert p' },
  normalize: { type: 'boolean', default: true, doc: 'l2-normalise tokens and Phi, with a learned scale' },
  slotInputs: { type: 'string', default: 'raw', oneOf: ['raw', 'normalized'], doc: "slots from the raw tokens or the l2-normalised ones (Chung et al.'s code)" },
  phiInit: { type: 'string', default: 'normal', oneOf: ['normal', 'uniform'], doc: "Phi init N(0, 1/d) or U[-1, 1] (Chung et al.'s code)" },
  decoderBias: { type: 'boolean', default: true, doc: "a bias in the linear decoder (Chung et al.'s code has none)" },
  imageSize: { type: 'integer', default: 28, min: 1, doc: 'image side in pixels (square, one channel)' },
  classes: { type: 'integer', default: 10, min: 2, doc: 'number of classes' },
};

export type SoftMoERecipe = 'moe-ts' | 'authors';

/** The model fields a recipe sets (the rest of the config is the same for both). */
export function recipeModelFields(recipe: SoftMoERecipe): Required<Pick<SoftMoEClassifierConfig, 'normalize' | 'slotInputs' | 'phiInit' | 'decoderBias'>> {
  switch (recipe) {
    case 'moe-ts': return { normalize: true, slotInputs: 'raw', phiInit: 'normal', decoderBias: true };
    case 'authors': return { normalize: true, slotInputs: 'normalized', phiInit: 'uniform', decoderBias: false };
    default: throw new Error(`softmoe-classifier: recipe must be 'moe-ts' or 'authors', got ${JSON.stringify(recipe)}`);
  }
}

export class SoftMoEClassifier extends Module {
  readonly moe: SoftMoELayer;
  readonly decoder: Linear;
  readonly tokens: number;
  readonly tokenDim: number;
  readonly hidden: number;

  constructor(readonly config: SoftMoEClassifierConfig, seed = 0) {
    super();
    const { imageSize: S, patch: P, numExperts: n } = config;
    if (S % P !== 0) throw new Error(`softmoe-classifier: patch = ${P} must divide imageSize = ${S}`);
    this.tokens = (S / P) ** 2;
    this.tokenDim = P * P;
    this.hidden = config.hidden ?? Math.floor((S * S) / n);
    if (this.hidden < 1) throw new Error(`softmoe-classifier: numExperts = ${n} leaves hidden = floor(${S * S}/${n}) = 0`);
    const rng = new Rng(seed);
    this.moe = this.module('moe', new SoftMoELayer({
      dModel: this.tokenDim, numExperts: n, slotsPerExpert: config.slotsPerExpert, dFF: this.hidden,
      activation: 'relu', bias: false, normalize: config.normalize, seed: rng.nextU32(),
      // absent in configs saved before these options existed: the defaults are what those models used
      slotInputs: config.slotInputs ?? 'raw', phiInit: config.phiInit ?? 'normal',
    }));
    const decoderBias = config.decoderBias ?? true;
    if (typeof decoderBias !== 'boolean') throw new Error(`softmoe-classifier: decoderBias must be true or false, got ${JSON.stringify(config.decoderBias)}`);
    this.decoder = this.module('decoder', new Linear(this.tokens * this.tokenDim, config.classes, { rng, bias: decoderBias }));
  }

  /** images [B, S*S] (or [B, S, S]) -> tokens [B, m, P*P], patches in row-major order. */
  patchify(images: Tensor): Tensor {
    const S = this.config.imageSize;
    const P = this.config.patch;
    const g = S / P;
    const B = images.size / (S * S);
    if (!Number.isInteger(B) || images.shape[0] !== B) throw new Error(`softmoe-classifier: images must be [B, ${S * S}] or [B, ${S}, ${S}], got [${images.shape.join(', ')}]`);
    // [B, g, P, g, P] -> [B, g, g, P, P]
    return reshape(transpose(reshape(images, [B, g, P, g, P]), [0, 1, 3, 2, 4]), [B, g * g, P * P]);
  }

  forward(images: Tensor): { logits: Tensor; metrics: SoftMoEMetrics } {
    const tokens = this.patchify(images);
    const out = this.moe.forward(tokens);
    const B = tokens.shape[0]!;
    // metrics stay lazy (read through out): most callers only want the logits
    return { logits: this.decoder.forward(reshape(out.y, [B, this.tokens * this.tokenDim])), get metrics(): SoftMoEMetrics { return out.metrics; } };
  }

  /** Logits with only k experts per input (Algorithm 1, or a random subset with opts.random). */
  forwardSelected(images: Tensor, k: number, opts: SelectOptions = {}): Tensor {
    return this.selectWithStats(images, k, opts).logits;
  }

  /** forwardSelected, plus the kept experts and the share of C they hold per input. */
  selectWithStats(images: Tensor, k: number, opts: SelectOptions = {}): { logits: Tensor; selected: Int32Array; keptShare: Float64Array } {
    const tokens = this.patchify(images);
    const B = tokens.shape[0]!;
    const { y, selected, keptShare } = forwardSelected(this.moe, tokens, k, opts);
    return { logits: this.decoder.forward(reshape(y, [B, this.tokens * this.tokenDim])), selected, keptShare };
  }
}
