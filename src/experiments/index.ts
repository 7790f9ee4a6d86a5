// Reproducible studies of the seed paper (Chung et al. 2024), each writing results.json, results.md and plots.

export {
  runImplicitBias, resolveImplicitBiasOptions, implicitBiasMarkdown, kGrid, DEFAULT_NS,
  type ImplicitBiasOptions, type ImplicitBiasConfig, type ImplicitBiasResult, type AccuracyRecord, type ModelResult, type ImageDataset, type SelectionMethod,
} from './implicit-bias.js';
export {
  runL2Norm, resolveL2NormOptions, l2NormMarkdown, gaussianNormData,
  type L2NormOptions, type L2NormConfig, type L2NormRecord, type L2NormResult,
} from './l2-norm.js';
export {
  runInferenceCost, resolveInferenceCostOptions, inferenceCostMarkdown,
  type InferenceCostOptions, type InferenceCostConfig, type InferenceCostRecord, type InferenceCostResult, type CostSetting,
} from './inference-cost.js';
export { ExperimentOptionError, PartialResults, meanStd } from './common.js';
