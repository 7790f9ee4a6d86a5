// Rare-expert accounting: training counts recorded and round-tripped, rare shares on hand-built routing, the server's metric and response field, models without counts, expert-cache metrics.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM, type LoadedLM } from '../src/models/load-lm.js';
import { toHF } from '../src/models/moe-decoder-hf.js';
import { writeHFDir } from '../src/formats/hf/write.js';
import { loadTokenizer, type LoadedTokenizer } from '../src/formats/hf/tokenizer.js';
import { crossEntropy } from '../src/ops/index.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import {
  ExpertTokenCounter, expertTokenCountsOf, readExpertTokenCounts, setExpertTokenCounts, type ExpertTokenCounts,
} from '../src/models/expert-token-counts.js';
import { RareExperts, addTally, emptyTally, rareShare } from '../src/infer/rare-experts.js';
import { RareExpertTracker } from '../src/serve/rare-tracking.js';
import type { BatchEntry, BatchModel } from '../src/serve/scheduler.js';
import { ModelServer, type ServerOptions } from '../src/serve/http.js';
import { serveCommand } from '../src/cli/serve-command.js';
import { parseArgs } from '../src/cli/args.js';

let root = '';
let plain: LoadedLM; // no counts
let counted: LoadedLM; // counts read back from its config.json
let tok: LoadedTokenizer;
let counts: ExpertTokenCounts;

/** Hand-made counts for olmoe tiny (4 layers, 16 experts): experts 0-3 of every layer never trained, so they are rare at any threshold. */
function handCounts(m: MoEDecoder): ExpertTokenCounts {
  const E = m.config.numExperts;
  return { tokens: 1000, layers: m.layers.map(() => Array.from({ length: E }, (_, e) => (e < 4 ? 0 : 1000 * m.config.topK / (E - 4)) | 0)) };
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'moe-rare-'));
  createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: join(root, 'plain'), seed: 3 });
  plain = await loadLM(join(root, 'plain'));
  tok = loadTokenizer(plain.tokenizerJson, plain.tokenizerConfig ?? {});
  // the same weights with counts, written by toHF and read back
  const withCounts = (await loadLM(join(root, 'plain'))).model;
  counts = handCounts(withCounts);
  setExpertTokenCounts(withCounts, counts);
  const { config, tensors } = toHF(withCounts);
  mkdirSync(join(root, 'counted'));
  writeHFDir(join(root, 'counted'), { config, tensors, tokenizerJson: plain.tokenizerJson, tokenizerConfig: plain.tokenizerConfig });
  counted = await loadLM(join(root, 'counted'));
});
after(() => rmSync(root, { recursive: true, force: true }));

test('rare experts: training forwards record per-expert counts equal to the routing they saw; the counts survive save and load', async () => {
  const lm = await loadLM(join(root, 'plain'));
  const m = lm.model;
  const seen: Array<Int32Array[]> = m.layers.map(() => []);
  m.onRouting = (l, e) => { seen[l]!.push(e.slice()); }; // a hook already there: the counter chains onto it
  const counter = new ExpertTokenCounter(m.config);
  const detach = counter.attach(m);
  const T = [9, 1];
  for (const n of T) {
    const ids = Int32Array.from({ length: n + 1 }, (_, i) => (i * 37 + n) % 256);
    const loss = crossEntropy(m.forward(ids.subarray(0, n)), ids.subarray(1));
    loss.backward(); // a training step's forward records the graph; the hook sees it all the same
  }
  detach();
  assert.equal(typeof m.onRouting, 'function', 'detach restores the earlier hook');
  const c = counter.counts();
  assert.equal(c.tokens, 10);
  c.layers.forEach((layer, l) => {
    const want = new Array(m.config.numExperts).fill(0);
    for (const e of seen[l]!.flatMap((x) => [...x])) want[e]++;
    assert.deepEqual(layer, want, `layer ${l}`);
    assert.equal(layer!.reduce((a, b) => a + b, 0), 10 * m.config.topK);
  });
  // resumed counting adds to the earlier counts
  const resumed = new ExpertTokenCounter(m.config, c);
  resumed.hook(0, Int32Array.of(0, 1, 2, 3), new Float32Array(4));
  assert.equal(resumed.counts().tokens, 11);
  assert.equal(resumed.counts().layers[0]![0], c.layers[0]![0]! + 1);

  // round trip through the HF directory: exact counts, other config keys kept
  assert.deepEqual(expertTokenCountsOf(counted.model), counts);
  assert.equal(counted.model.hfConfig!['bos_token_id'], plain.model.hfConfig!['bos_token_id']);
  assert.equal(expertTokenCountsOf(plain.model), null, 'a checkpoint without counts loads, with none');
});

test('rare experts: malformed counts in config.json are errors naming the field', () => {
  const cfg = plain.model.config;
  const bad = (v: unknown) => () => readExpertTokenCounts({ ...plain.model.hfConfig!, moe_ts: { expert_token_counts: v } }, cfg, 'x/config.json');
  assert.throws(bad({ tokens: 1, layers: [[1]] }), /x\/config\.json: moe_ts\.expert_token_counts\.layers must be a list of 4 entries/);
  assert.throws(bad({ tokens: 1, layers: counts.layers.map((l, i) => (i === 2 ? l!.slice(1) : l)) }), /layers\[2\] must be a list of 16 counts/);
  assert.throws(bad({ tokens: 1, layers: counts.layers.map((l, i) => (i === 1 ? [-1, ...l!.slice(1)] : l)) }), /layers\[1\]\[0\] = -1 must be a non-negative integer/);
  assert.throws(bad({ tokens: 1.5, layers: counts.layers }), /tokens = 1\.5 must be a non-negative integer/);
  assert.throws(bad([1, 2]), /must be an object \{ tokens, layers \}/);
  assert.deepEqual(bad({ tokens: 1, layers: counts.layers })(), { tokens: 1, layers: counts.layers });
});

test('rare experts: shares, the rare set and tallies on hand-built routing', () => {
  // layer 0: shares 100/205, 100/205, 5/205, 0 -> below 0.25/4 = 0.0625: experts 2 and 3; layer 1 dense; layer 2 all zero (untracked)
  const c: ExpertTokenCounts = { tokens: 100, layers: [[100, 100, 5, 0], null, [0, 0, 0, 0]] };
  const r = new RareExperts(c, { numExperts: 4, topK: 2 });
  assert.equal(r.threshold, 0.25);
  assert.deepEqual(r.trackedLayers, [0]);
  assert.deepEqual([...r.rare[0]!], [0, 0, 1, 1]);
  assert.equal(r.rareCount(0), 2);
  assert.equal(r.rare[1], null);
  assert.equal(r.rare[2], null);
  // T = 3 tokens, k = 2: token 0 -> {0, 2} (1 rare), token 1 -> {1, 0} (none), token 2 -> {3, 2} (2 rare)
  const t = r.tally([Int32Array.of(0, 2, 1, 0, 3, 2), null, Int32Array.of(0, 1, 2, 3, 0, 1)], 3);
  assert.deepEqual(t, { tokens: 3, rareTokens: 2, routed: 6, rareRouted: 3 });
  assert.equal(rareShare(t), 0.5);
  // a higher threshold: 100/205 = 0.488 is above 1.0 / 4 = 0.25, still only 2 and 3; threshold 1 at shares exactly uniform: none rare
  assert.deepEqual([...new RareExperts({ tokens: 4, layers: [[2, 2, 2, 2]] }, { numExperts: 4, topK: 1, threshold: 1 }).rare[0]!], [0, 0, 0, 0]);
  assert.throws(() => new RareExperts(c, { numExperts: 4, topK: 2, threshold: 0 }), /threshold must be a number in \(0, 1\]/);
  assert.throws(() => new RareExperts(c, { numExperts: 4, topK: 2, threshold: 1.5 }), /threshold/);
  assert.throws(() => r.tally([Int32Array.of(0, 1)], 3), /layer 0 routing has 2 entries, expected T \* k = 3 \* 2/);
  assert.equal(rareShare(emptyTally()), 0);
  // edge cases: T = 0; E = 1 (its one expert has the whole share, never rare); k = E
  assert.deepEqual(r.tally([new Int32Array(0), null, new Int32Array(0)], 0), { tokens: 0, rareTokens: 0, routed: 0, rareRouted: 0 });
  assert.equal(new RareExperts({ tokens: 5, layers: [[5]] }, { numExperts: 1, topK: 1, threshold: 1 }).rareCount(0), 0);
  const all = new RareExperts({ tokens: 5, layers: [[5, 5, 0]] }, { numExperts: 3, topK: 3 });
  assert.deepEqual(all.tally([Int32Array.of(2, 0, 1, 0, 1, 2)], 2), { tokens: 2, rareTokens: 2, routed: 6, rareRouted: 2 });
  assert.throws(() => new RareExperts(c, { numExperts: 4, topK: 5 }), /topK must be an integer in \[1, 4\]/);
});

test('rare experts: the tracker splits a step\'s routing by batch entry and attributes it to the named sequences', () => {
  const r = new RareExperts({ tokens: 1, layers: [[10, 10, 0], [10, 0, 10]] }, { numExperts: 3, topK: 1 }); // rare: L0 e2, L1 e1
  let routing: Array<Int32Array[]> = []; // per step: per layer, the rows of all entries
  let tracker!: RareExpertTracker;
  const inner: BatchModel = {
    vocabSize: 5, numSlots: 2, contextLength: 16,
    decodeStep(batch: BatchEntry[]) {
      const step = routing.shift()!;
      // as forward-per-sequence would: layer by layer, entry by entry
      let at = 0;
      for (const { ids } of batch) {
        step.forEach((rows, l) => tracker.hook(l, rows.subarray(at, at + ids.length), new Float32Array(ids.length)));
        at += ids.length;
      }
      return batch.map(() => new Float32Array(5));
    },
    resetSlot() {},
  };
  tracker = new RareExpertTracker(inner, r);
  // entry A (3 prompt rows), entry B (1 row): A's rows route L0 [2, 0, 1], L1 [1, 1, 0]; B's L0 [2], L1 [0]
  routing = [[Int32Array.of(2, 0, 1, 2), Int32Array.of(1, 1, 0, 0)]];
  tracker.decodeStep([{ slot: 0, ids: Int32Array.of(1, 2, 3) }, { slot: 1, ids: Int32Array.of(4) }]);
  tracker.attribute([7, 9]);
  assert.deepEqual(tracker.take(7), { tokens: 3, rareTokens: 2, routed: 6, rareRouted: 3 });
  assert.deepEqual(tracker.take(9), { tokens: 1, rareTokens: 1, routed: 2, rareRouted: 1 });
  assert.equal(tracker.openSequences, 0);
  // a step whose model never reported routing is not attributed (no crash, counted as incomplete)
  const silent = new RareExpertTracker({ ...inner, decodeStep: (b) => b.map(() => new Float32Array(5)) }, r);
  silent.decodeStep([{ slot: 0, ids: Int32Array.of(1) }]);
  silent.attribute([3]);
  assert.equal(silent.incompleteSteps, 1);
  assert.deepEqual(silent.take(3), emptyTally());
  // two steps of one sequence add up
  routing = [[Int32Array.of(2), Int32Array.of(0)], [Int32Array.of(0), Int32Array.of(1)]];
  for (let i = 0; i < 2; i++) { tracker.decodeStep([{ slot: 0, ids: Int32Array.of(1) }]); tracker.attribute([5]); }
  const want = emptyTally();
  addTally(want, { tokens: 1, rareTokens: 1, routed: 2, rareRouted: 1 });
  addTally(want, { tokens: 1, rareTokens: 1, routed: 2, rareRouted: 1 });
  assert.deepEqual(tracker.take(5), want);
});

async function withServer(opts: Partial<ServerOptions> & { model: MoEDecoder }, body: (url: string, s: ModelServer) => Promise<void>): Promise<void> {
  const s = new ModelServer({ tokenizer: tok, modelName: 'tiny', maxBatch: 2, maxQueue: 4, contextLength: 128, ...opts });
  const url = await s.listen(0, '127.0.0.1');
  try {
    await body(url, s);
  } finally {
    await s.shutdown(0);
  }
}

const post = (url: string, body: unknown): Promise<Response> =>
  fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

const metricValue = (text: string, line: string): number => {
  const m = text.split('\n').find((l) => l.startsWith(`${line} `));
  assert.ok(m, `/metrics has ${line}`);
  return Number(m.slice(line.length + 1));
};

test('serve: usage.moe_rare_experts over HTTP equals the tally of the same routing computed apart; /metrics counts it', async () => {
  const m = counted.model;
  const prompt = 'Everyone has the right to life';
  const r = new RareExperts(counts, { numExperts: m.config.numExperts, topK: m.config.topK });
  await withServer({ model: m }, async (url, s) => {
    assert.equal(s.rareNote, null);
    const res = await post(url, { prompt, max_tokens: 6, temperature: 0, ignore_eos: true, moe_rare_experts: true });
    assert.equal(res.status, 200);
    const body = await res.json() as { choices: Array<{ text: string }>; usage: { prompt_tokens: number; completion_tokens: number; moe_rare_experts: Record<string, number | boolean> } };
    const u = body.usage;
    const got = u.moe_rare_experts;
    // the same computation as the server's: prefill the prompt, then greedy decoding feeds each generated token but the last
    const ids = tok.encode(prompt, { addSpecialTokens: true });
    const expect = emptyTally();
    const routing: Int32Array[] = [];
    const prev = m.onRouting;
    m.onRouting = (l, e) => { routing[l] = e.slice(); };
    try {
      const cache = m.newCache(128);
      let chunk = Int32Array.from(ids);
      for (let i = 0; i < 6; i++) {
        const logits = m.forward(chunk, cache).data as Float32Array;
        addTally(expect, r.tally(routing, chunk.length));
        const V = m.config.vocabSize;
        const last = logits.subarray(logits.length - V);
        let best = 0;
        for (let v = 1; v < V; v++) if (last[v]! > last[best]!) best = v;
        chunk = Int32Array.of(best);
      }
    } finally {
      m.onRouting = prev;
    }
    assert.equal(u.completion_tokens, 6);
    assert.equal(expect.tokens, u.prompt_tokens + u.completion_tokens - 1);
    assert.ok(expect.rareRouted > 0, 'experts 0-3 of 16 are rare: some of the routing reaches them');
    assert.deepEqual(got, {
      available: true, threshold: 0.25, tokens: expect.tokens, rare_tokens: expect.rareTokens,
      routed_tokens: expect.routed, rare_routed_tokens: expect.rareRouted, rare_share: rareShare(expect),
    });
    // not asked: a plain OpenAI usage object
    const plainRes = await (await post(url, { prompt, max_tokens: 2 })).json() as { usage: object };
    assert.deepEqual(Object.keys(plainRes.usage).sort(), ['completion_tokens', 'prompt_tokens', 'total_tokens']);
    // streaming: the usage chunk comes when asked for, carrying the field
    const sres = await post(url, { prompt, max_tokens: 3, stream: true, moe_rare_experts: true });
    const events = (await sres.text()).split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)) as { choices: unknown[]; usage?: { moe_rare_experts?: { available: boolean; tokens: number } } });
    const last = events[events.length - 1]!;
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage?.moe_rare_experts?.available, true);
    assert.equal(last.usage?.moe_rare_experts?.tokens, ids.length + 2);

    const text = await (await fetch(`${url}/metrics`)).text();
    assert.equal(metricValue(text, 'moe_rare_experts{layer="0"}'), 4);
    assert.equal(metricValue(text, 'moe_request_rare_expert_share_count'), 3);
    assert.equal(metricValue(text, 'moe_rare_expert_tracked_tokens_total'), expect.tokens + (ids.length + 1) + (ids.length + 2));
    // per layer routed-to-rare counter = the rare experts' rows of moe_expert_tokens_total
    for (let l = 0; l < m.config.numLayers; l++) {
      let rare = 0;
      for (let e = 0; e < 4; e++) if (text.includes(`moe_expert_tokens_total{layer="${l}",expert="${e}"}`)) rare += metricValue(text, `moe_expert_tokens_total{layer="${l}",expert="${e}"}`);
      assert.equal(metricValue(text, `moe_rare_expert_routed_tokens_total{layer="${l}"}`), rare, `layer ${l}`);
    }
    assert.equal((s as unknown as { rareTracker: RareExpertTracker }).rareTracker.openSequences, 0, 'finished requests leave no tally behind');
    // a bad value names the field
    const bad = await post(url, { prompt, moe_rare_experts: 'yes' });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { param: string } }).error.param, 'moe_rare_experts');
  });
});

test('serve: a model without recorded counts serves as before; asking for the field gets available: false and the reason', async () => {
  await withServer({ model: plain.model }, async (url, s) => {
    assert.match(s.rareNote!, /no per-expert training token counts/);
    const res = await post(url, { prompt: 'Hello', max_tokens: 3, moe_rare_experts: true });
    assert.equal(res.status, 200);
    const u = ((await res.json()) as { usage: { completion_tokens: number; moe_rare_experts: { available: boolean; reason: string } } }).usage;
    assert.equal(u.completion_tokens > 0, true);
    assert.equal(u.moe_rare_experts.available, false);
    assert.match(u.moe_rare_experts.reason, /moe_ts\.expert_token_counts/);
    const text = await (await fetch(`${url}/metrics`)).text();
    assert.ok(!text.includes('moe_rare_'), 'no rare-expert metrics without counts');
    assert.ok(text.includes('moe_expert_tokens_total'), 'the expert load metric stays');
  });
});

test('serve: /metrics exposes the expert cache\'s hits and misses per layer (--expert-memory)', async () => {
  const lm = await loadLM(join(root, 'plain'), { expertMemory: 0.5 });
  try {
    await withServer({ model: lm.model, expertCache: lm.expertCache }, async (url) => {
      const res = await post(url, { prompt: 'All human beings are born free', max_tokens: 4 });
      assert.equal(res.status, 200);
      await res.json();
      const text = await (await fetch(`${url}/metrics`)).text();
      const st = lm.expertCache!.stats();
      assert.ok(st.hits + st.misses > 0);
      for (const ls of st.layers) {
        assert.equal(metricValue(text, `moe_expert_cache_hits_total{layer="${ls.layer}"}`), ls.hits);
        assert.equal(metricValue(text, `moe_expert_cache_misses_total{layer="${ls.layer}"}`), ls.misses);
      }
      assert.equal(metricValue(text, 'moe_expert_cache_resident_bytes'), lm.expertCache!.residentBytes);
      // counters stay monotonic across a stats reset (a benchmark's), adding what came after it
      const before = metricValue(text, `moe_expert_cache_misses_total{layer="${st.layers[0]!.layer}"}`);
      lm.expertCache!.resetStats();
      await (await post(url, { prompt: 'x', max_tokens: 1 })).json();
      const after = metricValue(await (await fetch(`${url}/metrics`)).text(), `moe_expert_cache_misses_total{layer="${st.layers[0]!.layer}"}`);
      assert.equal(after, before + lm.expertCache!.stats().layers[0]!.misses);
    });
  } finally {
    lm.expertCache?.close();
  }
});

test('serve: /metrics counts the misses run on the low-precision copies (--expert-low-precision q4_0)', async () => {
  const lm = await loadLM(join(root, 'plain'), { expertMemory: 0.5, expertLowPrecision: { type: 'q4_0' } });
  try {
    await withServer({ model: lm.model, expertCache: lm.expertCache }, async (url) => {
      const res = await post(url, { prompt: 'All human beings are born free', max_tokens: 4 });
      assert.equal(res.status, 200);
      await res.json();
      const text = await (await fetch(`${url}/metrics`)).text();
      const st = lm.expertCache!.stats();
      assert.ok(st.lowPrecision > 0, 'the server\'s batched steps reach the copies');
      for (const ls of st.layers) assert.equal(metricValue(text, `moe_expert_cache_low_precision_total{layer="${ls.layer}"}`), ls.lowPrecision);
      assert.equal(metricValue(text, 'moe_expert_cache_low_precision_bytes'), lm.expertCache!.lowPrecisionBytes);
      assert.equal(metricValue(text, 'moe_expert_cache_resident_bytes'), lm.expertCache!.residentBytes);
    });
  } finally {
    lm.expertCache?.close();
  }
});

test('serve: --rare-threshold is checked before the model loads', async () => {
  assert.throws(() => new ModelServer({ model: plain.model, tokenizer: tok, modelName: 'x', rareThreshold: 0 }), /serve: the rare-expert threshold must be a number in \(0, 1\]/);
  await assert.rejects(serveCommand(parseArgs(['--model', join(root, 'nope'), '--rare-threshold', '2'], new Set())), /--rare-threshold 2: expected a number in \(0, 1\]/);
  await assert.rejects(serveCommand(parseArgs(['--model', join(root, 'nope'), '--rare-threshold', 'x'], new Set())), /--rare-threshold x/);
});

test('rare-experts study: a few steps end to end (train, record, save, load, evaluate) give consistent counts and tallies', async () => {
  const { runRareExperts } = await import('../src/experiments/rare-experts.js');
  const out = join(root, 'study');
  const r = await runRareExperts({ out, steps: 4, seqLen: 32, unseen: ['fin'], thresholds: [0.25] });
  assert.equal(r.counts.tokens, 4 * 32);
  for (const l of r.counts.layers) assert.equal(l!.reduce((a, b) => a + b, 0), 4 * 32 * r.config.topK);
  assert.deepEqual(r.languages.map((l) => [l.language, l.role]), [['eng', 'high'], ['swh', 'low'], ['fin', 'unseen']]);
  const eng = r.languages[0]!;
  assert.ok(Math.abs(r.languages[1]!.trainBytes * 20 - eng.trainBytes) < 40, 'the low-resource language gets 1/20 of the bytes');
  for (const l of r.languages) {
    const t = l.rare[0]!.tally;
    assert.equal(t.tokens, l.heldOutBytes - 1, `${l.language}: every held-out byte but the last is routed`);
    assert.equal(t.routed, t.tokens * r.config.numLayers * r.config.topK);
    assert.ok(Number.isFinite(l.bitsPerByte));
  }
  const lm = await loadLM(join(out, 'model'));
  assert.deepEqual(expertTokenCountsOf(lm.model), r.counts);
});
