// The multilingual UDHR corpus: article splits without leaks, labels checked against the text, low-resource cuts, language-tagged batches.

import test from 'node:test';
import assert from 'node:assert/strict';
import { loadUdhr, decodeBytes } from '../src/data/text.js';
import { LANGUAGES, SCRIPT_UNICODE } from '../src/data/languages.js';
import {
  corpusTable, labelIds, languageSamplingProbs, languageWindows, loadMultilingualCorpus, readUdhrArticles, sampleLanguageBatch,
} from '../src/data/multilingual-corpus.js';
import { Rng } from '../src/tensor/rng.js';

test('readUdhrArticles: preamble + 30 articles, together the same text as loadUdhr', async () => {
  for (const code of ['eng', 'jpn', 'arb']) {
    const parts = readUdhrArticles(code);
    assert.equal(parts.length, 31);
    const [whole] = await loadUdhr({ languages: [code] });
    assert.equal(parts.join('\n'), whole!.text, code);
  }
  assert.match(readUdhrArticles('eng')[26]!, /^Article 26\nEveryone has the right to education/);
});

test('split by article: the three splits partition the articles, and no held-out article text is in train', async () => {
  const c = await loadMultilingualCorpus({ languages: ['eng', 'fra', 'rus'], lowResource: [] });
  for (const l of c.languages) {
    const all = [...l.articles.train, ...l.articles.val, ...l.articles.test].sort((a, b) => a - b);
    assert.deepEqual(all, Array.from({ length: 31 }, (_, i) => i), l.code);
    assert.equal(new Set(all).size, 31);
    const train = decodeBytes(l.train);
    const parts = readUdhrArticles(l.code);
    for (const a of [...l.articles.val, ...l.articles.test]) {
      // the body (after the "Article N" heading) of every held-out article is absent from train
      const body = parts[a]!.split('\n').slice(1).join('\n');
      assert.ok(body.length > 50);
      assert.ok(!train.includes(body), `${l.code} article ${a} leaks into train`);
    }
    assert.ok(decodeBytes(l.val).startsWith(parts[4]!), 'val starts with article 4');
    assert.ok(decodeBytes(l.test).includes(parts[27]!));
    assert.ok(l.train.length > 5 * l.val.length);
  }
});

test('labels: every table language loads, is labelled, and its script label matches the letters of its text', async () => {
  const c = await loadMultilingualCorpus();
  assert.equal(c.languages.length, LANGUAGES.length);
  for (const l of c.languages) {
    for (const k of ['family', 'genus', 'script', 'name', 'iso6393'] as const) assert.ok(l[k].length > 0, `${l.code}.${k}`);
    const scripts = SCRIPT_UNICODE[l.script];
    assert.ok(scripts, `${l.code}: script ${l.script} has no Unicode mapping`);
    const text = decodeBytes(l.train) + decodeBytes(l.val);
    const letters = [...text].filter((ch) => /\p{L}/u.test(ch));
    const inScript = letters.filter((ch) => scripts.some((s) => new RegExp(`\\p{Script=${s}}`, 'u').test(ch))).length;
    assert.ok(inScript / letters.length > 0.8, `${l.code}: only ${inScript}/${letters.length} letters are ${scripts.join('/')}`);
  }
  for (const label of ['family', 'genus', 'script'] as const) {
    const ids = labelIds(c, label);
    assert.ok(ids.every((i) => i >= 0));
  }
  // single-language families exist by construction
  const perFamily = new Map<string, number>();
  for (const l of c.languages) perFamily.set(l.family, (perFamily.get(l.family) ?? 0) + 1);
  assert.ok(['Basque', 'Kartvelian'].every((f) => perFamily.get(f) === 1));
  assert.equal(corpusTable(c).length, c.languages.length);
});

test('low-resource languages keep 1/lowRatio of their training bytes and all of val/test', async () => {
  const high = await loadMultilingualCorpus({ languages: ['eng', 'eus'], lowResource: [] });
  const low = await loadMultilingualCorpus({ languages: ['eng', 'eus'], lowResource: ['eus'], lowRatio: 20 });
  const [hEng, hEus] = high.languages;
  const [lEng, lEus] = low.languages;
  assert.equal(lEus!.resource, 'low');
  assert.equal(lEng!.resource, 'high');
  assert.deepEqual(lEng!.train, hEng!.train);
  assert.deepEqual(lEus!.val, hEus!.val);
  assert.deepEqual(lEus!.test, hEus!.test);
  assert.equal(lEus!.fullTrainBytes, hEus!.train.length);
  const ratio = hEus!.train.length / lEus!.train.length;
  assert.ok(ratio >= 20 && ratio < 23, `ratio ${ratio}`);
  assert.deepEqual(lEus!.train, hEus!.train.subarray(0, lEus!.train.length), 'a prefix of the full training text');
  // default: the table's low-resource set within the chosen languages
  const d = await loadMultilingualCorpus({ languages: ['eng', 'cat', 'kat'] });
  assert.deepEqual(d.languages.map((l) => l.resource), ['high', 'low', 'low']);
  // scripts without spaces are cut at a character boundary: the cut text is valid UTF-8
  const cjk = await loadMultilingualCorpus({ languages: ['cmn_hans', 'jpn', 'tha'], lowResource: ['cmn_hans', 'jpn', 'tha'], lowRatio: 17 });
  for (const l of cjk.languages) assert.doesNotThrow(() => new TextDecoder('utf-8', { fatal: true }).decode(l.train), l.code);
});

test('bad options are named', async () => {
  await assert.rejects(loadMultilingualCorpus({ languages: ['xxx'] }), /'xxx' is not in the multilingual corpus's table/);
  await assert.rejects(loadMultilingualCorpus({ languages: ['eng'], valArticles: [3], testArticles: [3] }), /articles 3 are in both/);
  await assert.rejects(loadMultilingualCorpus({ languages: ['eng'], valArticles: [31] }), /valArticles must hold article numbers 1\.\.30, got 31/);
  await assert.rejects(loadMultilingualCorpus({ languages: ['eng'], lowResource: ['fra'] }), /lowResource names 'fra'/);
  await assert.rejects(loadMultilingualCorpus({ languages: ['eng'], lowRatio: 0.5 }), /lowRatio must be a number >= 1/);
  await assert.rejects(loadMultilingualCorpus({ languages: [] }), /languages is empty/);
});

test('sampleLanguageBatch: each window comes from its language\'s training text; temperature flattens the mix', async () => {
  const c = await loadMultilingualCorpus({ languages: ['eng', 'rus', 'kat'], lowResource: ['kat'], lowRatio: 20 });
  const b = sampleLanguageBatch(c, { batchSize: 64, seqLen: 16, rng: new Rng(3) });
  assert.deepEqual(b.x.shape, [64, 16]);
  const x = b.x.data as Int32Array;
  const y = b.y.data as Int32Array;
  const train = c.languages.map((l) => Buffer.from(l.train));
  for (let i = 0; i < 64; i++) {
    const win = Buffer.from(Uint8Array.from(x.subarray(i * 16, (i + 1) * 16)));
    assert.ok(train[b.lang[i]!]!.includes(win), `window ${i} is not in language ${b.lang[i]}`);
    for (let t = 0; t < 15; t++) assert.equal(y[i * 16 + t], x[i * 16 + t + 1]);
  }
  const p1 = languageSamplingProbs(c, 1);
  const total = c.languages.reduce((s, l) => s + l.train.length, 0);
  c.languages.forEach((l, i) => assert.ok(Math.abs(p1[i]! - l.train.length / total) < 1e-12));
  const p5 = languageSamplingProbs(c, 5);
  assert.ok(p5[2]! > p1[2]! * 2, 'temperature 5 samples the low-resource language more');
  assert.ok(Math.abs(p5.reduce((a, v) => a + v, 0) - 1) < 1e-12);
  // probs with a zero never draw that language
  const only = sampleLanguageBatch(c, { batchSize: 32, seqLen: 8, rng: new Rng(1), probs: [0, 1, 0] });
  assert.ok(only.lang.every((l) => l === 1));
  assert.throws(() => sampleLanguageBatch(c, { batchSize: 2, seqLen: 8, rng: new Rng(1), probs: [1, 0] }), /probs has 2 entries/);
  assert.throws(() => sampleLanguageBatch(c, { batchSize: 2, seqLen: 100000, rng: new Rng(1) }), /has \d+ training bytes, fewer than seqLen \+ 1/);
  assert.throws(() => languageSamplingProbs(c, 0), /temperature must be a positive/);
});

test('languageWindows: non-overlapping windows of each language, labelled, capped per language', async () => {
  const c = await loadMultilingualCorpus({ languages: ['eng', 'jpn'], lowResource: [] });
  const w = languageWindows(c, 'val', 32);
  const expected = c.languages.map((l) => Math.floor((l.val.length - 1) / 32));
  assert.equal(w.lang.length, expected[0]! + expected[1]!);
  assert.equal(w.x.length, w.lang.length * 32);
  assert.equal(w.lang.filter((l) => l === 1).length, expected[1]);
  assert.deepEqual(Array.from(w.x.subarray(0, 32)), Array.from(c.languages[0]!.val.subarray(0, 32)));
  assert.equal(w.y[31], c.languages[0]!.val[32]);
  const capped = languageWindows(c, 'test', 32, 3);
  assert.deepEqual(Array.from(capped.lang), [0, 0, 0, 1, 1, 1]);
  assert.throws(() => languageWindows(c, 'val', 0), /seqLen must be a positive integer/);
});
