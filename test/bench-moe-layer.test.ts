// The environment `moe bench moe-layer --compare-torch` runs PyTorch in: its best here, and the
// user's own OpenMP and OpenBLAS choices kept.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { torchEnv } from '../bench/moe-layer.js';

test('torch runs with the pool\'s threads, SkylakeX OpenBLAS on AVX-512 and a short OpenMP spin', () => {
  assert.deepEqual(torchEnv(2, {}, true), { OMP_NUM_THREADS: '2', OPENBLAS_CORETYPE: 'SkylakeX', GOMP_SPINCOUNT: '10000' });
  assert.deepEqual(torchEnv(3, {}, false), { OMP_NUM_THREADS: '3', GOMP_SPINCOUNT: '10000' });
});

test('a user\'s OpenBLAS core type for torch, OMP_WAIT_POLICY and GOMP_SPINCOUNT are kept', () => {
  assert.deepEqual(torchEnv(2, { MOE_TORCH_OPENBLAS_CORETYPE: 'Zen' }, true), { OMP_NUM_THREADS: '2', OPENBLAS_CORETYPE: 'Zen', GOMP_SPINCOUNT: '10000' });
  // set but empty: the environment's own OPENBLAS_CORETYPE stays
  assert.deepEqual(torchEnv(2, { MOE_TORCH_OPENBLAS_CORETYPE: '' }, true), { OMP_NUM_THREADS: '2', GOMP_SPINCOUNT: '10000' });
  assert.deepEqual(torchEnv(2, { OMP_WAIT_POLICY: 'active' }, true), { OMP_NUM_THREADS: '2', OPENBLAS_CORETYPE: 'SkylakeX' });
  assert.deepEqual(torchEnv(2, { GOMP_SPINCOUNT: '7' }, false), { OMP_NUM_THREADS: '2', GOMP_SPINCOUNT: '7' });
});
