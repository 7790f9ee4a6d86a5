// Parameter initialisation from a seeded generator (PyTorch's defaults where they exist).

import { Tensor } from '../tensor/tensor.js';
import { defaultRng, type Rng } from '../tensor/rng.js';
import type { Shape } from '../tensor/shape.js';

/** U(-bound, bound): PyTorch's Linear default uses bound = 1/sqrt(fanIn). */
export function uniform(shape: Shape, bound: number, rng: Rng = defaultRng()): Tensor {
  const t = Tensor.empty(shape);
  rng.fillUniform(t.data as Float32Array, -bound, bound);
  return t;
}

export function normal(shape: Shape, std: number, rng: Rng = defaultRng()): Tensor {
  const t = Tensor.empty(shape);
  rng.fillNormal(t.data as Float32Array, 0, std);
  return t;
}
