// The router contract: a routing decision is a flat list of assignments (token, expert, gate).
// Token-choice top-k gives T*k of them in token-major order; dynamic k gives a variable number
// per token; expert choice gives capacity entries per expert. One form, one dispatch path.

import type { Tensor } from '../../tensor/tensor.js';
import type { Module } from '../../nn/module.js';

export interface Routing {
  /** Number of tokens T routed. */
  tokens: number;
  /** Number of experts E. */
  experts: number;
  /** Token of each assignment [A]. */
  token: Int32Array;
  /** Expert of each assignment [A]. */
  expert: Int32Array;
  /** Gate of each assignment [A]: differentiable with respect to the router's parameters. */
  gates: Tensor;
  /** The nominal experts per token (k): capacity and load fractions are normalised by T*k. */
  k: number;
  /** Router logits [T, E] (before softmax or sigmoid), for the z-loss; null for routers without. */
  logits: Tensor | null;
  /** Routing distribution [T, E] whose rows sum to 1, for P_i, entropy and the balance loss. */
  probs: Tensor | null;
  /** Router-specific auxiliary losses (unweighted), e.g. noisy gating's importance and load. */
  aux: Record<string, Tensor>;
  /**
   * Set by routers that give each expert a fixed number of tokens themselves (expert choice):
   * the layer then applies no capacity of its own and dispatches dropless.
   */
  capacity?: number;
  /** Router-specific statistics for metrics (plain numbers). */
  stats: Record<string, number | number[]>;
}

export interface RouteOptions {
  /** Token ids [T], for routers that use them (hash routing). */
  tokenIds?: Int32Array;
}

export interface Router extends Module {
  readonly kind: string;
  readonly numExperts: number;
  route(x: Tensor, opts?: RouteOptions): Routing;
}
