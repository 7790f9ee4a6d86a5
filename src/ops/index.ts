// Public ops. Importing this module also wires gradient accumulation into autograd.

import '../backends/defaults.js';
import { setGradAccumulator } from '../tensor/autograd.js';
import { add } from './elementwise.js';
import { Tensor } from '../tensor/tensor.js';

export * from './create.js';
export * from './elementwise.js';
export * from './matmul.js';
export * from './expert-mlp.js';
export * from './reduce.js';
export * from './shape.js';
export * from './rows.js';
export * from './topk.js';
export * from './argmax.js';
export * from './norm.js';
export * from './loss.js';
export * from './dropout.js';

setGradAccumulator((a, b) => add(a, b), (a) => new Tensor(a.data.slice(), a.shape));
