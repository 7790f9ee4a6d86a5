// Expert parallelism for the MoE decoder (src/parallel/decoder-experts.ts): logits of a prefill and
// of KV-cached decode steps at N = 2 and 4 workers equal the one-process decoder's bit for bit, for
// float32, Q8_0 and Q4_0 expert stacks (the workers run the decoder's own expertSwiGLU on their
// experts' rows), with the fused decode kernel on or off in the one-process run; stacks the workers
// cannot hold are refused naming the weight; close() gives the decoder working stacks back;
// `moe serve --parallel-experts 2` answers a greedy completion with the one-process server's text
// and exits 0 on SIGTERM; `moe generate --parallel-experts 2` gives the one-process ids and exits.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { noGrad } from '../src/tensor/autograd.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { createRandomHFDir, presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { MoEDecoder, SparseMoeBlock, decoderConfigToHF, type MoEFamily } from '../src/models/moe-decoder.js';
import { DecoderExpertParallel } from '../src/parallel/decoder-experts.js';
import { QuantWeight } from '../src/infer/quant/index.js';
import { Tensor } from '../src/tensor/tensor.js';
import type { LoadDType } from '../src/models/moe-decoder-weights.js';

const model = (family: MoEFamily, dtype: LoadDType = 'f32'): MoEDecoder => {
  const c = presetConfig(family, 'tiny');
  return fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 5)), 'config.json', { dtype });
};

/** Prefill of 6 tokens then 4 greedy decode steps: every step's logits and the chosen tokens. */
function decode(m: MoEDecoder): { logits: Float32Array[]; tokens: number[] } {
  return noGrad(() => {
    const cache = m.newCache(16);
    const logits: Float32Array[] = [];
    const tokens: number[] = [];
    let ids = Int32Array.of(3, 17, 42, 9, 100, 7);
    for (let s = 0; s < 5; s++) {
      const out = m.forward(ids, cache);
      const V = out.shape[1]!;
      const last = (out.data as Float32Array).slice((out.shape[0]! - 1) * V);
      logits.push(out.data as Float32Array);
      let best = 0;
      for (let v = 1; v < V; v++) if (last[v]! > last[best]!) best = v;
      tokens.push(best);
      ids = Int32Array.of(best);
    }
    return { logits, tokens };
  });
}

/** Largest |a - b| over the largest |b|. */
function relErr(a: Float32Array[], b: Float32Array[]): number {
  let diff = 0;
  let scale = 0;
  b.forEach((x, i) => x.forEach((v, j) => { diff = Math.max(diff, Math.abs(a[i]![j]! - v)); scale = Math.max(scale, Math.abs(v)); }));
  return diff / scale;
}

for (const family of ['qwen2_moe', 'mixtral'] as MoEFamily[]) {
  for (const dtype of ['f32', 'q8_0', 'q4_0'] as LoadDType[]) {
    test(`decoder experts on N = 2, 4 workers give the one-process logits bit for bit and its greedy tokens: ${family}, ${dtype}`, async () => {
      // the workers run the MoE blocks' grouped path (expertSwiGLU), not the fused decode kernel: the one-process reference does too
      const grouped = (m: MoEDecoder): MoEDecoder => {
        for (const [, b] of m.namedModules()) if (b instanceof SparseMoeBlock) b.fusedDecode = false;
        return m;
      };
      const want = decode(grouped(model(family, dtype)));
      const fused = decode(model(family, dtype));
      assert.deepEqual(fused.tokens, want.tokens, 'one process: fused and grouped experts pick the same tokens');
      const fusedErr = relErr(fused.logits, want.logits);
      assert.ok(fusedErr <= 1e-6, `one process: fused and grouped experts differ by ${fusedErr} of the logits' scale`);
      for (const N of [2, 4]) {
        const m = model(family, dtype);
        const dep = DecoderExpertParallel.attach(m, { workers: N, timeoutMs: 30_000 });
        try {
          const block = m.namedModules().find(([, b]) => b instanceof SparseMoeBlock)![1] as SparseMoeBlock;
          assert.ok(!(block.w1 instanceof Tensor) && !(block.w1 instanceof QuantWeight), 'the block no longer holds its stacks');
          const got = decode(m);
          assert.deepEqual(got.tokens, want.tokens, `N=${N}: greedy tokens`);
          assert.deepEqual(got.logits, want.logits, `N=${N}: logits bit for bit`);
          assert.ok(dep.ep.bytes.exchanges > 0 && dep.ep.bytes.crossRank > 0, 'rows went through the workers');
        } finally {
          await dep.close();
        }
        // the blocks have their stacks again, in their format, and the same results
        const block = m.namedModules().find(([, b]) => b instanceof SparseMoeBlock)![1] as SparseMoeBlock;
        assert.equal(block.w1 instanceof QuantWeight ? block.w1.type : 'f32', dtype, 'format after close');
        assert.deepEqual(decode(grouped(m)), want, `N=${N}: after close`);
      }
    });
  }
}

test('decoder expert parallelism refuses stacks it cannot hold and more workers than experts, naming them', async () => {
  const m = model('qwen2_moe');
  const E = presetConfig('qwen2_moe', 'tiny').numExperts;
  assert.throws(() => DecoderExpertParallel.attach(m, { workers: E + 1 }), new RegExp(`${E + 1} workers for a layer of ${E} experts`));
  const block = m.namedModules().find(([, b]) => b instanceof SparseMoeBlock)![1] as SparseMoeBlock;
  const [w1, w3, w2] = [block.w1, block.w3, block.w2];
  block.setExperts({ type: 'q8_0' } as unknown as SparseMoeBlock['w1'], w3, w2);
  assert.throws(() => DecoderExpertParallel.attach(m, { workers: 2 }), /expert-parallel: layers\.0\.moe\.w1 is not an expert stack \(object\); the workers need the stacks in memory/);
  const q = model('qwen2_moe', 'q8_0');
  const qb = q.namedModules().find(([, b]) => b instanceof SparseMoeBlock)![1] as SparseMoeBlock;
  block.setExperts(qb.w1, w3, w2);
  assert.throws(() => DecoderExpertParallel.attach(m, { workers: 2 }), /expert-parallel: layers\.0\.moe's expert stacks mix formats \(w1 q8_0, w3 f32, w2 f32\)/);
  block.setExperts(new Tensor(Float64Array.from((w1 as Tensor).data), [...(w1 as Tensor).shape]), w3, w2);
  assert.throws(() => DecoderExpertParallel.attach(m, { workers: 2 }), /expert-parallel: layers\.0\.moe\.w1 is float64; the workers run float32 or Q8_0\/Q4_0 expert stacks/);
  block.setExperts(w2, w3, w2);
  assert.throws(() => DecoderExpertParallel.attach(m, { workers: 2 }), /expert-parallel: layers\.0\.moe\.w3 has shape \[.*\], expected \[.*\] \(gate and up \[E, h, d\], down \[E, d, h\]\)/);
  // gradients are refused: the stacks serve inference only
  block.setExperts(w1, w3, w2);
  const dep = DecoderExpertParallel.attach(m, { workers: 2, timeoutMs: 30_000 });
  try {
    const d = presetConfig('qwen2_moe', 'tiny').hiddenSize;
    const x = new Tensor(new Float32Array(3 * d).fill(0.5), [3, d]).requireGrad();
    assert.throws(() => block.forward(x), /expert-parallel: layer 0 runs a decoder's stored expert stacks, for inference only; run it under noGrad/);
    // what reads a stack's bytes directly (toHF, training) is told where the experts are
    assert.throws(() => (block.w1 as { data: unknown }).data, /layer 0: the experts are held by the expert-parallel workers \(.*\); their stacked weights are not in memory here/);
  } finally {
    await dep.close();
  }
});

/** Starts `moe serve` on a free port, sends one greedy completion, stops it with SIGTERM: the text and the exit code. */
async function serveOnce(dir: string, extra: string[]): Promise<{ text: string; code: number | null; err: string }> {
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const child = spawn(process.execPath, [main, 'serve', '--model', dir, '--port', '0', '--ctx', '64', '--max-batch', '2', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    const t0 = Date.now();
    while (!/http:\/\/127\.0\.0\.1:\d+/.test(out) && child.exitCode === null && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 50));
    const url = /http:\/\/127\.0\.0\.1:\d+/.exec(out)?.[0];
    assert.ok(url, `no URL printed: ${out} ${err}`);
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'hello', max_tokens: 12, temperature: 0 }) });
    assert.equal(res.status, 200, err);
    const body = await res.json() as { choices: Array<{ text: string }> };
    child.kill('SIGTERM');
    return { text: body.choices[0]!.text, code: await exited, err };
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

test('moe serve --parallel-experts 2: the same greedy completion as one process; exits 0 on SIGTERM; bad values refused', async () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-ep-serve-'));
  try {
    const dir = join(root, 'tiny');
    createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: dir, seed: 5 });
    const one = await serveOnce(dir, []);
    const two = await serveOnce(dir, ['--parallel-experts', '2']);
    assert.equal(one.code, 0, one.err);
    assert.equal(two.code, 0, two.err);
    assert.ok(one.text.length > 0);
    assert.equal(two.text, one.text);
    assert.match(two.err, /moe serve: the routed experts of \d+ MoE layers run on 2 worker threads/);
    const bad = await serveOnce(dir, ['--parallel-experts', '0']).catch((e: Error) => e);
    assert.match(String(bad), /serve: --parallel-experts 0: expected an integer >= 1/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('moe generate --parallel-experts 2 (f32 and q4_0): the same greedy ids as one process, and the process exits (workers closed); bad values refused', () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-ep-generate-'));
  try {
    const dir = join(root, 'tiny');
    createRandomHFDir({ family: 'mixtral', preset: 'tiny', out: dir, seed: 6 });
    const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const run = (extra: string[]) => spawnSync(process.execPath, [main, 'generate', '--model', dir, '--prompt-ids', '256,72,101', '--max-new-tokens', '8', '--json', ...extra],
      { encoding: 'utf8', timeout: 120_000 });
    const one = run([]);
    const two = run(['--parallel-experts', '2']);
    assert.equal(one.status, 0, one.stderr);
    assert.equal(two.status, 0, two.stderr);
    const ids = (r: { stdout: string }): number[] => (JSON.parse(r.stdout.trim().split('\n').pop()!) as { ids: number[] }).ids;
    assert.equal(ids(one).length, 8);
    assert.deepEqual(ids(two), ids(one));
    // quantised experts on the workers: the one-process q4_0 ids
    const q = run(['--dtype', 'q4_0']);
    const q2 = run(['--dtype', 'q4_0', '--parallel-experts', '2']);
    assert.equal(q2.status, 0, q2.stderr);
    assert.deepEqual(ids(q2), ids(q));
    const bad = run(['--parallel-experts', '0']);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /generate: --parallel-experts 0: expected a positive integer/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
