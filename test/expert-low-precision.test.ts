// HOBBIT's low-precision expert copies: off (or threshold 0) = the plain model bit for bit; every miss on the copies = a model whose experts are those Q4_0 copies, bit for bit;
// the default threshold keeps logits close and its counters add up; budgets are counted with the copies, and edge cases (no room for a slot, E = 1, Q4_0 files) are named.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openHFDir } from '../src/formats/hf/index.js';
import { writeGGUF } from '../src/formats/gguf/index.js';
import { writeHFDir } from '../src/formats/hf/write.js';
import { byteLevelTokenizerJson, byteLevelTokenizerConfig } from '../src/formats/hf/byte-tokenizer.js';
import { decoderConfigToHF } from '../src/models/moe-decoder-config.js';
import { createRandomHFDir, presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { loadLM, type LoadLMOptions } from '../src/models/load-lm.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import { QuantWeight, dequantize, quantize } from '../src/infer/quant/weight.js';
import { expertImportance } from '../src/infer/expert-low-precision.js';
import { Tensor } from '../src/tensor/tensor.js';
import { parseArgs } from '../src/cli/args.js';
import { expertFlags } from '../src/cli/generate-command.js';
import { textDecodeInterleaved } from '../bench/expert-cache.js';
import type { ExpertRange } from '../src/infer/expert-cache.js';
import { greedyByHand } from './greedy-by-hand.js';

const PROMPT = Int32Array.from(Buffer.from('All human beings are born free'));
const NEW = 8;

let dir: string;
const files: Record<string, string> = {};
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'moe-expert-low-'));
  // olmoe tiny: 16 experts top-4 (softmax gates, not renormalised); qwen2_moe tiny: renormalised top-k and a shared expert
  for (const fam of ['olmoe', 'qwen2_moe'] as const) {
    files[`${fam}-hf`] = join(dir, fam);
    createRandomHFDir({ family: fam, preset: 'tiny', out: files[`${fam}-hf`]!, seed: 7 });
  }
  const hf = openHFDir(files['olmoe-hf']!);
  try {
    for (const dtype of ['q8_0', 'q4_0'] as const) {
      files[`olmoe-${dtype}`] = join(dir, `olmoe-${dtype}.gguf`);
      writeGGUF(files[`olmoe-${dtype}`]!, { config: hf.config, tensors: hf.source.names().map((n) => [n, hf.source.read(n), hf.source.info(n).shape]), dtype });
    }
  } finally {
    hf.source.close();
  }
  // one expert, top-1
  const c = { ...presetConfig('olmoe', 'tiny'), numExperts: 1, topK: 1 };
  files['e1'] = join(dir, 'e1');
  mkdirSync(files['e1']);
  writeHFDir(files['e1'], {
    config: { ...decoderConfigToHF(c), bos_token_id: 256, eos_token_id: 257 }, tensors: randomHFTensors(c, 3), dtype: 'F32',
    tokenizerJson: byteLevelTokenizerJson(), tokenizerConfig: byteLevelTokenizerConfig(),
  });
});
after(() => rmSync(dir, { recursive: true, force: true }));

const greedy = (model: MoEDecoder, forced?: readonly number[]): ReturnType<typeof greedyByHand> => greedyByHand(model, PROMPT, NEW, forced);

/** The plain model with every expert stack replaced by its Q4_0 quantisation (the reference for 'every miss on the copies'). */
function q4Experts(model: MoEDecoder): void {
  for (const layer of model.layers) {
    const m = layer.moe;
    if (!m) continue;
    // a Q8_0 stack is dequantised first, as the copies are made from the file's blocks
    const q = (w: unknown): QuantWeight => (w instanceof QuantWeight ? quantize(dequantize(w), w.shape, 'q4_0') : quantize((w as Tensor).data as Float32Array, (w as Tensor).shape, 'q4_0'));
    m.setExperts(q(m.w1), q(m.w3), q(m.w2));
  }
}

/**
 * The plain model, loaded with the grouped expert path at decode: a fused decode kernel (when the
 * model has one) adds a shared expert's output in another order, so only the grouped path is the
 * same arithmetic as the offloaded one (the property is absent on models without the fused path).
 */
async function plainModel(path: string): Promise<MoEDecoder> {
  const m = (await loadLM(path)).model;
  (m as { fusedDecode?: boolean }).fusedDecode = false;
  return m;
}

/** Largest |a - b| over all steps, and the largest |ref| (the scale). */
function maxDiff(a: Float32Array[], b: Float32Array[]): { diff: number; scale: number } {
  let diff = 0;
  let scale = 0;
  a.forEach((x, i) => x.forEach((v, j) => {
    diff = Math.max(diff, Math.abs(v - b[i]![j]!));
    scale = Math.max(scale, Math.abs(b[i]![j]!));
  }));
  return { diff, scale };
}

describe('low-precision expert copies (HOBBIT)', () => {
  test('importance: k x the share of the token\'s routed weight, largest over the expert\'s rows', () => {
    // token 0: experts 2 (0.3) and 0 (0.1); token 1: experts 2 (0.2) and 1 (0.2)
    const imp = expertImportance({ tokens: 2, experts: 4, token: Int32Array.of(0, 0, 1, 1), expert: Int32Array.of(2, 0, 2, 1), gates: new Tensor(Float32Array.of(0.3, 0.1, 0.2, 0.2), [4]) });
    assert.deepEqual([...imp].map((v) => Math.round(v * 1e6) / 1e6), [0.5, 1, 1.5, 0]);
  });

  for (const key of ['olmoe-hf', 'qwen2_moe-hf', 'olmoe-q8_0']) {
    test(`${key}: off and threshold 0 = the plain model bit for bit; 'all' = Q4_0 experts bit for bit; the default stays close and counts add up`, async (t) => {
      const path = files[key]!;
      const ref = greedy(await plainModel(path));
      // Q4_0 copies of Q8_0 experts take 53% of the expert bytes: the budget must hold them and a few slots
      const mem = key === 'olmoe-q8_0' ? 0.75 : 0.5;
      let allQ4 = 0; // how far every expert on its Q4_0 copy moves the logits (teacher-forced)
      const run = async (opts: LoadLMOptions, forced?: number[]) => {
        const lm = await loadLM(path, { expertMemory: mem, ...opts });
        const got = greedy(lm.model, forced);
        const st = lm.expertCache!.stats();
        return { lm, got, st };
      };
      // off, and on with threshold 0: the same values as the plain model
      for (const opts of [{}, { expertLowPrecision: { type: 'q4_0', below: 0 } }] as LoadLMOptions[]) {
        const { lm, got, st } = await run(opts);
        assert.deepEqual(got.ids, ref.ids, `${key} ${JSON.stringify(opts)}: tokens`);
        got.logits.forEach((l, i) => assert.deepEqual(l, ref.logits[i], `${key} ${JSON.stringify(opts)}: logits of step ${i}`));
        assert.equal(st.lowPrecision, 0);
        lm.expertCache!.close();
      }
      // every miss on the copies: nothing is ever loaded, and the values are those of the experts quantised to Q4_0
      {
        const { lm, got, st } = await run({ expertLowPrecision: { type: 'q4_0', below: Infinity } });
        const plain = await plainModel(path);
        q4Experts(plain);
        const want = greedy(plain);
        allQ4 = maxDiff(greedy(plain, ref.ids).logits, ref.logits).diff;
        assert.deepEqual(got.ids, want.ids, `${key} all: tokens`);
        got.logits.forEach((l, i) => assert.deepEqual(l, want.logits[i], `${key} all: logits of step ${i} = the Q4_0-expert model`));
        assert.equal(st.hits, 0, `${key} all: nothing loaded, so nothing hits`);
        assert.equal(st.misses, got.uses);
        assert.equal(st.lowPrecision, st.misses);
        assert.equal(st.bytesLoaded, 0);
        lm.expertCache!.close();
      }
      // the default threshold (1): close to the plain model, some uses on the copies, the rest loaded
      {
        const { lm, got, st } = await run({ expertLowPrecision: { type: 'q4_0' } }, ref.ids);
        const { diff, scale } = maxDiff(got.logits, ref.logits);
        const eb = lm.expertCache!.layers[0]!.expertBytes;
        assert.equal(st.hits + st.misses, got.uses, `${key}: hits + misses = uses`);
        assert.ok(st.lowPrecision > 0 && st.lowPrecision < st.misses, `${key}: ${st.lowPrecision} of ${st.misses} misses on the copies`);
        assert.equal(st.bytesLoaded, (st.misses - st.lowPrecision) * eb, `${key}: bytes loaded = the full-precision misses`);
        assert.ok(diff > 0, `${key}: the copies were used, the logits must move`);
        t.diagnostic(`${key}, budget ${mem}: ${st.lowPrecision} of ${st.misses} misses on the copies; logits moved by at most ${diff.toFixed(4)} = ${((100 * diff) / scale).toFixed(2)}% ` +
          `of the largest |logit| ${scale.toFixed(3)} (every expert on Q4_0: ${allQ4.toFixed(4)} = ${((100 * allQ4) / scale).toFixed(2)}%)`);
        // the tolerance: 10% of the logit scale (measured 1.8-6.6%; every expert on its copy moves them 5-8%: the largest change need not be smaller for a mix)
        assert.ok(diff < 0.1 * scale, `${key}: logits moved by ${diff} (every expert Q4_0: ${allQ4}; largest |logit| ${scale})`);
        lm.expertCache!.close();
      }
    });
  }

  test('the budget holds the copies first: resident bytes, slots, one slot is enough, too little is named', async (t) => {
    const path = files['olmoe-hf']!;
    const probe = await loadLM(path, { expertMemory: 1, expertLowPrecision: { type: 'q4_0' } });
    const c = probe.expertCache!;
    const L = c.layers.length;
    const eb = c.layers[0]!.expertBytes;
    const { numExperts: E, hiddenSize: d, moeIntermediateSize: h } = probe.model.config;
    assert.equal(c.lowPrecisionBytes, L * E * 3 * (h * d / 32) * 18, 'Q4_0: 18 bytes per 32 values, all experts of all layers');
    // 100% of the expert bytes, less the copies: E - ceil(copies / expert bytes) slots
    assert.equal(c.layers[0]!.pool.numSlots, Math.floor((E * eb * L - c.lowPrecisionBytes) / (eb * L)));
    assert.ok(c.residentBytes <= c.totalExpertBytes);
    c.close();
    // the copies plus one slot per layer: runs (top-4 in rounds of one), close to the plain model
    const min = probe.expertCache!.lowPrecisionBytes + eb * L;
    const ref = greedy(await plainModel(path));
    const lm = await loadLM(path, { expertMemory: min, expertLowPrecision: { type: 'q4_0' }, expertPolicy: 'lfu' });
    assert.ok(lm.expertCache!.layers.every((l) => l.pool.numSlots === 1));
    const got = greedy(lm.model, ref.ids);
    const st = lm.expertCache!.stats();
    assert.equal(st.hits + st.misses, got.uses);
    assert.equal(st.bytesLoaded, (st.misses - st.lowPrecision) * eb);
    const { diff, scale } = maxDiff(got.logits, ref.logits);
    t.diagnostic(`one slot per layer: ${st.lowPrecision} of ${st.misses} misses on the copies; logits moved by at most ${diff.toFixed(4)} = ${((100 * diff) / scale).toFixed(2)}% of the largest |logit|`);
    assert.ok(diff < 0.1 * scale, `one slot: logits moved by ${diff} (scale ${scale})`);
    lm.expertCache!.close();
    // one byte less: no full-precision slot left, refused with the numbers
    await assert.rejects(loadLM(path, { expertMemory: min - 1, expertLowPrecision: { type: 'q4_0' } }),
      /low-precision copies of all experts take \d+ bytes .*not one full-precision slot per MoE layer.*need at least \d+ bytes/);
  });

  test('pre-gating with the copies: prefetched experts hit in full precision; with every miss on the copies, the only loads are prefetches', async () => {
    const path = files['olmoe-hf']!;
    const lm = await loadLM(path, { expertMemory: 0.5, expertPolicy: 'pregate', expertLowPrecision: { type: 'q4_0', below: Infinity } });
    const got = greedy(lm.model);
    const st = lm.expertCache!.stats();
    const eb = lm.expertCache!.layers[0]!.expertBytes;
    assert.ok(st.prefetched > 0 && st.hits > 0, 'prefetched experts are hits, in full precision');
    assert.equal(st.hits + st.misses, got.uses);
    assert.equal(st.lowPrecision, st.misses);
    assert.equal(st.bytesLoaded, st.prefetched * eb);
    lm.expertCache!.close();
  });

  test('E = 1: the only expert is always average (full precision by default); all: on its copy', async () => {
    const path = files['e1']!;
    const ref = greedy(await plainModel(path));
    const probe = await loadLM(path, { expertMemory: 1e12, expertLowPrecision: { type: 'q4_0' } });
    assert.equal(probe.expertCache!.layers[0]!.pool.numSlots, 1);
    const got = greedy(probe.model);
    assert.deepEqual(got.logits, ref.logits, 'E = 1, default threshold: the plain model');
    const st = probe.expertCache!.stats();
    assert.equal(st.lowPrecision, 0);
    assert.equal(st.misses, probe.expertCache!.layers.length, 'loaded once per layer, then hits');
    probe.expertCache!.close();
    const all = await loadLM(path, { expertMemory: 1e12, expertLowPrecision: { type: 'q4_0', below: Infinity } });
    const g2 = greedy(all.model);
    assert.equal(all.expertCache!.stats().lowPrecision, g2.uses);
    all.expertCache!.close();
    // the budget of the plain cache (one expert per layer) cannot hold the copy too
    const eb = probe.expertCache!.layers[0]!.expertBytes * probe.expertCache!.layers.length;
    await assert.rejects(loadLM(path, { expertMemory: eb, expertLowPrecision: { type: 'q4_0' } }), /not one full-precision slot/);
  });

  test('the reader thread gives the same values with the copies', async () => {
    const path = files['olmoe-q8_0']!;
    const sync = await loadLM(path, { expertMemory: 0.75, expertLowPrecision: { type: 'q4_0' } });
    const a = greedy(sync.model);
    const thread = await loadLM(path, { expertMemory: 0.75, expertLowPrecision: { type: 'q4_0' }, expertReader: 'thread' });
    thread.expertCache!.setAsyncLoads(true, { mainReads: false });
    const b = greedy(thread.model);
    assert.deepEqual(b.logits, a.logits);
    const [sa, sb] = [sync.expertCache!.stats(), thread.expertCache!.stats()];
    assert.deepEqual([sb.hits, sb.misses, sb.lowPrecision, sb.bytesLoaded], [sa.hits, sa.misses, sa.lowPrecision, sa.bytesLoaded]);
    assert.ok(sb.staged > 0, 'the reader read some experts');
    sync.expertCache!.close();
    thread.expertCache!.close();
  });

  test('background loads (reader thread): copy-computed misses are read in full into free slots; counters add up; slots hold the file\'s bytes', async (t) => {
    const path = files['olmoe-hf']!;
    const ref = greedy(await plainModel(path));
    for (const below of [1, Infinity]) {
      const lm = await loadLM(path, { expertMemory: 0.5, expertLowPrecision: { type: 'q4_0', below, background: true }, expertReader: 'thread' });
      const cache = lm.expertCache!;
      cache.setAsyncLoads(true, { mainReads: false });
      assert.equal(cache.lowPrecision!.background, true);
      const got = greedy(lm.model, ref.ids);
      const st = cache.stats();
      const eb = cache.layers[0]!.expertBytes;
      assert.ok(st.backgroundLoads > 0, `below ${below}: the reader read some copies' experts in full`);
      assert.ok(st.backgroundLoads <= st.lowPrecision);
      assert.equal(st.hits + st.misses, got.uses);
      assert.equal(st.bytesLoaded, (st.misses - st.lowPrecision + st.backgroundLoads) * eb, `below ${below}: bytes = full misses + background reads`);
      if (below === Infinity) assert.ok(st.hits > 0, 'with every miss on the copies, only background reads make hits');
      const { diff, scale } = maxDiff(got.logits, ref.logits);
      // Which experts run in full precision depends on when the reader's background reads finish
      // (one read by the end of a layer is a hit at the next step). below 1: 6.00-6.15%; below
      // Infinity (every miss on a copy): 4.9-7.2% in 46 runs (2 cores idle, and beside 1-2 busy
      // loops), once 11.0% in a full suite run, where the 10% bound failed. A mix is not bounded by
      // the all-Q4_0 drift (5.1%: perturbations that cancel in the full set need not in a subset),
      // so the bound for it is wider; the slots' bytes are checked exactly below.
      const bound = below === Infinity ? 0.15 : 0.1;
      t.diagnostic(`below ${below}: ${st.backgroundLoads} background loads, ${st.lowPrecision} of ${st.misses} misses on the copies; logits moved by ${((100 * diff) / scale).toFixed(2)}% of the largest |logit|`);
      assert.ok(diff < bound * scale, `below ${below}: logits moved by ${diff} (scale ${scale}; ${st.backgroundLoads} background loads, ${st.lowPrecision} of ${st.misses} misses on the copies)`);
      // every resident expert holds its own bytes from the file
      const fd = openSync(join(path, 'model.safetensors'), 'r');
      try {
        for (const l of cache.layers) {
          const ranges = (l as unknown as { ranges: ReadonlyArray<readonly ExpertRange[]> }).ranges;
          for (const e of l.pool.residents()) {
            if (e < 0) continue;
            for (let p = 0; p < 3; p++) {
              const r = ranges[p]![e]!;
              const want = Buffer.alloc(r.bytes);
              readSync(fd, want, 0, r.bytes, r.offset);
              assert.ok(want.equals(l.slotView(p, l.pool.slot(e))), `layer ${l.layer}: expert ${e} projection ${p}`);
            }
          }
        }
      } finally {
        closeSync(fd);
      }
      cache.close();
    }
  });

  test('refusals: a Q4_0 file, the option without a budget', async () => {
    await assert.rejects(loadLM(files['olmoe-q4_0']!, { expertMemory: 1, expertLowPrecision: { type: 'q4_0' } }), /stored as q4_0 already/);
    await assert.rejects(loadLM(files['olmoe-hf']!, { expertLowPrecision: { type: 'q4_0' } }), /expertLowPrecision needs expertMemory/);
    await assert.rejects(loadLM(files['olmoe-hf']!, { expertReader: 'thread' }), /expertReader needs expertMemory/);
  });

  test('--expert-low-precision, --expert-low-below and --expert-reader parse; bad values are named', () => {
    const f = (s: string) => expertFlags(parseArgs(s.split(' '), new Set()), 'serve');
    assert.deepEqual(f('--expert-memory 25% --expert-low-precision q4_0'), { expertMemory: 0.25, expertLowPrecision: { type: 'q4_0' } });
    assert.deepEqual(f('--expert-memory 25% --expert-low-precision q4_0 --expert-low-below all --expert-reader thread'),
      { expertMemory: 0.25, expertLowPrecision: { type: 'q4_0', below: Infinity }, expertReader: 'thread' });
    assert.deepEqual(f('--expert-memory 0.5 --expert-low-precision q4_0 --expert-low-below 0.5').expertLowPrecision, { type: 'q4_0', below: 0.5 });
    assert.deepEqual(f('--expert-memory 0.5 --expert-low-precision q4_0 --expert-low-load background').expertLowPrecision, { type: 'q4_0', background: true });
    assert.throws(() => f('--expert-memory 0.5 --expert-low-load background'), /--expert-low-load needs --expert-low-precision/);
    assert.throws(() => f('--expert-memory 0.5 --expert-low-precision q4_0 --expert-low-load soon'), /--expert-low-load soon: expected background or none/);
    assert.throws(() => f('--expert-memory 25% --expert-low-precision q8_0'), /--expert-low-precision q8_0: expected q4_0/);
    assert.throws(() => f('--expert-memory 25% --expert-low-precision q4_0 --expert-low-below -1'), /--expert-low-below -1/);
    assert.throws(() => f('--expert-memory 25% --expert-low-below 1'), /--expert-low-below needs --expert-low-precision/);
    assert.throws(() => f('--expert-low-precision q4_0'), /--expert-low-precision needs --expert-memory/);
    assert.throws(() => f('--expert-memory 25% --expert-reader async'), /--expert-reader async: expected thread or sync/);
  });

  test('bench expert-cache: the copies\' share of uses and the logit change against the interleaved all-resident run', async () => {
    const path = files['olmoe-hf']!;
    const base = await loadLM(path);
    (base.model as { fusedDecode?: boolean }).fusedDecode = false;
    const off = await loadLM(path, { expertMemory: 0.5 });
    const all = await loadLM(path, { expertMemory: 0.5, expertLowPrecision: { type: 'q4_0', below: Infinity } });
    const ids = Int32Array.from(Buffer.from('All human beings are born free and equal in dignity and rights. They are endowed with reason.'));
    const [ref, a, b] = textDecodeInterleaved([{ model: base.model, cache: null }, { model: off.model, cache: off.expertCache }, { model: all.model, cache: all.expertCache }], ids, { prefix: 4, steps: 6, batch: 2 });
    assert.equal(ref!.maxLogitDiff, null);
    assert.deepEqual([a!.maxLogitDiff, a!.top1Agreement, a!.lowPrecisionShare], [0, 1, null]);
    assert.equal(b!.lowPrecisionShare, 1);
    assert.ok(b!.maxLogitDiff! > 0);
    off.expertCache!.close();
    all.expertCache!.close();
  });
});
