// Inverted dropout with a mask from the seeded generator, so every backend drops the same units.

import { Tensor } from '../tensor/tensor.js';
import { defaultRng, type Rng } from '../tensor/rng.js';
import { allocArray } from '../tensor/dtype.js';
import { mul } from './elementwise.js';

export interface DropoutOptions {
  training?: boolean;
  rng?: Rng;
}

/** Zeroes each element with probability p and scales the rest by 1/(1-p); identity in eval. */
export function dropout(x: Tensor, p: number, opts: DropoutOptions = {}): Tensor {
  if (!(p >= 0 && p <= 1)) throw new Error(`dropout: p must be in [0, 1], got ${p}`);
  if (!(opts.training ?? true) || p === 0) return x;
  const rng = opts.rng ?? defaultRng();
  const mask = allocArray(x.dtype, x.size);
  const keep = p === 1 ? 0 : 1 / (1 - p);
  for (let i = 0; i < mask.length; i++) mask[i] = rng.next() >= p ? keep : 0;
  return mul(x, new Tensor(mask, x.shape));
}
