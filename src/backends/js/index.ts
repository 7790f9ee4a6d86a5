// The js reference backend: every kernel as plain loops over typed arrays (float32 or float64).

import type { Backend } from '../../kernels/kernels.js';
import { registerBackend } from '../../kernels/registry.js';
import { groupedMatmul, groupedMatmulEpilogue, groupedMatmulWeightGrad, matmul } from './matmul.js';
import { activationBackwardRows, binary, broadcastTo, copyStrided, sumToShape, unary, unaryBackward } from './elementwise.js';
import { reduce, scatterArg, softmax, softmaxBackward, topk, topkBackward } from './reduce.js';
import { gatherRows, scatterAddRows } from './rows.js';
import { layerNorm, layerNormBackward, rmsNorm, rmsNormBackward } from './norm.js';
import { crossEntropy, crossEntropyBackward } from './loss.js';
import { quantGroupedMatmul, quantMatmul } from './quant.js';
import { cachedAttention, kvWrite } from './attention.js';
import { expertSwiGLU } from './experts.js';
import { qkvAttention } from './qkv-attention.js';

export const jsBackend: Backend = {
  name: 'js',
  float64: true,
  info: 'plain TypeScript loops (reference)',
  kernels: {
    matmul, groupedMatmul, groupedMatmulEpilogue, groupedMatmulWeightGrad, binary, unary, unaryBackward, activationBackwardRows, softmax, softmaxBackward,
    reduce, sumToShape, broadcastTo, scatterArg, topk, topkBackward, gatherRows, scatterAddRows, copyStrided,
    layerNorm, layerNormBackward, rmsNorm, rmsNormBackward, crossEntropy, crossEntropyBackward, quantMatmul, quantGroupedMatmul,
    cachedAttention,
    kvWrite,
    qkvAttention,
    expertSwiGLU,
  },
};

registerBackend(jsBackend);
