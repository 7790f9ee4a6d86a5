// Models and their registry.

export * from './registry.js';
export * from './softmoe-classifier.js';
export * from './vit-moe.js';
export * from './mmoe.js';
export * from './lm.js';
export * from './block.js';
export * from './attention-config.js';
