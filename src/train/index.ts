// Training: optimizers, schedules, checkpoints, the training loop and its progress display.

export * from './optim.js';
export * from './schedule.js';
export * from '../models/checkpoint.js';
export * from './progress.js';
export * from './trainer.js';
export * from './divergence.js';
