// moe-ts: the public API.

import './backends/js/index.js';
import './backends/native/index.js';

export { Tensor, type NestedArray } from './tensor/tensor.js';
export type { DType, FloatArray, TypedArray } from './tensor/dtype.js';
export { shapeSize, shapeStr, broadcastShapes, type Shape } from './tensor/shape.js';
export { Rng, manualSeed, defaultRng, mix32, deriveSeed } from './tensor/rng.js';
export { releaseScratch, setScratchLimit, scratchStats } from './tensor/scratch.js';
export { noGrad, isGradEnabled, isRetainingGraph, record, savedForBackward, type GradNode, type BackwardFn, type BackwardOptions, type Saved, type SavedEntry } from './tensor/autograd.js';
export {
  getBackend, setBackend, withBackend, availableBackends, registerBackend, kernel, KernelNotFoundError, profileKernels, type KernelProfile,
  backendLoadError,
} from './kernels/registry.js';
export { KERNEL_NAMES, BINARY_OPS, UNARY_OPS, REDUCE_OPS, type Backend, type KernelImpls, type KernelName } from './kernels/kernels.js';
export * as ops from './ops/index.js';
export * from './ops/index.js';
export * from './nn/index.js';
export { transformerBlock, buildFeedForward, type BlockSpec, type FeedForwardConfig, type DenseFFNConfig, type MoEFFNConfig } from './models/block.js';
export * as moe from './moe/index.js';
export { nativeInfo, measurePeakGflops } from './backends/native/index.js';
export * as data from './data/index.js';
export * as io from './io/index.js';
export * as train from './train/index.js';
export * as report from './report/index.js';
export * as config from './config/index.js';
export * as models from './models/index.js';
export { loadModel, type LoadedModel, type ClassifierHead, type ImageGeometry, type PreprocessOptions } from './models/load.js';
export { MoEDecoder, type MoEDecoderConfig, type MoEFamily, type RoutingHook } from './models/moe-decoder.js';
export { fromHF, toHF } from './models/moe-decoder-hf.js';
export { ExpertTokenCounter, expertTokenCountsOf, setExpertTokenCounts, type ExpertTokenCounts } from './models/expert-token-counts.js';
export { RareExperts, DEFAULT_RARE_THRESHOLD, type RareTally } from './infer/rare-experts.js';
export { loadLM, type LoadedLM, type LoadLMOptions } from './models/load-lm.js';
export { LOAD_DTYPES, type LoadDType, type Weight } from './models/moe-decoder-weights.js';
export { KVCache, type KVCacheOptions } from './nn/kv-cache.js';
export * as hf from './formats/hf/index.js';
export { loadTokenizer, type LoadedTokenizer, type ChatMessage, type StreamDecoder } from './formats/hf/tokenizer.js';
export { byteLevelTokenizerJson, byteLevelTokenizerConfig } from './formats/hf/byte-tokenizer.js';
export { Sampler, type SamplerOptions } from './infer/sampler.js';
export { generate, type GenerateOptions, type GenerateResult, type GenerationModel, type RoutingEvent } from './infer/generate.js';
