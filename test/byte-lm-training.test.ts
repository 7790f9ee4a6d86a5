// The byte-LM experiments' shared training loop: reproducible for a seed, hooks in step order, a curriculum per step.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteLM } from '../src/models/lm.js';
import { trainByteLM, byteLMEvaluator, forEachEvalWindow } from '../src/experiments/byte-lm-training.js';

const model = { dModel: 8, layers: 1, heads: 2, maxSeqLen: 8, numExperts: 2, k: 1, dFF: 8 };
const bytes = (n: number, off: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => 97 + ((i * 7 + off) % 26));
const A = bytes(400, 0);
const B = bytes(400, 3);
const base = { steps: 4, seed: 1, windowSalt: 31, batchSize: 2, seqLen: 8, lr: 3e-3, clipNorm: 1 };

test('trainByteLM: the same seed repeats the losses, another window salt changes them, and the loss falls', () => {
  const run = (salt: number): number[] => trainByteLM(new ByteLM(model, 0), { ...base, steps: 12, windowSalt: salt, data: A });
  const a = run(31);
  assert.equal(a.length, 12);
  assert.ok(a.every(Number.isFinite));
  assert.deepEqual(run(31), a);
  assert.notDeepEqual(run(21), a);
  assert.ok(a[11]! < a[0]!, `loss falls: ${a[0]} -> ${a[11]}`);
});

test('trainByteLM: hooks run in step order around backward; data(step) picks each step\'s bytes', () => {
  const events: string[] = [];
  const asked: number[] = [];
  const losses = trainByteLM(new ByteLM(model, 0), {
    ...base,
    data: (s) => { asked.push(s); return s < 2 ? A : B; },
    beforeStep: (s, opt) => { assert.ok(opt); events.push(`before ${s}`); },
    afterBackward: () => events.push('backward'),
    afterStep: (s, loss) => events.push(`after ${s} ${loss}`),
  });
  assert.deepEqual(asked, [0, 1, 2, 3]);
  assert.deepEqual(events, losses.flatMap((l, s) => [`before ${s}`, 'backward', `after ${s} ${l}`]));
});

test('byteLMEvaluator and forEachEvalWindow: each evaluation window once, the model back in training mode', () => {
  const lm = new ByteLM(model, 0);
  const task = byteLMEvaluator(lm, { train: A, val: B }, { batchSize: 2, seqLen: 8, evalWindows: 5 });
  assert.ok(Number.isFinite(task.evaluateBytes(B).bitsPerByte));
  const seen: number[][] = [];
  forEachEvalWindow(lm, task, B, 8, (w) => { assert.equal(lm.training, false); seen.push(Array.from(w)); });
  assert.equal(seen.length, task.evalStarts(B).length);
  assert.deepEqual(seen, task.evalStarts(B).map((s) => Array.from(B.subarray(s, s + 8))));
  assert.equal(lm.training, true);
});
