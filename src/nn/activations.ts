// The activation functions of dense MLPs and expert banks: one list, owned by the fused expert op
// (ops/ sits below nn/ and cannot import it), named here for everything above ops/.

import { EXPERT_MLP_ACTIVATIONS, type ExpertMLPActivation } from '../ops/expert-mlp.js';

/** 'gelu' (exact), 'geluTanh', 'relu', 'silu', 'swiglu' (silu(x W1) * (x W3), then W2). */
export const ACTIVATIONS = EXPERT_MLP_ACTIVATIONS;
export type Activation = ExpertMLPActivation;
