// Neural-network building blocks.

export { Module } from './module.js';
export { Linear, type LinearOptions } from './linear.js';
export { uniform, normal } from './init.js';
export { LayerNorm, RMSNorm, type LayerNormOptions, type RMSNormOptions } from './norm.js';
export { Embedding, type EmbeddingOptions } from './embedding.js';
export { ACTIVATIONS, type Activation } from './activations.js';
export { MLP, MLP_ACTIVATIONS, type MLPActivation, type MLPOptions } from './mlp.js';
export { RotaryEmbedding, applyRotary, type RotaryOptions } from './rope.js';
export { MultiHeadAttention, type MultiHeadAttentionOptions } from './attention.js';
export type { FeedForward, SelfAttention, SublayerOutput, CachedProjections } from './sublayers.js';
export { TransformerBlock, type TransformerBlockConfig, type TransformerBlockOutput } from './transformer.js';
