// The expert bank: E two-layer MLPs with weights stacked [E, d, h] and [E, h, d], run as grouped
// GEMMs over the permuted rows (never a loop over experts in TypeScript), through the fused
// expertMLP op whose backward keeps only the hidden pre-activations.

import { Module } from '../../nn/module.js';
import type { Tensor } from '../../tensor/tensor.js';
import { Rng } from '../../tensor/rng.js';
import { uniform } from '../../nn/init.js';
import { expertMLP, type ExpertMLPWeights } from '../../ops/expert-mlp.js';
import { checkInt } from '../util.js';
import { ACTIVATIONS, type Activation } from '../../nn/activations.js';

// re-exported: the MoE layer and Soft MoE name the bank's activations from here
export { ACTIVATIONS, type Activation };

export interface ExpertBankOptions {
  /** 'gelu' (default, exact), 'geluTanh', 'relu', 'silu', or 'swiglu' (silu(x W1) * (x W3), then W2). */
  activation?: Activation;
  /** Biases b1 [E, h] and b2 [E, d] (default false). */
  bias?: boolean;
  seed?: number;
}

export class ExpertBank extends Module {
  readonly w1: Tensor;
  readonly w2: Tensor;
  readonly w3: Tensor | null;
  readonly b1: Tensor | null;
  readonly b2: Tensor | null;
  readonly activation: Activation;

  constructor(readonly numExperts: number, readonly dModel: number, readonly dHidden: number, opts: ExpertBankOptions = {}) {
    super();
    checkInt('ExpertBank', 'numExperts', numExperts, 1);
    checkInt('ExpertBank', 'dModel', dModel, 1);
    checkInt('ExpertBank', 'dHidden', dHidden, 1);
    this.activation = opts.activation ?? 'gelu';
    if (!ACTIVATIONS.includes(this.activation)) {
      throw new Error(`ExpertBank: activation = '${String(this.activation)}' is unknown (known: ${ACTIVATIONS.join(', ')})`);
    }
    const rng = new Rng(opts.seed ?? 0);
    const b1 = 1 / Math.sqrt(dModel);
    const b2 = 1 / Math.sqrt(dHidden);
    this.w1 = this.param('w1', uniform([numExperts, dModel, dHidden], b1, rng));
    this.w2 = this.param('w2', uniform([numExperts, dHidden, dModel], b2, rng));
    this.w3 = this.activation === 'swiglu' ? this.param('w3', uniform([numExperts, dModel, dHidden], b1, rng)) : null;
    this.b1 = opts.bias ? this.param('b1', uniform([numExperts, dHidden], b1, rng)) : null;
    this.b2 = opts.bias ? this.param('b2', uniform([numExperts, dModel], b2, rng)) : null;
  }

  /** Active parameters per token for one expert. */
  paramsPerExpert(): number {
    return this.numParameters() / this.numExperts;
  }

  /** x [A', d] in expert order, groupSizes [E] -> [A', d]. expertOfRow is needed only with biases. */
  forward(x: Tensor, groupSizes: Int32Array, expertOfRow?: Int32Array): Tensor {
    if (x.rank !== 2 || x.shape[1] !== this.dModel) {
      throw new Error(`ExpertBank: input must be [rows, ${this.dModel}], got [${x.shape.join(', ')}]`);
    }
    return expertMLP(x, groupSizes, this.activation, this.weights(), this.rowExpert(expertOfRow));
  }

  /**
   * The routed form: x [T, d] token rows; expert row r reads token tokenOfRow[r], is weighted by
   * gates [A'] and summed back into that token -> [T, d]. One op, so backward keeps the hidden
   * pre-activations and the indices, not the permuted rows or the expert outputs.
   */
  forwardRouted(x: Tensor, tokenOfRow: Int32Array, groupSizes: Int32Array, gates: Tensor, expertOfRow?: Int32Array): Tensor {
    if (x.rank !== 2 || x.shape[1] !== this.dModel) {
      throw new Error(`ExpertBank: input must be [tokens, ${this.dModel}], got [${x.shape.join(', ')}]`);
    }
    return expertMLP(x, groupSizes, this.activation, this.weights(), { rowIndex: tokenOfRow, gates, ...this.rowExpert(expertOfRow) });
  }

  private weights(): ExpertMLPWeights {
    return { w1: this.w1, w2: this.w2, w3: this.w3, b1: this.b1, b2: this.b2 };
  }

  private rowExpert(expertOfRow: Int32Array | undefined): { rowExpert?: Int32Array } {
    if (!this.b1) return {};
    if (!expertOfRow) throw new Error('ExpertBank: expertOfRow is required when the experts have biases');
    return { rowExpert: expertOfRow };
  }
}

/** Rows -> expert index for consecutive groups. */
export function expertOfRows(groupSizes: Int32Array): Int32Array {
  const total = groupSizes.reduce((a, b) => a + b, 0);
  const out = new Int32Array(total);
  let r = 0;
  for (let e = 0; e < groupSizes.length; e++) {
    out.fill(e, r, r + groupSizes[e]!);
    r += groupSizes[e]!;
  }
  return out;
}

