// Generation: the byte LM's KV-cached decoding against its full-window forward, and the generic
// loop (prefill, cached decode, EOS, limits, empty prompts, routing, timing) on a fake decoder
// with the MoEDecoder interface and on MODEL's tiny preset when it is there.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor } from '../src/index.js';
import { ByteLM, generate as generateBytes, type LMConfig } from '../src/models/lm.js';
import { forwardCached, newByteLMCache } from '../src/models/lm-kv.js';
import { generate, type GenerationModel, type RoutingEvent, type RoutingHook } from '../src/infer/generate.js';
import { argmax } from '../src/infer/sampler.js';
import { loadTokenizer } from '../src/formats/hf/tokenizer.js';
import { loadLM } from '../src/models/load-lm.js';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import type { KVCache } from '../src/nn/kv-cache.js';
import { activeBytesPerToken, benchDecode } from '../bench/decode.js';
import { assertClose } from './helpers.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BYTE_CONFIGS: Array<[string, Partial<LMConfig>]> = [
  ['rope + rms + top-2 moe', { dModel: 16, layers: 2, heads: 2, maxSeqLen: 24, numExperts: 4, k: 2, dFF: 12 }],
  ['learned + layer norm + tied + moe every 2', { dModel: 12, layers: 2, heads: 3, maxSeqLen: 20, positions: 'learned', norm: 'layer', tieEmbeddings: true, moeEvery: 2, numExperts: 3, k: 1, dFF: 8 }],
  ['dense swiglu', { dModel: 8, layers: 1, heads: 1, maxSeqLen: 16, ffn: 'dense', activation: 'swiglu', dFF: 8 }],
  ['hash router', { dModel: 8, layers: 2, heads: 2, maxSeqLen: 16, numExperts: 4, k: 1, dFF: 8, router: { type: 'hash' } }],
];

function randomBytes(rng: Rng, n: number): Int32Array {
  return Int32Array.from({ length: n }, () => rng.int(256));
}

test('byte LM KV cache: prefill + one byte at a time gives the full forward logits (T = 1 .. maxSeqLen)', () => {
  for (const [name, cfg] of BYTE_CONFIGS) {
    const model = new ByteLM(cfg, 3);
    model.eval();
    const L = model.config.maxSeqLen;
    const ids = randomBytes(new Rng(5), L);
    const full = model.forward(new Tensor(ids, [1, L])).logits; // [1, L, 256]
    for (const prefill of [1, 5, L]) {
      const cache = newByteLMCache(model);
      const rows: number[] = [...forwardCached(model, ids.subarray(0, prefill), cache).data];
      for (let t = prefill; t < L; t++) rows.push(...forwardCached(model, ids.subarray(t, t + 1), cache).data);
      assert.equal(cache.length, L);
      assertClose(rows, full.data, 1e-4, 1e-5, `${name}, prefill ${prefill}`);
    }
    assert.throws(() => forwardCached(model, Int32Array.of(1), (() => { const c = newByteLMCache(model); forwardCached(model, ids, c); return c; })()), /exceed the cache's maxLen/);
  }
});

test('byte LM generate: the cached path gives the same bytes as the window re-run, within and past maxSeqLen', () => {
  for (const [name, cfg] of BYTE_CONFIGS) {
    const model = new ByteLM(cfg, 7);
    const prompt = Uint8Array.from(randomBytes(new Rng(1), 4));
    const L = model.config.maxSeqLen;
    for (const opts of [{ maxNewTokens: L - 4 }, { maxNewTokens: L + 6, temperature: 1, topK: 20, seed: 9 }]) {
      const cached = generateBytes(model, prompt, opts);
      const plain = generateBytes(model, prompt, { ...opts, useCache: false });
      assert.deepEqual([...cached], [...plain], `${name} ${JSON.stringify(opts)}`);
    }
    // a prompt longer than maxSeqLen takes the window path throughout
    const long = Uint8Array.from(randomBytes(new Rng(2), L + 3));
    assert.deepEqual([...generateBytes(model, long, { maxNewTokens: 3 })], [...generateBytes(model, long, { maxNewTokens: 3, useCache: false })]);
  }
});

test('byte LM cache: bad input is a clear error', () => {
  const model = new ByteLM(BYTE_CONFIGS[0]![1], 1);
  const cache = newByteLMCache(model);
  assert.throws(() => forwardCached(model, new Int32Array(0), cache), /no tokens/);
  assert.throws(() => forwardCached(model, Int32Array.of(300), cache), /id 300 at 0 is not a byte/);
  assert.throws(() => newByteLMCache(model, 1000), /exceeds the model's maxSeqLen/);
  const other = new ByteLM({ ...BYTE_CONFIGS[0]![1], layers: 3 }, 1);
  assert.throws(() => forwardCached(other, Int32Array.of(1), cache), /cache is for 2 layers/);
});

// ---- the generic loop on a fake decoder -----------------------------------------------------

/** Keeps the ids it was fed; the next id is a hash of everything so far (so a wrong cache shows). */
class FakeCache {
  readonly ids: number[] = [];
  constructor(readonly maxLen: number) {}
  get length(): number { return this.ids.length; }
}

function nextOf(history: readonly number[], V: number): number {
  let h = 17;
  for (const id of history) h = (h * 31 + id + 1) % 1000003;
  return h % V;
}

class FakeDecoder implements GenerationModel<FakeCache> {
  readonly calls: number[] = [];
  onRouting: RoutingHook | undefined;
  constructor(readonly config: { vocabSize: number; maxPositionEmbeddings: number }, readonly k = 2, readonly layers = 2) {}
  newCache(maxLen: number): FakeCache { return new FakeCache(maxLen); }
  forward(ids: Int32Array, cache: FakeCache): Tensor {
    const V = this.config.vocabSize;
    if (cache.length + ids.length > cache.maxLen) throw new Error('fake: cache full');
    this.calls.push(ids.length);
    const T = ids.length;
    const logits = new Float32Array(T * V);
    for (let t = 0; t < T; t++) {
      cache.ids.push(ids[t]!);
      logits[t * V + nextOf(cache.ids, V)] = 10; // a clear arg-max, the rest 0
    }
    for (let l = 0; l < this.layers; l++) {
      const e = Int32Array.from({ length: T * this.k }, (_, i) => (ids[Math.floor(i / this.k)]! + i + l) % 4);
      this.onRouting?.(l, e, new Float32Array(T * this.k).fill(1 / this.k));
    }
    return new Tensor(logits, [T, V]);
  }
}

function reference(prompt: number[], n: number, V: number, eos: number[] = []): number[] {
  const h = [...prompt];
  const out: number[] = [];
  while (out.length < n) {
    const id = nextOf(h, V);
    out.push(id);
    h.push(id);
    if (eos.includes(id)) break;
  }
  return out;
}

test('generate: one prefill forward, then one token per forward; greedy ids follow the model', () => {
  const model = new FakeDecoder({ vocabSize: 50, maxPositionEmbeddings: 64 });
  const seen: Array<[number, number]> = [];
  const r = generate(model, [3, 4, 5], { maxNewTokens: 10 }, (id, i) => seen.push([id, i]));
  assert.deepEqual([...r.ids], reference([3, 4, 5], 10, 50));
  assert.deepEqual(model.calls, [3, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual(seen, [...r.ids].map((id, i) => [id, i]));
  assert.equal(r.stopReason, 'max-tokens');
  assert.deepEqual([...r.promptIds], [3, 4, 5]);
  assert.ok(r.prefillTokensPerSec > 0 && r.decodeTokensPerSec! > 0);
  // one new token: no decode step to time
  const one = generate(new FakeDecoder({ vocabSize: 50, maxPositionEmbeddings: 64 }), [1], { maxNewTokens: 1 });
  assert.equal(one.ids.length, 1);
  assert.equal(one.decodeTokensPerSec, null);
  assert.equal(generate(model, [1], { maxNewTokens: 0 }).ids.length, 0);
});

test('generate: stops at an EOS id (kept), seeded sampling is reproducible', () => {
  const V = 50;
  const free = reference([7], 30, V);
  const eos = free[4]!;
  const firstEos = free.indexOf(eos);
  const r = generate(new FakeDecoder({ vocabSize: V, maxPositionEmbeddings: 64 }), [7], { maxNewTokens: 30, eosIds: [eos, 49] });
  assert.equal(r.stopReason, 'eos');
  assert.deepEqual([...r.ids], free.slice(0, firstEos + 1));
  const sample = (seed: number) => [...generate(new FakeDecoder({ vocabSize: V, maxPositionEmbeddings: 64 }), [7], { maxNewTokens: 20, sampler: { temperature: 5, seed } }).ids];
  assert.deepEqual(sample(1), sample(1));
  assert.notDeepEqual(sample(1), sample(2));
});

test('generate: empty prompt starts from BOS or is refused; long prompts are refused or cut; the context ends generation', () => {
  const cfg = { vocabSize: 50, maxPositionEmbeddings: 16 };
  const r = generate(new FakeDecoder(cfg), [], { maxNewTokens: 3, bosId: 1 });
  assert.deepEqual([...r.promptIds], [1]);
  assert.deepEqual([...r.ids], reference([1], 3, 50));
  assert.throws(() => generate(new FakeDecoder(cfg), [], { maxNewTokens: 3 }), /prompt is empty and the tokenizer has no BOS/);
  const long = Array.from({ length: 20 }, (_, i) => i);
  assert.throws(() => generate(new FakeDecoder(cfg), long, { maxNewTokens: 3 }), /prompt has 20 tokens, more than the context of 16/);
  const warnings: string[] = [];
  const cut = generate(new FakeDecoder(cfg), long, { maxNewTokens: 4, truncate: 'left', onWarning: (m) => warnings.push(m) });
  assert.deepEqual([...cut.promptIds], long.slice(8));
  assert.deepEqual([...cut.ids], reference(long.slice(8), 4, 50));
  assert.match(warnings[0]!, /cut to its last 12/);
  // 14 prompt tokens in a context of 16: positions for 2 more fed tokens, so 3 new ones
  const ctx = generate(new FakeDecoder(cfg), long.slice(0, 14), { maxNewTokens: 10, onWarning: (m) => warnings.push(m) });
  assert.equal(ctx.stopReason, 'context');
  assert.equal(ctx.ids.length, 3);
  assert.match(warnings[1]!, /leaves room for 3 new tokens, not 10/);
  assert.throws(() => generate(new FakeDecoder(cfg), [60], { maxNewTokens: 1 }), /prompt id 60 at position 0 is outside the vocabulary \[0, 50\)/);
  assert.throws(() => generate(new FakeDecoder(cfg), [1], { maxNewTokens: 1, eosIds: [50] }), /eos id 50/);
  assert.throws(() => generate(new FakeDecoder(cfg), [1], { maxNewTokens: -1 }), /maxNewTokens/);
  assert.throws(() => generate(new FakeDecoder(cfg), [1], { maxNewTokens: 1, maxContext: 17 }), /exceeds the model's maxPositionEmbeddings = 16/);
});

test('generate: routing events carry the positions of each forward; the model hook is restored', () => {
  const model = new FakeDecoder({ vocabSize: 50, maxPositionEmbeddings: 64 });
  const before: RoutingHook = () => {};
  model.onRouting = before;
  const events: RoutingEvent[] = [];
  const r = generate(model, [3, 4, 5], { maxNewTokens: 3, onRouting: (e) => events.push(e) });
  assert.equal(model.onRouting, before);
  assert.deepEqual(events.map((e) => [e.start, e.layer, e.expertIndices.length]), [[0, 0, 6], [0, 1, 6], [3, 0, 2], [3, 1, 2], [4, 0, 2], [4, 1, 2]]);
  assert.equal(events[2]!.expertIndices[0], (r.ids[0]! + 0 + 0) % 4);
});

// ---- end to end on the tiny preset (moe create), through the library and the CLI -------------

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The JSON a successful `moe ... --json` prints; a failed run fails here with its stderr, not later as a JSON parse error. */
function cliJson<T>(args: string[]): T {
  const r = cli(args);
  assert.equal(r.status, 0, `moe ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

test('tiny OLMoE and Qwen2-MoE: cached greedy generation equals arg-max of the full forward; routing per MoE layer; CLI agrees', async () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-gen-'));
  try {
    for (const family of ['olmoe', 'qwen2_moe'] as const) {
      const dir = join(root, family);
      createRandomHFDir({ family, preset: 'tiny', out: dir, seed: 1 });
      const lm = await loadLM(dir);
      const tok = loadTokenizer(lm.tokenizerJson, lm.tokenizerConfig);
      const prompt = [...tok.encode('Héllo 🤖')];
      const events: RoutingEvent[] = [];
      const r = generate<KVCache>(lm.model, prompt, { maxNewTokens: 6, onRouting: (e) => events.push(e) });
      assert.equal(r.ids.length, 6);
      // reference: no cache, the whole sequence each step
      const seq = [...prompt];
      const V = lm.model.config.vocabSize;
      for (let i = 0; i < 6; i++) {
        const logits = lm.model.forward(Int32Array.from(seq), null).data as Float32Array;
        const next = argmax(logits, (seq.length - 1) * V, V);
        assert.equal(r.ids[i], next, `${family}: token ${i}`);
        seq.push(next);
      }
      const moeLayers = lm.model.layers.filter((l) => l.moe).length;
      assert.ok(moeLayers > 0);
      assert.equal(events.length, 6 * moeLayers); // prefill + 5 decode forwards
      assert.deepEqual([...new Set(events.map((e) => e.start))], [0, prompt.length, prompt.length + 1, prompt.length + 2, prompt.length + 3, prompt.length + 4]);
      assert.equal(events[0]!.expertIndices.length, prompt.length * lm.model.config.topK);
      // the CLI prints the same ids and their text
      const out = cli(['generate', '--model', dir, '--prompt', 'Héllo 🤖', '--max-new-tokens', '6', '--json']);
      assert.equal(out.status, 0, out.stderr);
      const j = JSON.parse(out.stdout) as { ids: number[]; text: string; prefillTokensPerSec: number; decodeTokensPerSec: number };
      assert.deepEqual(j.ids, [...r.ids]);
      assert.equal(j.text, tok.decode(r.ids, { skipSpecialTokens: true }));
      assert.ok(j.prefillTokensPerSec > 0 && j.decodeTokensPerSec > 0);
    }
    const dir = join(root, 'olmoe');
    const ids = cli(['generate', '--model', dir, '--prompt-ids', '72,105', '--max-new-tokens', '3', '--temperature', '0.9', '--top-p', '0.9', '--seed', '4', '--json', '--show-routing']);
    assert.equal(ids.status, 0, ids.stderr);
    const j = JSON.parse(ids.stdout) as { ids: number[]; routing: Array<{ position: number; layers: Array<{ experts: number[] }> }> };
    assert.equal(j.ids.length, 3);
    assert.deepEqual(j.routing.map((r) => r.position), [0, 1, 2, 3]);
    const seeded = (seed: string) => cliJson<{ ids: number[] }>(['generate', '--model', dir, '--prompt-ids', '72,105', '--max-new-tokens', '8', '--temperature', '2', '--seed', seed, '--json']).ids;
    assert.deepEqual(seeded('4'), seeded('4'));
    assert.notDeepEqual(seeded('4'), seeded('5'));
    // the same model as a GGUF file (moe convert) generates the same ids, with the tokenizer from its metadata
    const gguf = join(root, 'tiny.gguf');
    const conv = cli(['convert', dir, gguf, '--format', 'gguf']);
    assert.equal(conv.status, 0, conv.stderr);
    const fromDir = cliJson<{ ids: number[] }>(['generate', '--model', dir, '--prompt', 'Hi', '--max-new-tokens', '5', '--json']);
    const fromGGUF = cliJson<{ ids: number[] }>(['generate', '--model', gguf, '--prompt', 'Hi', '--max-new-tokens', '5', '--json']);
    assert.deepEqual(fromGGUF.ids, fromDir.ids);
    // an empty --prompt-ids starts from the tokenizer's BOS
    const empty = cli(['generate', '--model', dir, '--prompt-ids', '', '--max-new-tokens', '2', '--json', '--show-routing']);
    assert.equal(empty.status, 0, empty.stderr);
    assert.deepEqual((JSON.parse(empty.stdout) as { routing: Array<{ position: number }> }).routing.map((r) => r.position), [0, 1]);
    // streamed text mode: the text on stdout, timing on stderr
    const text = cli(['generate', '--model', dir, '--prompt', 'abc', '--max-new-tokens', '4']);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stderr, /prefill 3 tokens at [\d.]+ tokens\/s; decode 3 tokens at [\d.]+ tokens\/s; stop: max-tokens/);
    // bad input
    const bad = (args: string[], re: RegExp) => {
      const r = cli(['generate', ...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, re);
    };
    bad(['--prompt', 'x'], /--model DIR\|FILE.gguf is required/);
    bad(['--model', dir], /exactly one of --prompt TEXT and --prompt-ids/);
    bad(['--model', dir, '--prompt', 'x', '--prompt-ids', '1'], /exactly one of/);
    bad(['--model', dir, '--prompt-ids', '1,x'], /item 1 'x' is not a non-negative integer/);
    bad(['--model', dir, '--prompt-ids', '1', '--chat'], /--chat needs --prompt TEXT/);
    bad(['--model', dir, '--prompt-ids', '9999'], /prompt id 9999 at position 0 is outside the vocabulary/);
    bad(['--model', dir, '--prompt', 'x', '--top-p', '0'], /--top-p 0: expected a number in \(0, 1\]/);
    bad(['--model', dir, '--prompt', 'xyz', '--max-context', '2'], /prompt has 3 tokens, more than the context of 2/);
    bad(['--model', join(root, 'nope'), '--prompt', 'x'], /no such file or directory/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('bench decode: active bytes per token = all weights less the unused experts and the embedding matrix but one row', async () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-bytes-'));
  try {
    for (const family of ['olmoe', 'mixtral'] as const) {
      createRandomHFDir({ family, preset: 'tiny', out: join(root, family) });
      const m = (await loadLM(join(root, family))).model;
      const c = m.config;
      const b = activeBytesPerToken(m);
      const all = m.numParameters() * 4;
      const moeLayers = m.layers.filter((l) => l.moe).length;
      const expertBytes = moeLayers * 3 * c.numExperts * c.hiddenSize * c.moeIntermediateSize * 4;
      const embed = c.vocabSize * c.hiddenSize * 4;
      const expected = all - (expertBytes * (c.numExperts - c.topK)) / c.numExperts - (c.tieWordEmbeddings ? 0 : embed - c.hiddenSize * 4);
      assert.equal(b.allWeights, all);
      assert.ok(Math.abs(b.total - expected) < 1e-6, `${family}: ${b.total} vs ${expected}`);
      assert.equal(b.lmHead, embed);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('bench decode: speeds and bandwidth are medians of the rounds, each round reported', async () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-bdec-'));
  try {
    createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: join(root, 'm') });
    const m = (await loadLM(join(root, 'm'))).model;
    // a stand-in probe (the real one reads 1.5 GiB per round): 10, 30, 20 GB/s in turn
    let i = 0;
    const probe = () => ({ readGBs: 1, copyGBs: 1, bufferBytes: 1, threadedReadGBs: [10, 30, 20][i++]! });
    const r = benchDecode(m, { promptTokens: 4, newTokens: 3, rounds: 3, probe });
    const rs = r.details.rounds;
    assert.equal(rs.length, 3);
    const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[1]!;
    assert.equal(r.decodeTokensPerSec, med(rs.map((x) => x.decodeTokensPerSec)));
    assert.equal(r.prefillTokensPerSec, med(rs.map((x) => x.prefillTokensPerSec)));
    assert.deepEqual(rs.map((x) => x.bandwidthGBs), [10, 30, 20]);
    assert.equal(r.bandwidthGBs, 20);
    assert.ok(Math.abs(r.floorTokensPerSec - (r.bandwidthGBs * 1e9) / r.activeBytesPerToken) < 1e-6 * r.floorTokensPerSec);
    assert.throws(() => benchDecode(m, { rounds: 0 }), /--rounds must be a positive integer, got 0/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
