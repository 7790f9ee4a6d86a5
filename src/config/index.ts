// Typed configuration: schemas and the run configuration of `moe train`.

export * from './schema.js';
export * from './run.js';
