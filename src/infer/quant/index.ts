// Quantised weights for inference: ggml's Q8_0 / Q4_0 block formats, QuantWeight and its products.

export { QK, BLOCK_BYTES, QUANT_TYPES, isQuantType, quantizeRow, dequantizeRow, quantizeArray, dequantizeArray, quantizedBytes,
  type QuantType } from '../../tensor/quant-blocks.js';
export { floatToHalf, halfToFloat } from '../../tensor/half.js';
export { QuantWeight, quantize, dequantize, quantWeightFromRaw, stackQuantWeights } from './weight.js';
export { quantMatmul, quantGroupedMatmul } from './matmul.js';
