// Analytic compute of a byte LM from its config: matrix-product multiply-adds per token, training and inference FLOPs, and the router's share of an MoE layer.
//
// Convention (Kaplan et al. 2020): only matrix products count, 1 multiply-add = 2 FLOPs; norms,
// softmax, activations, the embedding lookup and the top-k selection are left out (each is O(d)
// per token against O(d^2) for the products). Per token, per block, with d = dModel, T = context:
//   attention projections   4 d^2           (q, k, v, out)
//   attention products      2 T d           (q k^T and att v; T = the window for training, the
//                                            kernel computes the full T x T square and masks it)
//   dense MLP               m d h           (m = 2 matrices for gelu, 3 for swiglu; h = dense width)
//   MoE block               R + k m d dFF   (R = router: d E for linear gates, d (G + E/G) for the
//                                            hierarchical router, 2 d E for noisy top-k, 0 for hash)
// and once per token the output head, 256 d. Training costs 3x the forward (backward = input and
// weight gradients, each a product as large as the forward's): 3 * 2 * MACs FLOPs per token.

import { denseHiddenOf, isMoEBlock, nominalK, effectiveRouter, lmConfig, type ByteLM, type LMConfig } from '../../models/lm.js';
import { BYTE_VOCAB_SIZE } from '../../data/text.js';

export interface LMCompute {
  /** Forward multiply-adds per token at context T, split by part (summed over blocks). */
  macs: { attentionProj: number; attentionMix: number; ffn: number; router: number; head: number; total: number };
  /** Forward FLOPs per token (2 * macs.total). */
  forwardFlopsPerToken: number;
}

/** Router multiply-adds per token for a router config over E experts of width d. */
export function routerMacsPerToken(router: { type: string; groups?: number }, d: number, E: number): number {
  switch (router.type) {
    case 'hash': return 0;
    case 'noisy-topk': return 2 * d * E; // the logits and the learned noise scale
    case 'hierarchical': {
      const G = router.groups ?? 1;
      if (!(Number.isInteger(G) && G >= 1 && E % G === 0)) throw new Error(`routerMacsPerToken: hierarchical groups = ${G} must be a positive integer dividing E = ${E}`);
      return d * (G + E / G);
    }
    case 'topk': case 'switch': case 'expert-choice': case 'sigmoid-group': case 'dynamic': case 'differentiable-topk':
      return d * E;
    default:
      throw new Error(`routerMacsPerToken: no cost model for router type '${router.type}'`);
  }
}

/** Matrices per MLP: 2 (up, down) or 3 with swiglu's gate. */
function matricesOf(c: LMConfig): number {
  return c.activation === 'swiglu' ? 3 : 2;
}

/** Multiply-adds per token of one forward pass of a byte LM whose attention sees `context` positions. */
export function lmCompute(config: Partial<LMConfig>, context: number): LMCompute {
  const c = lmConfig(config);
  if (!(context > 0 && Number.isFinite(context))) throw new Error(`lmCompute: context must be a positive number of positions, got ${context}`);
  const d = c.dModel;
  const m = matricesOf(c);
  const k = nominalK(c);
  const router = effectiveRouter(c) as { type: string; groups?: number };
  let ffn = 0;
  let routerMacs = 0;
  for (let i = 0; i < c.layers; i++) {
    if (isMoEBlock(c, i)) {
      ffn += k * m * d * c.dFF;
      routerMacs += routerMacsPerToken(router, d, c.numExperts);
    } else {
      const h = denseHiddenOf(c);
      ffn += m * d * h;
    }
  }
  const attentionProj = c.layers * 4 * d * d;
  const attentionMix = c.layers * 2 * context * d;
  const head = BYTE_VOCAB_SIZE * d;
  const total = attentionProj + attentionMix + ffn + routerMacs + head;
  return {
    macs: { attentionProj, attentionMix, ffn, router: routerMacs, head, total },
    forwardFlopsPerToken: 2 * total,
  };
}

/**
 * Kaplan's N for a built model: the parameters one token uses (router + k experts per MoE block,
 * attention, norms, dense MLPs), without the byte embedding, position table and output head.
 */
export function activeNonEmbeddingParameters(model: ByteLM): number {
  const embedding = model.tokenEmbedding.numParameters() + (model.positionEmbedding?.size ?? 0) + (model.head?.numParameters() ?? 0);
  return model.activeParameters() - embedding;
}

/** Training FLOPs: 3 forward passes' worth (forward + backward) per trained token, at the training window. */
export function trainingFlops(config: Partial<LMConfig>, seqLen: number, tokens: number): number {
  return 3 * lmCompute(config, seqLen).forwardFlopsPerToken * tokens;
}

/**
 * Inference FLOPs per generated token with a KV cache filled to the window seqLen: each new token
 * attends to (seqLen + 1) / 2 positions on average over a window.
 */
export function inferenceFlopsPerToken(config: Partial<LMConfig>, seqLen: number): number {
  return lmCompute(config, (seqLen + 1) / 2).forwardFlopsPerToken;
}

/**
 * The router's share of an MoE layer's multiply-adds per token: R / (R + k m d dFF), with R = d E
 * (flat) or d (G + E/G) (hierarchical). d cancels: flat E / (E + k m dFF).
 */
export function routerShareOfMoELayer(opts: { E: number; d: number; dFF: number; k: number; groups?: number; matrices?: number }): number {
  const m = opts.matrices ?? 2;
  const R = opts.groups === undefined ? opts.d * opts.E : routerMacsPerToken({ type: 'hierarchical', groups: opts.groups }, opts.d, opts.E);
  return R / (R + opts.k * m * opts.d * opts.dFF);
}
