// Expert parallelism for the MoE decoder (src/parallel/decoder-experts.ts): logits of a prefill and
// of KV-cached decode steps at N = 2 and 4 workers match the one-process decoder within 1e-5 of
// the logits' scale (the workers run the expert bank's kernels on transposed stacks, so the
// arithmetic order differs from the decoder's grouped products) and pick the same greedy tokens;
// quantised stacks are refused naming the weight; close() gives the decoder working stacks back;
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

const model = (family: MoEFamily): MoEDecoder => {
  const c = presetConfig(family, 'tiny');
  return fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 5)));
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

function relErr(a: Float32Array[], b: Float32Array[]): number {
  let diff = 0;
  let scale = 0;
  a.forEach((x, i) => x.forEach((v, j) => { diff = Math.max(diff, Math.abs(v - b[i]![j]!)); scale = Math.max(scale, Math.abs(v)); }));
  return diff / scale;
}

for (const family of ['qwen2_moe', 'mixtral'] as MoEFamily[]) {
  test(`decoder experts on N = 2, 4 workers give the one-process logits (within 1e-5) and greedy tokens: ${family}`, async () => {
    const want = decode(model(family));
    for (const N of [2, 4]) {
      const m = model(family);
      const dep = DecoderExpertParallel.attach(m, { workers: N, timeoutMs: 30_000 });
      try {
        const got = decode(m);
        assert.deepEqual(got.tokens, want.tokens, `N=${N}: greedy tokens`);
        const err = relErr(got.logits, want.logits);
        assert.ok(err <= 1e-5, `N=${N}: logits differ by ${err} of their scale`);
        assert.ok(dep.ep.bytes.exchanges > 0 && dep.ep.bytes.crossRank > 0, 'rows went through the workers');
      } finally {
        await dep.close();
      }
      // the blocks have float32 stacks again, and the same results
      assert.deepEqual(decode(m).tokens, want.tokens, `N=${N}: after close`);
    }
  });
}

test('decoder expert parallelism refuses quantised stacks and more workers than experts, naming them', () => {
  const m = model('qwen2_moe');
  const E = presetConfig('qwen2_moe', 'tiny').numExperts;
  assert.throws(() => DecoderExpertParallel.attach(m, { workers: E + 1 }), new RegExp(`${E + 1} workers for a layer of ${E} experts`));
  const block = m.namedModules().find(([, b]) => b instanceof SparseMoeBlock)![1] as SparseMoeBlock;
  block.setExperts({ type: 'q8_0' } as unknown as SparseMoeBlock['w1'], block.w3, block.w2);
  assert.throws(() => DecoderExpertParallel.attach(m, { workers: 2 }), /expert-parallel: layers\.0\.moe\.w1 is quantised \(q8_0\); the workers run float32 expert stacks only/);
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

test('moe generate --parallel-experts 2: the same greedy ids as one process, and the process exits (workers closed); bad values refused', () => {
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
    const bad = run(['--parallel-experts', '0']);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /generate: --parallel-experts 0: expected a positive integer/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
