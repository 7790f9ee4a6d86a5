// Native kernels take typed arrays over a SharedArrayBuffer (worker threads hand them over: expert
// staging, expert-parallel buffers) and compute what they compute on ordinary arrays, at an offset too.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { kernel, withBackend, availableBackends } from '../src/index.js';
import { nativeInfo } from '../src/backends/native/index.js';

const skip = availableBackends().includes('native') && nativeInfo() ? false : 'native addon not built';

test('native kernels read and write arrays backed by shared memory', { skip }, () => withBackend('native', () => {
  const m = 3, k = 5, n = 4;
  const shared = (len: number, offset: number): Float32Array => new Float32Array(new SharedArrayBuffer(4 * (len + offset)), 4 * offset, len);
  const a = shared(m * k, 2), b = shared(k * n, 1), c = shared(m * n, 3);
  a.forEach((_, i) => { a[i] = (i % 7) - 3; });
  b.forEach((_, i) => { b[i] = (i % 5) * 0.5 - 1; });
  kernel('matmul')(a, b, c, 1, m, n, k, false, false, false, false, false);
  const want = new Float32Array(m * n);
  kernel('matmul')(Float32Array.from(a), Float32Array.from(b), want, 1, m, n, k, false, false, false, false, false);
  assert.deepEqual(Array.from(c), Array.from(want));
  assert.ok(want.some((v) => v !== 0));
  // a grouped product with int32 group sizes in shared memory as well
  const sizes = new Int32Array(new SharedArrayBuffer(8));
  sizes[0] = 1; sizes[1] = 2;
  const w = shared(2 * k * n, 0);
  w.forEach((_, i) => { w[i] = ((i * 3) % 11) / 11; });
  const out = shared(m * n, 5);
  kernel('groupedMatmul')(a, w, sizes, out, k, n, false);
  const outPlain = new Float32Array(m * n);
  kernel('groupedMatmul')(Float32Array.from(a), Float32Array.from(w), Int32Array.from(sizes), outPlain, k, n, false);
  assert.deepEqual(Array.from(out), Array.from(outPlain));
}));
