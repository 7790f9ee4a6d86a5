// One suite over every backend: each op's forward and gradients against the js reference, and
// the js gradients against float64 central finite differences.

import { describe, test } from 'node:test';
import { Rng, withBackend, type Tensor } from '../src/index.js';
import { OP_CASES } from './op-cases.js';
import { assertClose, backendsUnderTest, cast, checkGradients } from './helpers.js';

/** Forward output and the gradients of sum(out * w) for every differentiable input. */
function run(c: (typeof OP_CASES)[number], inputs: Tensor[], w: Tensor | null): { out: Tensor; grads: Array<Tensor | null> } {
  const xs = inputs.map((x, i) => {
    const y = cast(x, x.dtype);
    y.requiresGrad = c.diff[i]!;
    return y;
  });
  const out = c.fn(xs);
  if (w && out.requiresGrad) {
    // sum(out * w) through the data directly, so the check depends on nothing but the op
    out.backward(w);
  }
  return { out, grads: xs.map((x) => x.grad) };
}

describe('ops: float64 gradients against finite differences (js)', () => {
  for (const [i, c] of OP_CASES.entries()) {
    test(c.name, () => {
      withBackend('js', () => {
        const rng = new Rng(1000 + i);
        checkGradients(c.fn, c.inputs(rng, 'float64'), c.diff, rng, c.name);
      });
    });
  }
});

for (const backend of backendsUnderTest().filter((b) => b !== 'js')) {
  describe(`ops on ${backend}: forward and gradients against js`, () => {
    for (const [i, c] of OP_CASES.entries()) {
      test(c.name, () => {
        const rng = new Rng(2000 + i);
        const inputs = c.inputs(rng, 'float32');
        const ref = withBackend('js', () => run(c, inputs, null));
        const w = cast(ref.out, 'float32');
        rng.fillUniform(w.data as Float32Array, -1, 1);
        const expected = withBackend('js', () => run(c, inputs, w));
        const actual = withBackend(backend, () => run(c, inputs, w));
        const rtol = c.rtol ?? 1e-5;
        const atol = c.atol ?? 1e-6;
        assertClose(actual.out, expected.out, rtol, atol, `${c.name}: forward`);
        for (let j = 0; j < inputs.length; j++) {
          const e = expected.grads[j];
          const a = actual.grads[j];
          if (!e) continue;
          if (!a) throw new Error(`${c.name}: input ${j} got no gradient on ${backend}`);
          assertClose(a, e, rtol * 10, atol * 10, `${c.name}: gradient of input ${j}`);
        }
      });
    }
  });
}
