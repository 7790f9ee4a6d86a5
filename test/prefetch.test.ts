// The prefetch hint (Backend.prefetch, the native pool's idle workers reading weights ahead):
// products and a decoder's outputs are unchanged with it, bad arguments are refused by name, and it
// is a no-op on the js backend.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Rng, withBackend } from '../src/index.js';
import { findBackend, prefetchHint } from '../src/kernels/registry.js';

const native = findBackend('native');
const noNative = native === null && 'the native addon is not built here';
const REGISTRY = new URL('../src/kernels/registry.js', import.meta.url).href;
const INDEX = new URL('../src/index.js', import.meta.url).href;

test('prefetch hints between products leave the products bit-identical (queue overflow and replaced queues included)', { skip: noNative }, () => {
  const rng = new Rng(1);
  const m = 3, n = 700, k = 1024;
  const a = new Float32Array(m * k), b = new Float32Array(n * k);
  rng.fillUniform(a, -1, 1);
  rng.fillUniform(b, -1, 1);
  const want = new Float32Array(m * n);
  native!.kernels.matmul!(a, b, want, 1, m, n, k, false, true, false, false, false);
  const big = new Uint8Array(8 << 20);
  for (let i = 0; i < 40; i++) {
    // 40 hints > the 16-region queue: the rest are dropped, never block
    native!.prefetch!(big);
    native!.prefetch!(b.subarray(i, i + 100));
    // replace: the queued hints are dropped first, whatever the workers are reading
    if (i % 7 === 0) native!.prefetch!(big, true);
    const got = new Float32Array(m * n);
    native!.kernels.matmul!(a, b, got, 1, m, n, k, false, true, false, false, false);
    assert.deepEqual(got, want, `round ${i}`);
  }
  native!.prefetch!(new Float32Array(0));
});

test('the native prefetch refuses what is not a typed array, by name; the js backend has no hint', { skip: noNative }, () => {
  assert.throws(() => native!.prefetch!({} as ArrayBufferView), /prefetchIdle: data must be a typed array/);
  withBackend('js', () => prefetchHint(new Float32Array(4))); // nothing to do, nothing thrown
  assert.equal(findBackend('js')!.prefetch, undefined);
});

test('MOE_PREFETCH=0 and the default give the same decoder logits', { skip: noNative }, () => {
  const script = `
    await import(${JSON.stringify(INDEX)});
    const { presetConfig, randomHFTensors } = await import(${JSON.stringify(new URL('../src/models/moe-decoder-create.js', import.meta.url).href)});
    const { fromHF } = await import(${JSON.stringify(new URL('../src/models/moe-decoder-hf.js', import.meta.url).href)});
    const { decoderConfigToHF } = await import(${JSON.stringify(new URL('../src/models/moe-decoder.js', import.meta.url).href)});
    const { MemoryTensorSource } = await import(${JSON.stringify(new URL('../src/formats/tensor-source.js', import.meta.url).href)});
    await import(${JSON.stringify(REGISTRY)});
    const c = presetConfig('olmoe', 'tiny');
    const m = fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 3)));
    const cache = m.newCache(32);
    const out = [];
    m.forward(Int32Array.of(1, 2, 3, 4), cache);
    for (let i = 0; i < 6; i++) out.push(...m.forward(Int32Array.of(i + 5), cache).data.slice(0, 8));
    console.log(JSON.stringify(out));`;
  const run = (env: Record<string, string>): string => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'native', ...env } });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim();
  };
  assert.equal(run({ MOE_PREFETCH: '0' }), run({}));
});
