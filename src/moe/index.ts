// Mixture-of-Experts: routers, dispatch, expert bank, losses, metrics, layers.

export * from './routers/types.js';
export * from './routers/index.js';
export * from './routers/base.js';
export * from './routers/topk.js';
export * from './routers/noisy.js';
export * from './permute/bins.js';
export * from './permute/permute.js';
export * from './experts/bank.js';
export * from './losses/balance.js';
export * from './metrics.js';
export * from './layer.js';
export { takeFlat, putFlat, logSumExp } from './util.js';
export * from './routers/hash.js';
export * from './routers/expert-choice.js';
export * from './routers/sigmoid-group.js';
export * from './routers/dynamic.js';
export * from './routers/differentiable.js';
export * from './routers/device-limited.js';
export * from './routers/placement.js';
export * from './soft.js';
export * from './select.js';
