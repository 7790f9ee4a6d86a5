// Every GEMM library the native addon was built with (oneDNN, OpenBLAS, the portable GEMM), each
// forced through the gemmWith hook and through MOE_GEMM, against the js reference; oneDNN's
// primitive cache past its capacity; what `moe info` reports about the GEMM library.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/index.js';
import { findBackend } from '../src/kernels/registry.js';
import { nativeGemmLibraries, nativeGemmWith, nativeInfo } from '../src/backends/native/index.js';
import { assertClose } from './helpers.js';

const js = findBackend('js')!;
const gemm = nativeGemmWith();
const libs = nativeGemmLibraries();
const noNative = gemm === null && 'the native addon is not built here';
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const OPS = new URL('../src/ops/index.js', import.meta.url).href;
const REGISTRY = new URL('../src/kernels/registry.js', import.meta.url).href;
const NATIVE = new URL('../src/backends/native/index.js', import.meta.url).href;

function rand(rng: Rng, n: number): Float32Array {
  const x = new Float32Array(n);
  rng.fillUniform(x, -1, 1);
  return x;
}

// m = 1-5 (the hook runs the library itself even where sgemm() would take the few-row kernel), odd
// sizes for vector and block tails, k = 0, one shape past the libraries' blocking (k and n > 256),
// one wider than the portable GEMM's column block (n > 3072) with few rows (threads split columns).
const SHAPES: ReadonlyArray<[number, number, number]> = [
  [1, 1, 1], [2, 17, 3], [4, 9, 33], [5, 7, 3], [5, 64, 0], [7, 1, 13], [13, 31, 0], [33, 65, 17], [67, 129, 257], [130, 300, 520],
  [9, 3100, 300],
];

function check(lib: string, m: number, n: number, k: number, rng: Rng): void {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      for (const acc of [false, true]) {
        const a = rand(rng, m * k);
        const b = rand(rng, k * n);
        const init = rand(rng, m * n);
        const want = init.slice();
        js.kernels.matmul!(a, b, want, 1, m, n, k, transA, transB, false, false, acc);
        // without accumulate the output's old contents (NaN here) must not leak into the result
        const got = acc ? init.slice() : new Float32Array(m * n).fill(Number.NaN);
        gemm!(lib as 'onednn', a, b, got, m, n, k, transA, transB, acc);
        assertClose(got, want, 1e-4, 1e-4 * Math.sqrt(k + 1), `${lib} m=${m} n=${n} k=${k} transA=${transA} transB=${transB} accumulate=${acc}`);
      }
    }
  }
}

test('the build reports its GEMM libraries: the portable GEMM always, and the chosen one among them', { skip: noNative }, () => {
  const info = nativeInfo()!;
  assert.ok(libs.includes('fallback'));
  assert.ok(libs.includes(info.gemm), `${info.gemm} is chosen but not compiled in (${libs.join(', ')})`);
  assert.equal(libs.includes('onednn'), info.onednn !== null);
  if (info.onednn) {
    assert.match(info.onednn.version, /^\d+\.\d+\.\d+$/);
    assert.ok(info.onednn.isa.length > 0 && info.onednn.isa !== 'unknown', info.onednn.isa);
    assert.ok(info.onednn.threads >= 1);
    assert.equal(info.onednn.failures, 0, info.onednn.lastError);
  }
});

for (const lib of ['onednn', 'openblas', 'fallback']) {
  test(`${lib}: every transpose, accumulate, k = 0, 1-5 rows and odd sizes match the js reference`, { skip: noNative || (!libs.includes(lib as 'onednn') && `this build has no ${lib}`) }, () => {
    const rng = new Rng(lib.length);
    for (const [m, n, k] of SHAPES) check(lib, m, n, k, rng);
  });
}

test('gemmWith refuses an unknown library naming the accepted ones', { skip: noNative }, () => {
  const x = new Float32Array(1);
  assert.throws(() => gemm!('mkl' as 'onednn', x, x, x, 1, 1, 1, false, false, false), /onednn, openblas or fallback, got 'mkl'/);
});

test('oneDNN past its primitive cache (256 shapes): entries are evicted, results stay right', { skip: noNative || (!libs.includes('onednn') && 'this build has no oneDNN') }, () => {
  const rng = new Rng(5);
  const before = nativeInfo()!.onednn!.createdPrimitives;
  // 300 distinct shapes (distinct columns: primitives leave the rows to run time), then the first
  // ones again (evicted by then: created anew)
  const shapes = Array.from({ length: 300 }, (_, i) => [5 + (i % 20), 3 + i, 7] as const);
  for (const [m, n, k] of [...shapes, ...shapes.slice(0, 10)]) {
    const a = rand(rng, m * k);
    const b = rand(rng, k * n);
    const want = new Float32Array(m * n);
    js.kernels.matmul!(a, b, want, 1, m, n, k, false, false, false, false, false);
    const got = new Float32Array(m * n);
    gemm!('onednn', a, b, got, m, n, k, false, false, false);
    assertClose(got, want, 1e-5, 1e-5, `m=${m} n=${n} k=${k}`);
  }
  const after = nativeInfo()!.onednn!;
  assert.ok(after.cachedPrimitives <= 256, `cache holds ${after.cachedPrimitives}`);
  assert.ok(after.createdPrimitives - before >= 310, `created ${after.createdPrimitives - before} primitives for 310 calls past the capacity`);
  assert.equal(after.failures, 0, after.lastError);
});

// An MoE layer's expert groups change size every step: oneDNN's primitives take the rows at run
// time (one primitive for every row count; creating one per count cost 0.45-0.6 ms per product),
// and a per-row post-op that oneDNN refuses with run-time rows falls back to the exact rows.
test('oneDNN: one plain-layout primitive serves every row count, results match js; MOE_ONEDNN_STATIC_ROWS=1 keys each', { skip: noNative || (!libs.includes('onednn') && 'this build has no oneDNN') }, () => {
  const script = `
    const { nativeGemmWith, nativeInfo } = await import(${JSON.stringify(NATIVE)});
    const { findBackend } = await import(${JSON.stringify(REGISTRY)});
    await import(${JSON.stringify(OPS)});
    const gemm = nativeGemmWith(), js = findBackend('js').kernels;
    let seed = 7, worst = 0;
    const r = (n) => { const t = new Float32Array(n); for (let i = 0; i < n; i++) { seed = (seed * 16807) % 2147483647; t[i] = seed / 2147483647 - 0.5; } return t; };
    const k = 33, n = 45, before = nativeInfo().onednn.createdPrimitives;
    for (const m of [17, 18, 40, 97, 300, 301]) {
      for (const transB of [false, true]) {
        const a = r(m * k), b = r(k * n), got = new Float32Array(m * n).fill(NaN), want = new Float32Array(m * n);
        gemm('onednn', a, b, got, m, n, k, false, transB, false);
        js.matmul(a, b, want, 1, m, n, k, false, transB, false, false, false);
        for (let i = 0; i < got.length; i++) worst = Math.max(worst, Number.isNaN(got[i]) ? Infinity : Math.abs(got[i] - want[i]));
      }
    }
    const d = nativeInfo().onednn;
    console.log(JSON.stringify({ worst, created: d.createdPrimitives - before, failures: d.failures }));`;
  // plain layout: one primitive for the six row counts; B transposed keeps a primitive per count
  for (const [env, created] of [[{}, 7], [{ MOE_ONEDNN_STATIC_ROWS: '1' }, 12]] as const) {
    const res = child({ MOE_GEMM: 'onednn', ...env }, script);
    assert.equal(res.code, 0, res.err);
    const out = JSON.parse(res.out) as { worst: number; created: number; failures: number };
    assert.ok(out.worst < 1e-5, `largest difference ${out.worst}`);
    assert.equal(out.failures, 0);
    assert.equal(out.created, created, `${JSON.stringify(env)}: ${out.created} primitives for 6 row counts x 2 layouts`);
  }
});

/** Runs a script in a child with MOE_GEMM (and MOE_NATIVE_THREADS) set; the runner's own settings are not inherited. */
function child(env: Record<string, string>, script: string): { code: number; out: string; err: string } {
  const e = { ...process.env };
  delete e['MOE_GEMM'];
  delete e['MOE_NATIVE_THREADS'];
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...e, ...env } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

// matmul (plain, batched, transposed, accumulating), the grouped GEMM, its weight gradient and its
// epilogue (bias, GELU / SiLU, gate scaling: oneDNN post-ops when forced to oneDNN) through the ops, with more than 4 rows per product so that sgemm() hands them to the forced library.
const OPS_SCRIPT = `
  const ops = await import(${JSON.stringify(OPS)});
  const { withBackend, findBackend } = await import(${JSON.stringify(REGISTRY)});
  const { nativeInfo } = await import(${JSON.stringify(NATIVE)});
  let seed = 1;
  const r = (shape) => { const t = ops.zeros(shape); for (let i = 0; i < t.data.length; i++) { seed = (seed * 16807) % 2147483647; t.data[i] = seed / 2147483647 - 0.5; } return t; };
  const a = r([37, 53]), b = r([53, 41]), bt = r([41, 53]), at = r([53, 37]), ba = r([3, 37, 53]), bb = r([3, 53, 41]);
  const x = r([29, 45]), w = r([3, 45, 19]), sizes = new Int32Array([11, 0, 18]), dy = r([29, 19]);
  const run = () => [ops.matmul(a, b), ops.matmul(a, bt, { transB: true }), ops.matmul(at, b, { transA: true }), ops.matmul(ba, bb),
    ops.groupedMatmul(x, w, sizes)].map((t) => Array.from(t.data));
  const dw = (name) => { const out = new Float32Array(3 * 45 * 19); findBackend(name).kernels.groupedMatmulWeightGrad(x.data, dy.data, sizes, out, 45, 19); return Array.from(out); };
  // the grouped epilogue without a kept pre-activation: oneDNN's post-ops when it runs the products
  const bias = r([3, 19]), gates = r([29]);
  const ep = (name, act) => { const out = new Float32Array(29 * 19); findBackend(name).kernels.groupedMatmulEpilogue(x.data, w.data, sizes, out, 45, 19, false, bias.data, act, gates.data, null); return Array.from(out); };
  const nat = [...withBackend('native', run), dw('native'), ep('native', 'gelu'), ep('native', 'silu'), ep('native', null)];
  const ref = [...withBackend('js', run), dw('js'), ep('js', 'gelu'), ep('js', 'silu'), ep('js', null)];
  let worst = 0;
  nat.forEach((o, i) => o.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - ref[i][j]) / (1 + Math.abs(ref[i][j]))); }));
  const info = nativeInfo();
  console.log(JSON.stringify({ worst, gemm: info.gemm, forced: info.gemmForced, onednn: info.onednn }));`;

for (const lib of ['onednn', 'openblas', 'fallback']) {
  test(`MOE_GEMM=${lib} runs the ops' matrix products on ${lib}, matching the js backend`, { skip: noNative || (!libs.includes(lib as 'onednn') && `this build has no ${lib}`) }, () => {
    const r = child({ MOE_GEMM: lib }, OPS_SCRIPT);
    assert.equal(r.code, 0, r.err);
    const res = JSON.parse(r.out) as { worst: number; gemm: string; forced: boolean; onednn: { createdPrimitives: number; failures: number } | null };
    assert.equal(res.gemm, lib);
    assert.equal(res.forced, true);
    assert.ok(res.worst < 1e-5, `largest relative difference ${res.worst}`);
    // oneDNN really ran (primitives were made) exactly when it was forced
    if (res.onednn) assert.equal(res.onednn.createdPrimitives > 0, lib === 'onednn', `${res.onednn.createdPrimitives} oneDNN primitives`);
  });
}

// The grouped epilogue's oneDNN post-ops run on groups above 256 rows only (smaller ones take the
// portable GEMM), which OPS_SCRIPT's groups are not. oneDNN 2.6 answers some post-op chains (a per-row
// binary: the gates' rowScale) with its reference kernel only, ~200x below its JIT ones: on AVX-512
// the MoE layer's second expert GEMM ran at ~2 GFLOP/s (E = 8 forward 83 tokens/s against 33739)
// until gemm_dnnl.cc declined reference kernels. With ONEDNN_VERBOSE=1 oneDNN prints the
// implementation of every product it runs: none may be a reference one, some must carry post-ops.
test('MOE_GEMM=onednn: the grouped epilogue fuses post-ops on large groups, never on oneDNN\'s reference kernel, and matches js', { skip: noNative || (!libs.includes('onednn') && 'this build has no oneDNN') }, () => {
  const r = child({ MOE_GEMM: 'onednn', ONEDNN_VERBOSE: '1' }, `
    const { findBackend } = await import(${JSON.stringify(REGISTRY)});
    const { nativeInfo, nativeGemmEpilogue } = await import(${JSON.stringify(NATIVE)});
    await import(${JSON.stringify(OPS)});
    let seed = 3;
    const r = (n) => { const t = new Float32Array(n); for (let i = 0; i < n; i++) { seed = (seed * 16807) % 2147483647; t[i] = seed / 2147483647 - 0.5; } return t; };
    const sizes = new Int32Array([300, 0, 270]), rows = 570, k = 40, n = 24;
    const x = r(rows * k), w = r(3 * k * n), wt = r(3 * n * k), bias = r(3 * n), gates = r(rows);
    let worst = 0;
    for (const [act, b, g, transW] of [['gelu', bias, null, false], [null, bias, gates, false], ['gelu', bias, gates, false], ['silu', null, gates, true], ['relu', bias, gates, true], [null, null, gates, false]]) {
      const out = (name) => { const o = new Float32Array(rows * n).fill(NaN); findBackend(name).kernels.groupedMatmulEpilogue(x, transW ? wt : w, sizes, o, k, n, transW, b, act, g, null); return o; };
      const got = out('native'), want = out('js');
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Number.isNaN(got[i]) ? Infinity : Math.abs(got[i] - want[i]) / (1 + Math.abs(want[i])));
    }
    // the standalone fused epilogue with the gates: oneDNN offers only its reference kernel for a
    // per-row post-op, which must be declined (the product then runs unfused)
    const epi = nativeGemmEpilogue(), m = 300, g2 = r(m);
    const fused = new Float32Array(m * n).fill(NaN), plain = new Float32Array(m * n).fill(NaN);
    epi(true, x.subarray(0, m * k), w.subarray(0, k * n), bias.subarray(0, n), 2, null, g2, fused, m, n, k, false);
    epi(false, x.subarray(0, m * k), w.subarray(0, k * n), bias.subarray(0, n), 2, null, g2, plain, m, n, k, false);
    for (let i = 0; i < fused.length; i++) worst = Math.max(worst, Number.isNaN(fused[i]) ? Infinity : Math.abs(fused[i] - plain[i]) / (1 + Math.abs(plain[i])));
    const d = nativeInfo().onednn;
    console.log(JSON.stringify({ worst, declined: d.declined, lastDeclined: d.lastDeclined, failures: d.failures }));`);
  assert.equal(r.code, 0, r.err);
  const lines = r.out.split('\n');
  const res = JSON.parse(lines.filter((l) => l.startsWith('{')).pop()!) as { worst: number; declined: number; lastDeclined: string; failures: number };
  assert.ok(res.worst < 1e-5, `largest relative difference ${res.worst}`);
  assert.equal(res.failures, 0);
  const execs = lines.filter((l) => /^(onednn|dnnl)_verbose,exec,.*matmul/.test(l));
  assert.ok(execs.length > 0, `oneDNN printed no products under ONEDNN_VERBOSE=1:\n${r.out.slice(0, 400)}`);
  const slow = execs.filter((l) => /,ref:/.test(l));
  assert.deepEqual(slow, [], `${slow.length} products ran on oneDNN's reference kernel`);
  assert.ok(execs.some((l) => /post-ops:.*eltwise/.test(l)), `no product fused its activation:\n${execs.join('\n')}`);
});

// libgomp (oneDNN's threads) spins ~3 ms after each product by default, taking a core from the
// pool's pass that follows: the backend sets GOMP_SPINCOUNT before the addon loads libgomp, unless
// the user set it or OMP_WAIT_POLICY.
test('loading the addon sets GOMP_SPINCOUNT=10000 unless the user chose an OpenMP wait policy', { skip: noNative }, () => {
  const script = `
    const { nativeInfo } = await import(${JSON.stringify(NATIVE)});
    if (!nativeInfo()) throw new Error('the addon did not load');
    console.log(JSON.stringify({ spin: process.env.GOMP_SPINCOUNT ?? null }));`;
  const env = (extra: Record<string, string>): Record<string, string> => {
    const e = { ...process.env } as Record<string, string>;
    delete e['GOMP_SPINCOUNT'];
    delete e['OMP_WAIT_POLICY'];
    return { ...e, ...extra };
  };
  for (const [extra, want] of [[{}, '10000'], [{ GOMP_SPINCOUNT: '5' }, '5'], [{ OMP_WAIT_POLICY: 'active' }, null]] as const) {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: env(extra) });
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { spin: string | null }).spin, want, JSON.stringify(extra));
  }
});

test('a bad MOE_GEMM is refused naming the variable, every time', { skip: noNative }, () => {
  const r = child({ MOE_GEMM: 'mkl' }, `
    const ops = await import(${JSON.stringify(OPS)});
    const { setBackend } = await import(${JSON.stringify(REGISTRY)});
    const errors = [];
    for (let i = 0; i < 2; i++) { try { setBackend('native'); ops.matmul(ops.ones([5, 5]), ops.ones([5, 5])); errors.push('none'); } catch (e) { errors.push(e.message); } }
    console.log(JSON.stringify(errors));`);
  assert.equal(r.code, 0, r.err);
  const errors = JSON.parse(r.out) as string[];
  assert.equal(errors.length, 2);
  for (const e of errors) assert.match(e, /MOE_GEMM=mkl: .*onednn, openblas or fallback/);
});

test('MOE_NATIVE_THREADS=1 reaches oneDNN (its OpenMP threads), and moe info names the GEMM library', { skip: noNative || (!libs.includes('onednn') && 'this build has no oneDNN') }, () => {
  const e = { ...process.env };
  delete e['MOE_GEMM'];
  const r = spawnSync(process.execPath, [MAIN, 'info', '--json'], { encoding: 'utf8', env: { ...e, MOE_NATIVE_THREADS: '1' } });
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { native: { gemm: string; onednn: { threads: number; version: string; isa: string } } };
  assert.equal(info.native.onednn.threads, 1);
  const text = spawnSync(process.execPath, [MAIN, 'info'], { encoding: 'utf8', env: { ...e, MOE_NATIVE_THREADS: '1' } });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`GEMM library: ${info.native.gemm}`));
  assert.match(text.stdout, new RegExp(`oneDNN ${info.native.onednn.version.replace(/\./g, '\\.')}.*${info.native.onednn.isa}`));
});

// oneDNN's GEMM with a signal handler running on the same thread corrupted the heap (V8's profiler
// samples with SIGPROF: 5-6 of 6-8 runs of this loop crashed under node --cpu-prof before the addon
// blocked signals around oneDNN's calls). A child process profiled at a 50 us interval runs 300
// grouped products of 32 rows per group through oneDNN and must exit cleanly with the right sums.
test('oneDNN products under a profiler\'s signal storm: no heap corruption, correct results', { skip: !libs?.includes('onednn') && 'this build has no oneDNN' }, () => {
  const script = `
    const { findBackend } = await import(${JSON.stringify(REGISTRY)});
    await import(${JSON.stringify(OPS)});
    const nat = findBackend('native');
    const R = 32, G = 4, k = 512, n = 128;
    const x = new Float32Array(R * G * k).fill(0.5), w = new Float32Array(G * n * k).fill(0.25), out = new Float32Array(R * G * n);
    for (let i = 0; i < 300; i++) nat.kernels.groupedMatmul(x, w, new Int32Array(G).fill(R), out, k, n, true);
    if (!out.every((v) => v === 0.125 * k)) throw new Error('wrong sums');
    console.log('done');`;
  const dir = fileURLToPath(new URL('../../.cpu-prof-tmp/', import.meta.url));
  const r = spawnSync(process.execPath, ['--cpu-prof', '--cpu-prof-interval', '50', '--cpu-prof-dir', dir, '--input-type=module', '-e', script], {
    env: { ...process.env, MOE_GEMM: 'onednn' }, encoding: 'utf8',
  });
  spawnSync('rm', ['-rf', dir]);
  assert.equal(r.status, 0, `exit ${r.status} signal ${r.signal}: ${r.stderr.slice(-400)}`);
  assert.match(r.stdout, /done/);
});

test('the default GEMM library follows the CPU class: oneDNN on AVX-512 (or without OpenBLAS), else OpenBLAS', { skip: noNative }, () => {
  const e = { ...process.env };
  delete e['MOE_GEMM'];
  const r = spawnSync(process.execPath, [MAIN, 'info', '--json'], { encoding: 'utf8', env: e });
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { native: { gemm: string; gemmForced: boolean; simd: string; blas: string } };
  const hasDnnl = libs.includes('onednn');
  const hasBlas = libs.includes('openblas');
  const want = hasDnnl && (!hasBlas || info.native.simd === 'avx512') ? 'onednn' : hasBlas ? 'openblas' : 'fallback';
  assert.equal(info.native.gemmForced, false);
  assert.equal(info.native.gemm, want, `simd ${info.native.simd}, libraries ${libs.join(', ')}`);
});
