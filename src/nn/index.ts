// Neural-network building blocks.

export { Module } from './module.js';
export { Linear, type LinearOptions } from './linear.js';
export { uniform, normal } from './init.js';
