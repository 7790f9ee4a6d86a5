// MOE_NATIVE_THREADS: validation, what `moe info` reports, and the OS threads the native backend really starts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MAX_NATIVE_THREADS, nativeThreadsSetting, nativeInfo } from '../src/backends/native/index.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const OPS = new URL('../src/ops/index.js', import.meta.url).href;
const REGISTRY = new URL('../src/kernels/registry.js', import.meta.url).href;
const NATIVE = new URL('../src/backends/native/index.js', import.meta.url).href;

/** The child must not inherit the test runner's own setting. */
function envWith(threads: string | undefined): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['MOE_NATIVE_THREADS'];
  delete env['OPENBLAS_NUM_THREADS'];
  if (threads !== undefined) env['MOE_NATIVE_THREADS'] = threads;
  return env;
}

function moe(threads: string | undefined, ...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: envWith(threads) });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function node(threads: string | undefined, script: string): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: envWith(threads) });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const native = (() => {
  try {
    return nativeInfo();
  } catch {
    return null; // the runner's own MOE_NATIVE_THREADS is invalid: the spawned tests below still run
  }
})();
const noNative = native === null ? 'the native addon is not built here' : false;

test('nativeThreadsSetting accepts whole numbers in [1, 1024] and treats unset or empty as the default', () => {
  assert.equal(nativeThreadsSetting(undefined), null);
  assert.equal(nativeThreadsSetting(''), null);
  assert.equal(nativeThreadsSetting('  '), null);
  assert.equal(nativeThreadsSetting('1'), 1);
  assert.equal(nativeThreadsSetting(' 8 '), 8);
  assert.equal(nativeThreadsSetting(String(MAX_NATIVE_THREADS)), MAX_NATIVE_THREADS);
  for (const bad of ['0', '-1', '1.5', '2.0', 'abc', '4x', '1e2', '0x10', String(MAX_NATIVE_THREADS + 1), '99999999999999999999', 'NaN', 'Infinity']) {
    assert.throws(() => nativeThreadsSetting(bad), (e: Error) => e.message.includes('MOE_NATIVE_THREADS') && e.message.includes(`'${bad}'`), bad);
  }
});

test('moe info with MOE_NATIVE_THREADS=1: one pool thread and one OpenBLAS thread in force', { skip: noNative }, () => {
  const r = moe('1', 'info', '--json');
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out) as { backend: string; native: { threads: number; threadsFrom: string; blas: string; blasThreads: number; blasConfig: string; simd: string } };
  assert.equal(info.native.threads, 1);
  assert.equal(info.native.threadsFrom, 'MOE_NATIVE_THREADS');
  assert.equal(info.native.blasThreads, 1);
  assert.ok(info.native.blasConfig.length > 0);
  assert.match(info.native.simd, /^(avx512|avx2|sse|neon|baseline|scalar)/i);
  const text = moe('1', 'info');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /native pool threads: 1 \(MOE_NATIVE_THREADS=1\)/);
  if (info.native.blas === 'openblas') assert.match(text.out, /OpenBLAS threads: 1 \(openblas_get_num_threads\)/);
  assert.match(text.out, /vector ISA: /);
});

test('MOE_NATIVE_THREADS=2 is in force for both the pool and OpenBLAS, overriding OPENBLAS_NUM_THREADS', { skip: noNative }, () => {
  const env = { ...envWith('2'), OPENBLAS_NUM_THREADS: '7' };
  const r = spawnSync(process.execPath, [MAIN, 'info', '--json'], { encoding: 'utf8', env });
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { native: { threads: number; blas: string; blasThreads: number } };
  assert.equal(info.native.threads, 2);
  assert.equal(info.native.blasThreads, 2);
});

test('invalid MOE_NATIVE_THREADS makes moe exit non-zero naming the variable and the value', () => {
  for (const bad of ['0', '-3', '1.5', 'abc', '1025']) {
    const r = moe(bad, 'info');
    assert.notEqual(r.code, 0, `MOE_NATIVE_THREADS=${bad} was accepted: ${r.out}`);
    assert.match(r.err, /MOE_NATIVE_THREADS/, bad);
    assert.ok(r.err.includes(`'${bad}'`), `${bad}: ${r.err}`);
    assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
  }
});

test('the library refuses an invalid MOE_NATIVE_THREADS on every use, not only the first', { skip: noNative }, () => {
  const r = node('abc', `
    const ops = await import(${JSON.stringify(OPS)});
    const errors = [];
    for (let i = 0; i < 2; i++) {
      try { ops.add(ops.ones([2]), ops.ones([2])); errors.push('none'); } catch (e) { errors.push(e.message); }
    }
    console.log(JSON.stringify(errors));`);
  assert.equal(r.code, 0, r.err);
  const errors = JSON.parse(r.out) as string[];
  assert.equal(errors.length, 2);
  for (const e of errors) assert.match(e, /MOE_NATIVE_THREADS must be .*got 'abc'/);
});

// Counts the process's OS threads (Linux /proc) before the addon loads and after kernels that use
// the pool (a large elementwise op) and OpenBLAS (a 256^3 product) ran: the difference is every
// thread moe-ts started.
const threadDelta = (threads: string) => node(threads, `
  import { readdirSync } from 'node:fs';
  const ops = await import(${JSON.stringify(OPS)});
  const { setBackend } = await import(${JSON.stringify(REGISTRY)});
  const { nativeInfo } = await import(${JSON.stringify(NATIVE)});
  const before = readdirSync('/proc/self/task').length;
  setBackend('native');
  const a = ops.ones([256, 256]);
  for (let i = 0; i < 3; i++) { ops.matmul(a, a); ops.exp(ops.ones([1 << 20])); }
  const after = readdirSync('/proc/self/task').length;
  console.log(JSON.stringify({ started: after - before, blas: nativeInfo().blas, gemm: nativeInfo().gemm }));`);

test('MOE_NATIVE_THREADS=1 starts no thread at all; =2 one worker per pool (ours, OpenBLAS, OpenMP under oneDNN)', { skip: noNative || (process.platform !== 'linux' && 'counts threads through /proc') }, () => {
  const one = threadDelta('1');
  assert.equal(one.code, 0, one.err);
  assert.deepEqual((JSON.parse(one.out) as { started: number }).started, 0, 'threads started with MOE_NATIVE_THREADS=1');
  const two = threadDelta('2');
  assert.equal(two.code, 0, two.err);
  const r = JSON.parse(two.out) as { started: number; blas: string; gemm: string };
  // the pool's worker, OpenBLAS's (started when it loads, used or not), and OpenMP's when oneDNN runs the GEMMs
  const expected = 1 + (r.blas === 'openblas' ? 1 : 0) + (r.gemm === 'onednn' ? 1 : 0);
  assert.equal(r.started, expected, `threads started with MOE_NATIVE_THREADS=2 (blas ${r.blas}, gemm ${r.gemm})`);
});

test('moe --help documents MOE_NATIVE_THREADS', () => {
  const r = moe(undefined, '--help');
  assert.equal(r.code, 0);
  assert.match(r.out, /MOE_NATIVE_THREADS=N/);
});
