// Hash routing (Roller et al. 2021): no parameters, deterministic. By token id when ids are
// given, else by a hash of the token's float32 bits, so the choice is the same across runs and
// backends. k > 1 picks k distinct experts by re-hashing; each gate is 1/k (no gradient).

import { Module } from '../../nn/module.js';
import { Tensor } from '../../tensor/tensor.js';
import type { Router, RouteOptions, Routing } from './types.js';
import { checkInt, checkTokens } from '../util.js';
import { mix32 } from '../../tensor/rng.js';


export interface HashRouterOptions {
  /** Experts per token (default 1). */
  k?: number;
  /** Salt of the hash (default 0). */
  seed?: number;
}

export class HashRouter extends Module implements Router {
  readonly kind = 'hash';
  readonly k: number;
  private readonly salt: number;

  constructor(readonly dModel: number, readonly numExperts: number, opts: HashRouterOptions = {}) {
    super();
    checkInt('HashRouter', 'numExperts', numExperts, 1);
    this.k = opts.k ?? 1;
    checkInt('HashRouter', 'k', this.k, 1, numExperts);
    this.salt = mix32((opts.seed ?? 0) ^ 0x9e3779b9);
  }

  /** The hash of one token: its id, or its row of float32 bits. */
  private tokenHash(x: Tensor, t: number, ids: Int32Array | undefined): number {
    if (ids) return mix32(ids[t]! ^ this.salt);
    const d = this.dModel;
    const bits = new Int32Array((x.data as Float32Array).buffer, (x.data as Float32Array).byteOffset + t * d * 4, d);
    let h = this.salt;
    for (let j = 0; j < d; j++) h = mix32(h ^ bits[j]!) ;
    return h;
  }

  route(x: Tensor, opts: RouteOptions = {}): Routing {
    checkTokens('HashRouter', x, this.dModel);
    if (x.dtype !== 'float32' && !opts.tokenIds) throw new Error('HashRouter: hashing features needs float32 input (or pass tokenIds)');
    const T = x.shape[0]!;
    const ids = opts.tokenIds;
    if (ids && ids.length !== T) throw new Error(`HashRouter: ${ids.length} tokenIds for ${T} tokens`);
    const E = this.numExperts;
    const k = this.k;
    const token = new Int32Array(T * k);
    const expert = new Int32Array(T * k);
    for (let t = 0; t < T; t++) {
      let h = this.tokenHash(x, t, ids);
      const used = new Set<number>();
      for (let j = 0; j < k; j++) {
        let e = h % E;
        while (used.has(e)) { h = mix32(h + 1); e = h % E; }
        used.add(e);
        token[t * k + j] = t;
        expert[t * k + j] = e;
        h = mix32(h + 0x6a09e667);
      }
    }
    const gates = Tensor.empty([T * k], x.dtype);
    gates.data.fill(1 / k);
    return { tokens: T, experts: E, token, expert, gates, k, logits: null, probs: null, aux: {}, stats: {} };
  }
}
