// Scheduler (no HTTP): queue bounds, slot pool, chunked prefill, join/leave, cancel, stops; greedy batching equals one at a time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Scheduler, type BatchEntry, type BatchModel, type SequenceResult, type SubmitRequest } from '../src/serve/scheduler.js';
import { StopMatcher } from '../src/serve/stop.js';
import { EngineLoop } from '../src/serve/engine.js';
import { DecoderBatchModel } from '../src/serve/batch-model.js';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM } from '../src/models/load-lm.js';
import { generate } from '../src/infer/generate.js';
import type { KVCache } from '../src/nn/kv-cache.js';

/**
 * A model whose next token is (sum of every id this slot has seen + 1) mod V: outputs depend on
 * the whole history of a slot, so a slot mix-up, a lost chunk or a stale cache changes them.
 */
class FakeModel implements BatchModel {
  readonly vocabSize = 50;
  readonly history: number[][];
  readonly steps: BatchEntry[][] = [];
  failOnSlot = -1;
  constructor(readonly numSlots: number, readonly contextLength: number) {
    this.history = Array.from({ length: numSlots }, () => []);
  }
  decodeStep(batch: BatchEntry[]): Float32Array[] {
    this.steps.push(batch.map((b) => ({ slot: b.slot, ids: b.ids.slice() })));
    return batch.map(({ slot, ids }) => {
      if (slot === this.failOnSlot) throw new Error('boom');
      const h = this.history[slot]!;
      h.push(...ids);
      assert.ok(h.length <= this.contextLength, 'a slot never holds more than its context');
      const next = (h.reduce((a, b) => a + b, 0) + 1) % this.vocabSize;
      const l = new Float32Array(this.vocabSize);
      l[next] = 1;
      return l;
    });
  }
  resetSlot(slot: number): void { this.history[slot] = []; }
}

/** Expected output of FakeModel for one prompt run alone. */
function fakeAlone(prompt: number[], n: number, V = 50): number[] {
  const h = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const next = (h.reduce((a, b) => a + b, 0) + 1) % V;
    out.push(next);
    h.push(next);
  }
  return out;
}

function run(s: Scheduler, maxSteps = 10_000): number {
  let n = 0;
  while (s.hasWork()) { s.step(); if (++n > maxSteps) throw new Error('scheduler did not finish'); }
  return n;
}

function submitOk(s: Scheduler, req: SubmitRequest) {
  const r = s.submit(req);
  assert.ok(r.ok, `submit refused: ${JSON.stringify(r)}`);
  return r.handle;
}

test('scheduler: concurrent sequences give the outputs each gives alone; slots all free at the end', () => {
  const m = new FakeModel(3, 64);
  const s = new Scheduler(m, { maxQueue: 10, prefillChunk: 4 });
  const prompts = [[1, 2, 3], [7, 7, 7, 7, 7, 7, 7, 7, 7, 7], [4], [9, 8], [3, 3, 3, 3, 3]];
  const results: SequenceResult[] = [];
  prompts.forEach((p, i) => submitOk(s, { promptIds: p, maxTokens: 5 + i, onFinish: (r) => results[i] = r }));
  assert.equal(s.runningCount, 3);
  assert.equal(s.queueDepth, 2);
  run(s);
  prompts.forEach((p, i) => {
    assert.equal(results[i]!.reason, 'length');
    assert.deepEqual(results[i]!.ids, fakeAlone(p, 5 + i), `sequence ${i}`);
    assert.equal(results[i]!.promptTokens, p.length);
  });
  assert.equal(s.freeSlotCount, 3);
  assert.equal(s.runningCount, 0);
  // token-level join/leave: some step ran more sequences than one, and queued ones joined mid-way
  assert.ok(m.steps.some((b) => b.length === 3));
});

test('scheduler: chunked prefill interleaves a long prompt with the decoding of others', () => {
  const m = new FakeModel(2, 200);
  const s = new Scheduler(m, { maxQueue: 4, prefillChunk: 8 });
  let aTokens = 0;
  const results: SequenceResult[] = [];
  submitOk(s, { promptIds: [1, 2], maxTokens: 30, onToken: () => { aTokens++; }, onFinish: (r) => results[0] = r });
  s.step(); // a prefilled, first token out
  const long = Array.from({ length: 50 }, (_, i) => i % 40);
  submitOk(s, { promptIds: long, maxTokens: 3, onFinish: (r) => results[1] = r });
  const before = aTokens;
  const infos = [];
  while (s.hasWork()) infos.push(s.step());
  for (const info of infos) assert.ok(info.prefillTokens <= 8, `a step prefilled ${info.prefillTokens} > chunk 8`);
  const prefillSteps = infos.filter((i) => i.prefillTokens > 0);
  assert.equal(prefillSteps.length, Math.ceil(50 / 8));
  // a decoded a token in every step where the long prompt was prefilled
  for (const i of prefillSteps) assert.equal(i.decodeTokens, 1);
  assert.ok(aTokens - before >= prefillSteps.length);
  assert.deepEqual(results[1]!.ids, fakeAlone(long, 3));
  assert.deepEqual(results[0]!.ids, fakeAlone([1, 2], 30));
});

test('scheduler: the queue is bounded (queue-full with retry-after), and limits name the field', () => {
  const m = new FakeModel(1, 20);
  const s = new Scheduler(m, { maxQueue: 1, retryAfterSec: 3 });
  submitOk(s, { promptIds: [1], maxTokens: 5 });
  submitOk(s, { promptIds: [1], maxTokens: 5 });
  const full = s.submit({ promptIds: [1], maxTokens: 5 });
  assert.equal(full.ok, false);
  assert.ok(!full.ok && full.kind === 'queue-full' && full.retryAfterSec === 3);
  const long = s.submit({ promptIds: new Array(20).fill(1), maxTokens: 1 });
  assert.ok(!long.ok && long.kind === 'invalid' && long.field === 'prompt', JSON.stringify(long));
  const tooMany = s.submit({ promptIds: [1, 2], maxTokens: 19 });
  assert.ok(!tooMany.ok && tooMany.kind === 'invalid' && tooMany.field === 'max_tokens' && /at most 18/.test(tooMany.message), JSON.stringify(tooMany));
  const badId = s.submit({ promptIds: [1, 50], maxTokens: 1 });
  assert.ok(!badId.ok && badId.kind === 'invalid' && badId.field === 'prompt' && /position 1/.test(badId.message));
  const empty = s.submit({ promptIds: [], maxTokens: 1 });
  assert.ok(!empty.ok && empty.kind === 'invalid' && empty.field === 'prompt');
  assert.throws(() => new Scheduler(m, { maxQueue: 1, maxBatch: 2 }), /exceeds the model's 1 KV slots/);
  run(s);
  assert.equal(s.freeSlotCount, 1);
});

test('scheduler: cancel frees the slot at once (running or queued); closed refuses; errors end only the batch', () => {
  const m = new FakeModel(2, 100);
  const s = new Scheduler(m, { maxQueue: 2 });
  const results = new Map<string, SequenceResult>();
  const a = submitOk(s, { promptIds: [1], maxTokens: 50, onFinish: (r) => results.set('a', r) });
  submitOk(s, { promptIds: [2], maxTokens: 3, onFinish: (r) => results.set('b', r) });
  const c = submitOk(s, { promptIds: [3], maxTokens: 3, onFinish: (r) => results.set('c', r) });
  s.step();
  s.step();
  c.cancel(); // queued
  assert.equal(results.get('c')!.reason, 'cancelled');
  assert.equal(s.queueDepth, 0);
  a.cancel(); // running
  assert.equal(results.get('a')!.reason, 'cancelled');
  assert.equal(results.get('a')!.completionTokens, 2);
  assert.equal(s.runningCount, 1);
  assert.equal(s.freeSlotCount, 1);
  a.cancel(); // once only
  run(s);
  assert.equal(results.get('b')!.reason, 'length');
  s.close();
  const closed = s.submit({ promptIds: [1], maxTokens: 1 });
  assert.ok(!closed.ok && closed.kind === 'closed');

  const m2 = new FakeModel(2, 100);
  const s2 = new Scheduler(m2, { maxQueue: 2 });
  const r2: SequenceResult[] = [];
  submitOk(s2, { promptIds: [1], maxTokens: 3, onFinish: (r) => r2.push(r) });
  m2.failOnSlot = 0;
  s2.step();
  assert.equal(r2[0]!.reason, 'error');
  assert.match(r2[0]!.error!, /boom/);
  assert.equal(s2.freeSlotCount, 2);
});

test('scheduler: EOS ends without output; a timeout ends with timeout; cancelAll ends everything', () => {
  const m = new FakeModel(2, 100);
  let now = 0;
  const s = new Scheduler(m, { maxQueue: 4, now: () => now });
  const first = fakeAlone([5], 3);
  const res: SequenceResult[] = [];
  submitOk(s, { promptIds: [5], maxTokens: 10, eosIds: [first[2]!], onFinish: (r) => res.push(r) });
  run(s);
  assert.equal(res[0]!.reason, 'stop');
  assert.deepEqual(res[0]!.stoppedBy, { eosId: first[2] });
  assert.deepEqual(res[0]!.ids, first.slice(0, 2));
  submitOk(s, { promptIds: [5], maxTokens: 50, deadline: 10, onFinish: (r) => res.push(r) });
  s.step();
  now = 11;
  s.step();
  assert.equal(res[1]!.reason, 'timeout');
  submitOk(s, { promptIds: [5], maxTokens: 50, onFinish: (r) => res.push(r) });
  submitOk(s, { promptIds: [6], maxTokens: 50, onFinish: (r) => res.push(r) });
  s.step();
  s.cancelAll('shutdown');
  assert.deepEqual(res.slice(2).map((r) => r.reason), ['shutdown', 'shutdown']);
  assert.equal(s.freeSlotCount, 2);
});

test('stop strings: cut at the first match, held back across pieces, flushed when none matches', () => {
  const a = new StopMatcher(['END', 'xy']);
  const pieces = ['ab', 'cE', 'N', 'Dzz'].map((p) => a.push(p));
  assert.deepEqual(pieces.map((p) => p.emit), ['ab', 'c', '', '']);
  assert.equal(pieces[3]!.stopped, 'END');
  assert.equal(a.text, 'abc');
  const b = new StopMatcher(['END']);
  assert.equal(b.push('aEN').emit, 'a');
  assert.equal(b.flush(), 'EN');
  assert.equal(b.text, 'aEN');
  const c = new StopMatcher([]);
  assert.equal(c.push('abc').emit, 'abc');
  assert.throws(() => new StopMatcher(['']), /non-empty/);
});

test('scheduler over the tiny MoE decoder: greedy under batching (batched forward, and per sequence) and chunked prefill equals generate() one at a time', async () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-serve-sched-'));
  try {
    createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: root, seed: 3 });
    const lm = await loadLM(root);
    const prompts = [[72, 101, 108, 108, 111], Array.from({ length: 23 }, (_, i) => 97 + (i % 26)), [1], [200, 13, 10, 33, 64, 5, 9]];
    const n = 12;
    const alone = prompts.map((p) => Array.from(generate<KVCache>(lm.model, p, { maxNewTokens: n }).ids));
    for (const perSequence of [false, true]) {
      const bm = new DecoderBatchModel(lm.model, { slots: 3, contextLength: 64, perSequence });
      const s = new Scheduler(bm, { maxQueue: 4, prefillChunk: 6 });
      const got: number[][] = [];
      const sizes: number[] = [];
      prompts.forEach((p, i) => submitOk(s, { promptIds: p, maxTokens: n, sampler: { temperature: 0 }, onFinish: (r) => { got[i] = r.ids; } }));
      while (s.hasWork()) sizes.push(s.step().batchSize);
      assert.deepEqual(got, alone, perSequence ? 'one forward per sequence' : 'one batched forward per step');
      assert.ok(sizes.includes(3), 'steps ran three sequences together');
      assert.equal(s.freeSlotCount, 3);
      assert.equal(bm.cacheBytes(), 3 * lm.model.newCache(64).bytes());
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('scheduler: a throwing onToken ends only its own sequence; the engine loop runs to idle', async () => {
  const m = new FakeModel(2, 100);
  const s = new Scheduler(m, { maxQueue: 2 });
  const res = new Map<string, SequenceResult>();
  submitOk(s, { promptIds: [1], maxTokens: 4, onToken: () => { throw new Error('socket gone'); }, onFinish: (r) => res.set('bad', r) });
  submitOk(s, { promptIds: [2], maxTokens: 4, onFinish: (r) => res.set('good', r) });
  const steps: number[] = [];
  const loop = new EngineLoop(s, (info) => steps.push(info.batchSize));
  loop.kick();
  await loop.idle();
  assert.equal(res.get('bad')!.reason, 'error');
  assert.match(res.get('bad')!.error!, /socket gone/);
  assert.deepEqual(res.get('good')!.ids, fakeAlone([2], 4));
  assert.equal(s.freeSlotCount, 2);
  assert.equal(loop.running, false);
  assert.deepEqual(steps, [2, 1, 1, 1]);
});
