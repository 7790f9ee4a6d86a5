// Dense two-layer feed-forward block, the dense baseline of an MoE layer's experts.

import { ACTIVATIONS, type Activation } from './activations.js';
import { Module } from './module.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/rng.js';
import { Linear } from './linear.js';
import { gelu, geluTanh, mul, relu, silu } from '../ops/index.js';

/** The expert bank's activations (nn/activations.ts): a dense MLP is the counterpart of one expert. */
export const MLP_ACTIVATIONS = ACTIVATIONS;
export type MLPActivation = Activation;

export interface MLPOptions {
  /** 'gelu' (default, exact), 'geluTanh', 'relu', 'silu', or 'swiglu' (w2(silu(w1 x) * w3 x)); the MoE expert bank's set. */
  activation?: MLPActivation;
  /**
   * Biases on every projection (default false, like the MoE expert bank, so a dense MLP with the
   * same hidden width has exactly the active parameters of one expert).
   */
  bias?: boolean;
  rng?: Rng;
}

export class MLP extends Module {
  readonly w1: Linear;
  readonly w2: Linear;
  /** The gate's second projection, swiglu only. */
  readonly w3: Linear | null;
  readonly activation: MLPActivation;

  constructor(readonly d: number, readonly hidden: number, opts: MLPOptions = {}) {
    super();
    this.activation = opts.activation ?? 'gelu';
    if (!MLP_ACTIVATIONS.includes(this.activation)) {
      throw new Error(`MLP: activation = '${String(this.activation)}' is unknown (known: ${MLP_ACTIVATIONS.join(', ')})`);
    }
    const lin = { bias: opts.bias ?? false, ...(opts.rng ? { rng: opts.rng } : {}) };
    // registration order w1, w3, w2 follows the data flow (LLaMA's names)
    this.w1 = this.module('w1', new Linear(d, hidden, lin));
    this.w3 = this.activation === 'swiglu' ? this.module('w3', new Linear(d, hidden, lin)) : null;
    this.w2 = this.module('w2', new Linear(hidden, d, lin));
  }

  /** x [..., d] -> [..., d], through a hidden [..., hidden]. */
  forward(x: Tensor): Tensor {
    const a = this.w1.forward(x);
    let h: Tensor;
    switch (this.activation) {
      case 'gelu': h = gelu(a); break;
      case 'geluTanh': h = geluTanh(a); break;
      case 'relu': h = relu(a); break;
      case 'silu': h = silu(a); break;
      case 'swiglu': h = mul(silu(a), this.w3!.forward(x)); break;
    }
    return this.w2.forward(h);
  }
}
