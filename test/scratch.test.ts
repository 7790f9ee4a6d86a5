// The scratch pool (tensor/scratch.ts): buffers given back are lent again, poisoned under the tests'
// poison, bounded by the limit; and the expert-MLP op that borrows from it never hands a borrowed
// buffer to its caller: results of one call stay intact through later calls, and every result is
// bit-identical with the pool off.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, withBackend } from '../src/index.js';
import { setUninitializedPoison } from '../src/tensor/dtype.js';
import {
  giveScratch, releaseScratch, resetScratchStats, scratchStats, setScratchLimit, setScratchMinBytes, takeScratch,
} from '../src/tensor/scratch.js';
import { expertMLP, setExpertMLPEpilogue, type ExpertMLPActivation } from '../src/ops/expert-mlp.js';
import { backendsUnderTest, randTensor } from './helpers.js';

/** Runs fn with every buffer pooled (no size floor) and a fresh, empty pool. */
function pooled<T>(fn: () => T, limitBytes = 64 << 20): T {
  const prevMin = setScratchMinBytes(0);
  const prevLimit = setScratchLimit(limitBytes);
  releaseScratch();
  resetScratchStats();
  try {
    return fn();
  } finally {
    setScratchMinBytes(prevMin);
    setScratchLimit(prevLimit);
    releaseScratch();
  }
}

test('scratch: a buffer given back is lent again, to takes of its size class only', () => pooled(() => {
  const a = takeScratch('float32', 100);
  assert.equal(a.length, 100);
  a.fill(3);
  giveScratch(a);
  const b = takeScratch('float32', 101); // 100 and 101 round up to the same class
  assert.equal(b.length, 101);
  assert.equal(b.buffer, a.buffer);
  assert.equal(b[0], 3, 'contents are not cleared outside the poison');
  const c = takeScratch('float32', 101); // b is lent out: a second buffer
  assert.notEqual(c.buffer, b.buffer);
  giveScratch(b, c);
  const big = takeScratch('float32', 200); // another class: a new buffer
  assert.notEqual(big.buffer, a.buffer);
  assert.notEqual(big.buffer, c.buffer);
  const d64 = takeScratch('float64', 100); // another dtype: a new buffer
  assert.ok(d64 instanceof Float64Array);
  const s = scratchStats();
  assert.equal(s.taken, 5);
  assert.equal(s.reused, 1);
}));

test('scratch: double gives and foreign arrays are ignored; poison reaches reused buffers; the limit holds', () => pooled(() => {
  const a = takeScratch('float32', 64);
  giveScratch(a, a, new Float32Array(64), null, undefined);
  assert.equal(scratchStats().heldBytes, a.byteLength, 'held once');
  setUninitializedPoison(true);
  try {
    const b = takeScratch('float32', 64);
    assert.equal(b.buffer, a.buffer);
    assert.ok(b.every(Number.isNaN), 'a reused buffer is poisoned like a fresh one');
    giveScratch(b);
  } finally {
    setUninitializedPoison(false);
  }
  setScratchLimit(0);
  assert.equal(scratchStats().heldBytes, 0, 'lowering the limit drops what it no longer allows');
  const c = takeScratch('float32', 64);
  giveScratch(c);
  assert.equal(scratchStats().heldBytes, 0, 'nothing held at limit 0');
  assert.notEqual(takeScratch('float32', 64).buffer, c.buffer);
  assert.throws(() => setScratchLimit(-1), /bytes must be >= 0/);
}));

/** Output and every gradient of one expertMLP forward+backward on inputs from seed. */
function runMLP(seed: number, act: ExpertMLPActivation, routed: boolean): Float32Array[] {
  const rng = new Rng(seed);
  const E = 3, d = 5, h = 7, N = 6;
  const x = randTensor(rng, [N, d]).requireGrad();
  const w = {
    w1: randTensor(rng, [E, d, h]).requireGrad(), w2: randTensor(rng, [E, h, d]).requireGrad(),
    w3: act === 'swiglu' ? randTensor(rng, [E, d, h]).requireGrad() : null,
    b1: randTensor(rng, [E, h]).requireGrad(), b2: randTensor(rng, [E, d]).requireGrad(),
  };
  const sizes = routed ? [4, 0, 5] : [2, 0, 4];
  const rows = sizes[0]! + sizes[2]!;
  const gates = randTensor(rng, [rows], 'float32', 0.1, 1).requireGrad();
  const rowExpert = Int32Array.from(sizes.flatMap((s, e) => Array<number>(s).fill(e)));
  const y = expertMLP(x, Int32Array.from(sizes), act, w, {
    ...(routed ? { rowIndex: Int32Array.from([0, 2, 4, 1, 5, 1, 3, 0, 2]) } : {}), gates, rowExpert,
  });
  y.backward(randTensor(rng, [...y.shape]));
  const all: Tensor[] = [y, x, w.w1, w.w2, ...(w.w3 ? [w.w3] : []), w.b1, w.b2, gates].map((t, i) => (i === 0 ? t : t.grad!));
  // the arrays themselves, not copies: a later call that wrote into one would show
  return all.map((t) => t.data as Float32Array);
}

for (const backend of backendsUnderTest()) {
  test(`${backend}: expertMLP results stay intact through later calls and match the pool off bit for bit`, () => withBackend(backend, () => {
    for (const [act, epilogue] of [['gelu', true], ['swiglu', true], ['gelu', false], ['swiglu', false]] as const) {
      for (const routed of [true, false]) {
        const what = `${act}, ${routed ? 'routed rows' : 'rows in place'}, epilogue ${epilogue ? 'in the GEMM' : 'as separate passes'}`;
        const prevEpilogue = setExpertMLPEpilogue(epilogue);
        try {
          const off = pooled(() => [runMLP(1, act, routed), runMLP(2, act, routed)].map((r) => r.map((a) => Float32Array.from(a))), 0);
          pooled(() => {
            const first = runMLP(1, act, routed);
            const firstCopy = first.map((a) => Float32Array.from(a));
            const second = runMLP(2, act, routed);
            assert.ok(scratchStats().reused > 0, `${what}: the second call reused the first's transients (else this test checks nothing)`);
            first.forEach((a, i) => assert.deepEqual(a, firstCopy[i], `${what}: result ${i} of the first call changed during the second`));
            firstCopy.forEach((a, i) => assert.deepEqual(a, off[0]![i], `${what}: result ${i} differs from the pool off`));
            second.forEach((a, i) => assert.deepEqual(a, off[1]![i], `${what}: second call, result ${i} differs from the pool off`));
            setUninitializedPoison(true);
            try {
              const poisoned = runMLP(2, act, routed);
              poisoned.forEach((a, i) => assert.deepEqual(a, off[1]![i], `${what}: result ${i} differs with reused buffers poisoned`));
            } finally {
              setUninitializedPoison(false);
            }
          });
        } finally {
          setExpertMLPEpilogue(prevEpilogue);
        }
      }
    }
  }));
}

test('expertMLP releases its pre-activations after the first backward: a second one needs { retainGraph: true } on the first', () => pooled(() => {
  for (const act of ['gelu', 'swiglu'] as const) {
    const rng = new Rng(3);
    const E = 2, d = 4, h = 6, N = 5;
    const x = randTensor(rng, [N, d]).requireGrad();
    const w = { w1: randTensor(rng, [E, d, h]).requireGrad(), w2: randTensor(rng, [E, h, d]).requireGrad(), w3: act === 'swiglu' ? randTensor(rng, [E, d, h]).requireGrad() : null };
    const g = randTensor(rng, [N, d]);
    const run = (): Tensor => expertMLP(x, Int32Array.from([2, 3]), act, w);
    run().backward(g);
    const once = Float32Array.from(x.grad!.data as Float32Array);
    x.zeroGrad();
    // released: refused, naming the option, instead of reading a buffer lent out again
    const y = run();
    y.backward(g);
    assert.throws(() => y.backward(g), /expertMLP: backward through this graph a second time.*retainGraph: true/);
    // retained: the second backward adds the same gradient again
    x.zeroGrad();
    const z = run();
    z.backward(g, { retainGraph: true });
    takeScratch('float32', 1000).fill(7); // whatever the pool lends meanwhile cannot be z's pre-activation
    z.backward(g);
    assert.deepEqual(Float32Array.from(x.grad!.data as Float32Array), once.map((v) => 2 * v), `${act}: two backwards through a retained graph`);
    assert.throws(() => z.backward(g), /retainGraph/, `${act}: the second backward (without the option) released it`);
  }
}));
