// The byte-level language model: shapes, float64 finite-difference gradients, causality, active
// parameter counts, seeded generation, the language-modelling task and its UDHR corpus, and a few
// training steps that lower the loss.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, ops, withBackend } from '../src/index.js';
import { ByteLM, LM_SCHEMA, denseCounterpart, generate, lmConfig, type LMConfig } from '../src/models/lm.js';
import { LanguageModelTask } from '../src/train/lm-task.js';
import { loadUdhrCorpus } from '../src/data/udhr-corpus.js';
import { loadUdhr, encodeBytes, decodeBytes } from '../src/data/text.js';
import { Adam, clipGradNorm } from '../src/train/optim.js';
import { assertClose, checkGradients } from './helpers.js';

const TINY: Partial<LMConfig> = { dModel: 8, layers: 2, heads: 2, maxSeqLen: 16, numExperts: 4, k: 2, dFF: 6 };

function randomIds(rng: Rng, B: number, T: number): Tensor {
  const ids = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) ids[i] = rng.int(256);
  return new Tensor(ids, [B, T]);
}

test('LM config: every field documented; defaults; unknown keys and bad values are errors', () => {
  for (const [k, f] of Object.entries(LM_SCHEMA)) assert.ok(f.doc.length > 10 && f.default !== undefined, `field ${k} has a default and a doc`);
  const c = lmConfig();
  assert.equal(c.dModel, 128);
  assert.equal(c.ffn, 'moe');
  assert.deepEqual(c.router, { type: 'topk' });
  assert.equal(c.capacityFactor, null);
  assert.throws(() => lmConfig({ dModle: 8 } as unknown as Partial<LMConfig>), /dModle: unknown key/);
  assert.throws(() => lmConfig({ dModel: 10, heads: 4 }), /heads = 4 must divide dModel = 10/);
  assert.throws(() => lmConfig({ positions: 'alibi' } as unknown as Partial<LMConfig>), /positions: 'alibi' is not one of/);
  assert.throws(() => lmConfig({ router: 'topk' } as unknown as Partial<LMConfig>), /router: expected a JSON object like \{"type":"topk"\}, got "topk"/);
});

test('ByteLM: shapes, aux loss, metrics, moeEvery, tied head', () => {
  const model = new ByteLM(TINY, 1);
  const out = model.forward(randomIds(new Rng(2), 3, 5));
  assert.deepEqual([...out.logits.shape], [3, 5, 256]);
  assert.deepEqual([...out.auxLoss!.shape], []);
  assert.ok(out.auxLoss!.item() > 0);
  for (const k of ['entropy', 'entropyOfMean', 'dropFraction', 'loadCV', 'deadExperts']) assert.ok(Number.isFinite(out.metrics[k]), k);
  assert.equal(out.metrics['dropFraction'], 0, 'dropless by default');

  const alternating = new ByteLM({ ...TINY, layers: 4, moeEvery: 2 });
  assert.deepEqual(alternating.blocks.map((b) => b.ffn.constructor.name), ['MLP', 'MoELayer', 'MLP', 'MoELayer']);
  const dense = new ByteLM({ ...TINY, ffn: 'dense', tieEmbeddings: true, positions: 'learned' });
  const d = dense.forward(randomIds(new Rng(3), 2, 7));
  assert.deepEqual([...d.logits.shape], [2, 7, 256]);
  assert.equal(d.auxLoss, null);
  assert.deepEqual(d.metrics, {});
  assert.ok(!dense.namedParameters().some(([n]) => n.startsWith('head.')), 'tied: no separate head');
  assert.throws(() => dense.forward(randomIds(new Rng(3), 1, 17)), /exceeds maxSeqLen = 16/);
});

test('ByteLM gradients match float64 finite differences (js): MoE + rope, dense + learned positions + tied head', () => {
  withBackend('js', () => {
    const cases: Array<[string, Partial<LMConfig>]> = [
      ['moe, rope, rms', { ...TINY, layers: 1 }],
      ['moe every 2nd, learned, layer norm, tied, swiglu', { ...TINY, moeEvery: 2, positions: 'learned', norm: 'layer', tieEmbeddings: true, activation: 'swiglu' }],
    ];
    for (const [what, cfg] of cases) {
      const model = new ByteLM(cfg, 4).to('float64');
      const ids = randomIds(new Rng(5), 2, 4);
      const params = model.parameters();
      checkGradients(() => model.forward(ids).logits, params, params.map(() => true), new Rng(6), `${what}: logits`, 12);
      // the aux loss reaches only what lies upstream of a router (not the last experts, final norm, head)
      model.zeroGrad();
      model.forward(ids).auxLoss!.backward();
      const reached = params.map((p) => p.grad !== null);
      assert.ok(model.namedParameters().every(([n, p]) => !n.endsWith('router.weight') || p.grad !== null), `${what}: every router gets an aux-loss gradient`);
      assert.ok(model.namedParameters().every(([n, p]) => !n.startsWith('head.') || p.grad === null));
      checkGradients(() => model.forward(ids).auxLoss!, params, reached, new Rng(7), `${what}: aux loss`, 8);
    }
  });
});

test('ByteLM is causal: later bytes do not change earlier logits (dropless MoE, rope and learned)', () => {
  for (const cfg of [TINY, { ...TINY, positions: 'learned' as const, moeEvery: 2 }]) {
    const model = new ByteLM(cfg, 8);
    const a = randomIds(new Rng(9), 2, 10);
    const b = new Tensor(a.data.slice(), [2, 10]);
    const t = 4;
    for (let i = 0; i < 2; i++) for (let j = t + 1; j < 10; j++) b.data[i * 10 + j] = (a.data[i * 10 + j]! + 17) % 256;
    const la = noGrad(() => model.forward(a).logits);
    const lb = noGrad(() => model.forward(b).logits);
    assertClose(ops.narrow(lb, 1, 0, t + 1), ops.narrow(la, 1, 0, t + 1), 0, 1e-5, 'prefix logits');
    const diff = ops.narrow(lb, 1, t + 1, 1).data.some((v, i) => Math.abs(v - ops.narrow(la, 1, t + 1, 1).data[i]!) > 1e-6);
    assert.ok(diff, 'the changed byte does change its own logits');
  }
});

test('dense counterpart: the same active parameters as the MoE model, up to the router', () => {
  const cfg = { ...TINY, layers: 3 };
  const m = new ByteLM(cfg);
  const dn = new ByteLM(denseCounterpart(cfg));
  const { dModel: d, numExperts: E, k, dFF, layers } = lmConfig(cfg);
  assert.equal(dn.config.ffn, 'dense');
  assert.equal(m.totalParameters() - m.activeParameters(), layers * (E - k) * 2 * d * dFF, 'E - k experts of 2 d dFF idle per MoE block');
  assert.equal(m.routerParameters(), layers * E * d);
  assert.equal(dn.activeParameters(), dn.totalParameters());
  assert.equal(dn.activeParameters(), m.activeParameters() - m.routerParameters());
  // the router config's own k wins over the k field, for routing and for the dense width
  const k1 = new ByteLM({ ...cfg, router: { type: 'topk', k: 1 } });
  assert.equal(k1.totalParameters() - k1.activeParameters(), layers * (E - 1) * 2 * d * dFF);
  assert.equal(new ByteLM(denseCounterpart({ ...cfg, router: { type: 'topk', k: 1 } })).activeParameters(), k1.activeParameters() - k1.routerParameters());
  assert.equal(new ByteLM({ ...cfg, ffn: 'dense', denseHidden: 5 }).blocks[0]!.ffn.numParameters(), 2 * d * 5);
});

test('generate: deterministic for a seed; greedy extends the prompt; the mode is restored', () => {
  const model = new ByteLM(TINY, 10);
  const prompt = encodeBytes('Hi');
  const a = generate(model, prompt, { maxNewTokens: 20, temperature: 1, topK: 50, seed: 3 });
  const b = generate(model, prompt, { maxNewTokens: 20, temperature: 1, topK: 50, seed: 3 });
  const c = generate(model, prompt, { maxNewTokens: 20, temperature: 1, seed: 4 });
  assert.equal(a.length, 22);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.ok(model.training, 'train mode restored');
  const g1 = generate(model, prompt, { maxNewTokens: 5, seed: 1 });
  const g2 = generate(model, prompt, { maxNewTokens: 5, seed: 2 });
  assert.deepEqual(g1, g2, 'greedy ignores the seed');
  assert.deepEqual(g1.subarray(0, 2), prompt);
  // greedy step by step: each new byte is the arg-max of the logits at the last position
  const ids = new Tensor(Int32Array.from(g1.subarray(0, 4)), [1, 4]);
  const last = noGrad(() => { model.eval(); const l = model.forward(ids).logits; model.train(); return ops.narrow(l, 1, 3, 1).data; });
  assert.equal(g1[4], last.indexOf(Math.max(...last)));
  // contexts longer than maxSeqLen are cropped, not rejected
  assert.equal(generate(model, prompt, { maxNewTokens: 20 }).length, 22);
});

const TEXT = encodeBytes('the quick brown fox jumps over the lazy dog. '.repeat(40));

function tinyTask(model: ByteLM, seed = 11): LanguageModelTask {
  const n = TEXT.length;
  return new LanguageModelTask(model, { train: TEXT.subarray(0, Math.floor(n * 0.8)), val: TEXT.subarray(Math.floor(n * 0.8)), test: null },
    { batchSize: 4, seqLen: 16, stepsPerEpoch: 3, seed, evalWindows: 5 });
}

test('LanguageModelTask: batches reproducible per (seed, epoch); targets are the next bytes; evaluation deterministic', () => {
  const model = new ByteLM(TINY, 12);
  const task = tinyTask(model);
  const epoch = (t: LanguageModelTask, e: number): number[][] => [...t.batches(e)].map((b) => Array.from(b.x.data));
  assert.deepEqual(epoch(task, 1), epoch(task, 1));
  assert.deepEqual(epoch(tinyTask(model), 1), epoch(task, 1), 'a new task with the same seed replays epoch 1');
  assert.notDeepEqual(epoch(task, 0), epoch(task, 1));
  assert.notDeepEqual(epoch(tinyTask(model, 12), 1), epoch(task, 1));
  const [b] = [...task.batches(0)];
  assert.deepEqual([...b!.x.shape], [4, 16]);
  for (let r = 0; r < 4; r++) assert.deepEqual(Array.from(b!.x.data.subarray(r * 16 + 1, r * 16 + 16)), Array.from(b!.y.data.subarray(r * 16, r * 16 + 15)));

  const out = task.step(b!);
  for (const k of ['taskLoss', 'auxLoss', 'bitsPerByte', 'entropy', 'loadCV']) assert.ok(Number.isFinite(out.values[k]), k);
  assert.ok(Math.abs(out.values['bitsPerByte']! - out.values['taskLoss']! / Math.LN2) < 1e-12);
  assert.ok(Math.abs(out.loss.item() - out.values['taskLoss']! - out.values['auxLoss']!) < 1e-5);

  const v1 = task.evaluate('val')!;
  const v2 = task.evaluate('val')!;
  assert.deepEqual(v1, v2);
  assert.ok(v1['loss']! > 4 && v1['loss']! < 6.5, `an untrained model is near ln 256 = 5.55, got ${v1['loss']}`);
  assert.ok(model.training, 'train mode restored');
  assert.equal(task.evaluate('test'), null);
  assert.deepEqual(task.evalStarts(new Uint8Array(16 * 10 + 1)), [0, 32, 64, 96, 128], 'evalWindows spread evenly, non-overlapping');
});

test('a few Adam steps on a repeated string lower the loss (MoE and dense)', () => {
  for (const ffn of ['moe', 'dense'] as const) {
    const model = new ByteLM({ ...TINY, dModel: 16, layers: 1, dFF: 16, ffn }, 13);
    const task = tinyTask(model);
    const before = task.evaluate('val')!['loss']!;
    const opt = new Adam(model.namedParameters(), { lr: 1e-2 });
    for (let e = 0; e < 10; e++) {
      for (const batch of task.batches(e)) {
        task.step(batch).loss.backward();
        clipGradNorm(model.parameters(), 1);
        opt.step();
        opt.zeroGrad();
      }
    }
    const after = task.evaluate('val')!['loss']!;
    assert.ok(after < before - 1.5, `${ffn}: val loss ${before.toFixed(3)} -> ${after.toFixed(3)}`);
  }
});

test('UDHR corpus: every language in every split, contiguous, cut at character boundaries', async () => {
  const languages = ['eng', 'rus', 'cmn_hans'];
  const c = await loadUdhrCorpus({ languages, valFraction: 0.1, testFraction: 0.1 });
  assert.deepEqual(c.languages, languages);
  const texts = await loadUdhr({ languages });
  const total = texts.reduce((s, t) => s + encodeBytes(t.text).length, 0);
  // two newline separators per split join the three languages
  assert.equal(c.train.length + c.val.length + c.test.length, total + 3 * 2);
  assert.ok(Math.abs(c.val.length / total - 0.1) < 0.01 && Math.abs(c.test.length / total - 0.1) < 0.01);
  const strict = new TextDecoder('utf-8', { fatal: true });
  const [train, val, test] = [c.train, c.val, c.test].map((b) => strict.decode(b)) as [string, string, string];
  for (const t of texts) {
    assert.ok(train.includes(t.text.slice(0, 40)), `${t.language}: its start is in train`);
    assert.ok(test.includes(t.text.slice(-40)), `${t.language}: its end is in test`);
    const cut = decodeBytes(encodeBytes(t.text).subarray(Math.floor(encodeBytes(t.text).length * 0.85)));
    assert.ok(val.includes(cut.slice(3, 15)), `${t.language}: its 85% point is in val`);
  }
  await assert.rejects(loadUdhrCorpus({ valFraction: 0.6, testFraction: 0.5 }), /must be < 1/);
});
