// Expert cache and offload: any budget and policy gives the all-resident tokens and logits bit for bit; budgets below top-k,
// dtype mismatches and files truncated mid-life are refused clearly; stats add up; LRU/LFU evict in the expected order.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, truncateSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openHFDir } from '../src/formats/hf/index.js';
import { writeGGUF } from '../src/formats/gguf/index.js';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM, type LoadLMOptions } from '../src/models/load-lm.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import { SlotPool, LRU, LFU } from '../src/infer/expert-slots.js';
import { slotsForBudget } from '../src/infer/expert-offload.js';
import { parseArgs } from '../src/cli/args.js';
import { expertFlags } from '../src/cli/generate-command.js';
import { greedyByHand } from './greedy-by-hand.js';

const PROMPT = Int32Array.from(Buffer.from('All human beings are born free'));
const NEW = 10;

let dir: string;
const files: Record<string, string> = {};
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'moe-expert-cache-'));
  // olmoe tiny: 16 experts top-4, f32 safetensors; qwen3_moe tiny has a dense layer (MoE layers are not every layer)
  for (const fam of ['olmoe', 'qwen3_moe', 'qwen2_moe'] as const) {
    const hfDir = join(dir, fam);
    createRandomHFDir({ family: fam, preset: 'tiny', out: hfDir, seed: 5 });
    files[`${fam}-hf`] = hfDir;
    const hf = openHFDir(hfDir);
    try {
      const gguf = join(dir, `${fam}.gguf`);
      writeGGUF(gguf, { config: hf.config, tensors: hf.source.names().map((n) => [n, hf.source.read(n), hf.source.info(n).shape]), dtype: 'q8_0' });
      files[`${fam}-gguf`] = gguf;
    } finally {
      hf.source.close();
    }
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

const greedy = (model: MoEDecoder): ReturnType<typeof greedyByHand> => greedyByHand(model, PROMPT, NEW);

describe('expert offload = all resident, bit for bit', () => {
  for (const key of ['olmoe-gguf', 'olmoe-hf', 'qwen3_moe-gguf', 'qwen2_moe-hf']) {
    test(`${key}: every budget and policy gives the same tokens and logits; stats add up`, async () => {
      const path = files[key]!;
      const ref = greedy((await loadLM(path)).model);
      for (const expertMemory of ['min', 0.5, 1] as const) {
        for (const policy of ['lru', 'lfu', 'pregate'] as const) {
          // 'min': exactly k slots per layer (the prompt's prefill then needs several rounds of slots)
          let mem: number = expertMemory === 'min' ? 0 : expertMemory;
          if (expertMemory === 'min') {
            const probe = await loadLM(path, { expertMemory: 1 });
            const l0 = probe.expertCache!.layers;
            mem = probe.model.config.topK * l0[0]!.expertBytes * l0.length;
            probe.expertCache!.close();
          }
          const opts: LoadLMOptions = { expertMemory: mem, expertPolicy: policy };
          const lm = await loadLM(path, opts);
          const cache = lm.expertCache!;
          const got = greedy(lm.model);
          const what = `${key} budget ${expertMemory} ${policy}`;
          assert.deepEqual(got.ids, ref.ids, `${what}: tokens differ`);
          got.logits.forEach((l, i) => assert.deepEqual(l, ref.logits[i], `${what}: logits of step ${i} differ`));
          const st = cache.stats();
          assert.equal(st.hits + st.misses, got.uses, `${what}: hits ${st.hits} + misses ${st.misses} != expert uses ${got.uses}`);
          const eb = cache.layers[0]!.expertBytes;
          assert.equal(st.bytesLoaded, (st.misses + st.prefetched + st.reloads) * eb, `${what}: bytes loaded`);
          assert.ok(st.misses > 0, `${what}: nothing was loaded`);
          if (policy !== 'pregate') assert.equal(st.prefetched, 0);
          const E = lm.model.config.numExperts;
          if (expertMemory === 1) {
            // every expert fits: each is read at most once
            assert.ok(cache.layers.every((l) => l.pool.numSlots === E && l.stats.misses <= E && l.stats.reloads === 0), `${what}: an expert was read twice with all slots`);
          } else if (expertMemory === 'min') {
            assert.ok(cache.layers.every((l) => l.pool.numSlots === lm.model.config.topK));
            assert.ok(st.hits < got.uses, `${what}: k slots cannot hit every time`);
          }
          // the resident slot memory is what the budget allows
          assert.ok(cache.residentBytes <= mem * (mem <= 1 ? cache.totalExpertBytes : 1) + 1e-6, `${what}: ${cache.residentBytes} resident bytes over the budget`);
          cache.close();
        }
      }
    });
  }
});

describe('expert offload: refusals and errors', () => {
  test('a budget below top-k experts per layer is refused, naming the numbers', async () => {
    await assert.rejects(loadLM(files['olmoe-gguf']!, { expertMemory: 0.1 }), /holds 1 experts per MoE layer .*top-4 routing needs at least 4 per layer: \d+ bytes, 25\.0% of the \d+ expert bytes/);
    assert.throws(() => slotsForBudget(0, { expertBytes: 10, moeLayers: 2, numExperts: 8, topK: 2 }), /expected bytes/);
    assert.equal(slotsForBudget(80, { expertBytes: 10, moeLayers: 2, numExperts: 8, topK: 2 }), 4); // bytes
    assert.equal(slotsForBudget(0.5, { expertBytes: 10, moeLayers: 2, numExperts: 8, topK: 2 }), 4); // fraction
    assert.equal(slotsForBudget(1e9, { expertBytes: 10, moeLayers: 2, numExperts: 8, topK: 2 }), 8); // capped at E
  });

  test('stored type != requested dtype for offloaded experts is refused; so are f16/bf16 and a policy without a budget', async () => {
    await assert.rejects(loadLM(files['olmoe-hf']!, { dtype: 'q8_0', expertMemory: 0.5 }), /stored as F32, the model holds experts as q8_0/);
    await assert.rejects(loadLM(files['olmoe-gguf']!, { dtype: 'f32', expertMemory: 0.5 }), /stored as Q8_0, the model holds experts as f32/);
    await assert.rejects(loadLM(files['olmoe-hf']!, { dtype: 'bf16', expertMemory: 0.5 }), /bf16 rounds weights at load/);
    await assert.rejects(loadLM(files['olmoe-hf']!, { expertPolicy: 'lru' }), /expertPolicy needs expertMemory/);
    await assert.rejects(loadLM(files['olmoe-hf']!, { expertMemory: 0.5, expertPolicy: 'fifo' as 'lru' }), /expert policy 'fifo' is not one of lru, lfu, pregate/);
  });

  test('a model file truncated mid-life: a clear error naming file, layer and expert, then the cache is still usable for resident experts', async () => {
    const copy = join(dir, 'trunc.gguf');
    copyFileSync(files['olmoe-gguf']!, copy);
    const lm = await loadLM(copy, { expertMemory: 0.25 });
    const m = lm.model;
    m.forward(PROMPT.subarray(0, 2), m.newCache(8));
    truncateSync(copy, Math.floor(statSync(copy).size / 3));
    // a long prompt needs every expert: some are not resident and their bytes are gone
    assert.throws(() => m.forward(PROMPT, m.newCache(64)), (e: Error) => /trunc\.gguf: expert \d+ of layer \d+, .*the file ends at byte \d+.*truncated or rewritten/.test(e.message));
    // no slot was left claiming an expert whose read failed
    for (const l of lm.expertCache!.layers) {
      for (const e of l.pool.residents()) if (e >= 0) assert.equal(l.pool.expertIn(l.pool.slot(e)), e);
    }
    lm.expertCache!.close();
    assert.throws(() => m.forward(PROMPT, m.newCache(64)), /expert cache: closed|closed/);
  });

  test('a file already too short at load is refused at load', async () => {
    const copy = join(dir, 'short.gguf');
    copyFileSync(files['olmoe-gguf']!, copy);
    truncateSync(copy, statSync(copy).size - 64);
    // the GGUF reader already checks its tensors' ranges at open
    await assert.rejects(loadLM(copy, { expertMemory: 0.5 }), /short\.gguf.*(truncated|past the end)/);
  });
});

test('--expert-memory and --expert-policy parse bytes, fractions and percentages; bad values are named', () => {
  const flags = (...a: string[]) => expertFlags(parseArgs(a, new Set()), 'generate');
  assert.deepEqual(flags('--expert-memory', '25%', '--expert-policy', 'lfu'), { expertMemory: 0.25, expertPolicy: 'lfu' });
  assert.deepEqual(flags('--expert-memory', '0.5'), { expertMemory: 0.5 });
  assert.deepEqual(flags('--expert-memory', '512M'), { expertMemory: 512 * 2 ** 20 });
  assert.deepEqual(flags('--expert-memory', '2GB'), { expertMemory: 2e9 });
  assert.deepEqual(flags('--expert-memory', '300000000'), { expertMemory: 3e8 });
  assert.deepEqual(flags(), {});
  assert.throws(() => flags('--expert-memory', '12X'), /generate: --expert-memory 12X: expected bytes/);
  assert.throws(() => flags('--expert-memory', '150%'), /--expert-memory 150%/);
  assert.throws(() => flags('--expert-memory', '0'), /--expert-memory 0/);
  assert.throws(() => flags('--expert-policy', 'lru'), /--expert-policy needs --expert-memory/);
  assert.throws(() => flags('--expert-memory', '1G', '--expert-policy', 'fifo'), /--expert-policy fifo: expected one of lru, lfu, pregate/);
});

describe('slot pool eviction order', () => {
  test('LRU evicts the least recently used unpinned slot', () => {
    const p = new SlotPool(6, 3, LRU);
    for (const e of [0, 1, 2]) p.place(e);
    p.use(0); // order of last use: 1, 2, 0
    assert.deepEqual(p.place(3), { slot: 1, evicted: 1 });
    p.use(2); // now 0, 3, 2
    assert.deepEqual(p.place(4), { slot: 0, evicted: 0 });
    p.pin(p.slot(3)); // 3 is the oldest but pinned
    assert.deepEqual(p.place(5), { slot: 2, evicted: 2 });
    assert.deepEqual(p.residents(), [4, 3, 5]);
    p.pin(0); p.pin(2);
    assert.throws(() => p.place(1), /all 3 slots are pinned/);
  });

  test('LFU evicts the least used expert, counts outlive eviction, ties go to the least recent', () => {
    const p = new SlotPool(6, 2, LFU);
    p.place(0); p.place(1);
    p.use(0); p.use(0); p.use(1); // uses: 0 -> 2, 1 -> 1
    assert.deepEqual(p.place(2), { slot: 1, evicted: 1 });
    p.use(2); // 2 -> 1 use, more recent than 0's, but 0 has 2
    assert.deepEqual(p.place(1), { slot: 1, evicted: 2 }); // 1 comes back with its old count (1)
    p.use(1); // 1 -> 2 uses: a tie with 0, and 0 is the less recent
    assert.deepEqual(p.place(3), { slot: 0, evicted: 0 });
    p.clear(1);
    assert.equal(p.slot(1), -1);
    assert.deepEqual(p.place(4), { slot: 1, evicted: -1 }); // a free slot first
  });
});

test('batched decode under a budget smaller than one step\'s distinct experts = all resident, bit for bit', async () => {
  // olmoe tiny: 16 experts top-4; 25% = 4 slots per layer, while 4 sequences route to up to 16 experts per step
  const path = files['olmoe-gguf']!;
  const ref = (await loadLM(path)).model;
  const lm = await loadLM(path, { expertMemory: 0.25, expertPolicy: 'lru' });
  try {
    const texts = ['All human beings', 'Everyone has the right', 'No one shall be held', 'Men and women of full age'].map((t) => Int32Array.from(Buffer.from(t)));
    let maxDistinct = 0;
    lm.model.onRouting = (_l, idx) => { maxDistinct = Math.max(maxDistinct, new Set(idx).size); };
    const run = (model: MoEDecoder): Float32Array[] => {
      const caches = texts.map(() => model.newCache(64));
      const out: Float32Array[] = [];
      const prompt = 6;
      for (let at = prompt; at <= 12; at++) {
        const from = at === prompt ? 0 : at - 1;
        const ys = model.forwardBatch(texts.map((t, j) => ({ ids: t.subarray(from, at), cache: caches[j]! })), 'test', { lastOnly: true });
        for (const y of ys) out.push(y.data as Float32Array);
      }
      return out;
    };
    const want = run(ref);
    const got = run(lm.model);
    assert.ok(maxDistinct > 4, `the test needs a step with more distinct experts than slots (saw ${maxDistinct})`);
    assert.equal(got.length, want.length);
    got.forEach((g, i) => assert.deepEqual(g, want[i], `step output ${i} differs`));
    const st = lm.expertCache!.stats();
    assert.ok(st.misses > 0 && st.bytesLoaded > 0, 'a budget this small must load experts');
  } finally {
    lm.expertCache!.close();
  }
});
