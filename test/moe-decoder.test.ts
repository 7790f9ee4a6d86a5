// MoE decoder: logits and routing against the plain-PyTorch reference (reference/moe_decoder_fixture.py) for all four
// families, KV-cached decoding against the full forward, decode reading only the chosen experts, edge cases and errors.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../src/tensor/autograd.js';
import { crossEntropy } from '../src/ops/index.js';
import { openHFDir } from '../src/formats/hf/index.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { createRandomHFDir, presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { MoEDecoder, decoderConfigToHF, type MoEDecoderConfig, type MoEFamily } from '../src/models/moe-decoder.js';
import { maxDiff } from './helpers.js';

const FAMILIES: MoEFamily[] = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe'];

interface Fixture {
  arch: MoEFamily;
  seed: number;
  weightsSha256: string;
  ids: number[];
  shape: [number, number];
  logits: number[];
  routing: Array<{ layer: number; indices: number[]; weights: number[] }>;
}

const fixture = (arch: string): Fixture =>
  JSON.parse(readFileSync(new URL(`../../test/fixtures/moe-decoder/${arch}.json`, import.meta.url), 'utf8')) as Fixture;

/** A model from random HF tensors held in memory (no files): the path fromHF takes for any source. */
function memoryModel(c: MoEDecoderConfig, seed = 3): MoEDecoder {
  return fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, seed)));
}

let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'moe-decoder-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

describe('MoE decoder vs PyTorch (tiny presets, seed from the fixture)', () => {
  for (const fam of FAMILIES) {
    test(`${fam}: logits within 1e-4, same experts, gates within 1e-5`, () => {
      const fx = fixture(fam);
      const out = join(dir, `fx-${fam}`);
      createRandomHFDir({ family: fam, preset: 'tiny', out, seed: fx.seed });
      const sha = createHash('sha256').update(readFileSync(join(out, 'model.safetensors'))).digest('hex');
      assert.equal(sha, fx.weightsSha256, 'moe create no longer writes the weights the fixture was made from: rerun reference/moe_decoder_fixture.py');
      const hf = openHFDir(out);
      const model = fromHF(hf.config, hf.source);
      hf.source.close();
      const routes: Fixture['routing'] = [];
      model.onRouting = (layer, idx, w) => routes.push({ layer, indices: Array.from(idx), weights: Array.from(w) });
      const logits = noGrad(() => model.forward(Int32Array.from(fx.ids)));
      assert.deepEqual(logits.shape, fx.shape);
      const d = maxDiff(logits.data, fx.logits);
      console.log(`  ${fam}: max |logit - torch| = ${d.toExponential(2)}`);
      assert.ok(d < 1e-4, `${fam}: max |logit diff| ${d}`);
      assert.equal(routes.length, fx.routing.length);
      for (const [i, r] of fx.routing.entries()) {
        assert.equal(routes[i]!.layer, r.layer);
        assert.deepEqual(routes[i]!.indices, r.indices, `${fam} layer ${r.layer}: chosen experts`);
        assert.ok(maxDiff(routes[i]!.weights, r.weights) < 1e-5, `${fam} layer ${r.layer}: gate weights`);
      }
    });
  }
});

describe('KV cache', () => {
  for (const fam of FAMILIES) {
    test(`${fam}: prefill + one-token decode steps give the full forward's logits`, () => {
      const model = memoryModel(presetConfig(fam, 'tiny'));
      const ids = Int32Array.from([256, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100]);
      const full = noGrad(() => model.forward(ids)).data;
      const V = model.config.vocabSize;
      for (const split of [[5, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [7, 3, 2], [12]]) {
        const cache = model.newCache(16);
        let at = 0;
        for (const n of split) {
          const step = model.forward(ids.subarray(at, at + n), cache);
          assert.deepEqual(step.shape, [n, V]);
          const d = maxDiff(step.data, full.subarray(at * V, (at + n) * V));
          assert.ok(d < 2e-5, `${fam} split ${split.join('+')}: tokens ${at}..${at + n - 1} differ by ${d}`);
          at += n;
        }
        assert.equal(cache.length, ids.length);
      }
    });
  }

  test('sigmoid group-limited routing (DeepSeek-V3 style) decodes like its full forward', () => {
    const c: MoEDecoderConfig = { ...presetConfig('mixtral', 'tiny'), router: { type: 'sigmoid-group', groups: 4, topkGroups: 2, routedScaling: 2.5, normTopkProb: true } };
    const model = new MoEDecoder(c);
    const src = memoryModel(presetConfig('mixtral', 'tiny'));
    const theirs = new Map(src.namedParameters());
    for (const [name, p] of model.namedParameters()) p.data.set(theirs.get(name)!.data);
    const ids = Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const full = noGrad(() => model.forward(ids)).data;
    const cache = model.newCache(8);
    model.forward(ids.subarray(0, 5), cache);
    const last = model.forward(ids.subarray(5, 8), cache);
    assert.ok(maxDiff(last.data, full.subarray(5 * c.vocabSize)) < 2e-5);
    assert.throws(() => decoderConfigToHF(c), /sigmoid-group/);
  });

  test('errors: full cache, wrong cache shape, token out of range; empty input is empty logits', () => {
    const model = memoryModel(presetConfig('olmoe', 'tiny'));
    const cache = model.newCache(4);
    model.forward(Int32Array.from([1, 2, 3]), cache);
    assert.throws(() => model.forward(Int32Array.from([4, 5]), cache), /KVCache: full: 3 positions held, 2 more do not fit in maxLen = 4/);
    assert.equal(cache.length, 3, 'a refused step leaves the cache as it was');
    cache.reset();
    assert.equal(cache.length, 0);
    const other = memoryModel(presetConfig('qwen3_moe', 'tiny'));
    assert.throws(() => other.forward(Int32Array.from([1]), cache), /cache is for 4 layers x 4 kv heads x 16/);
    assert.throws(() => model.forward(Int32Array.from([1, 261])), /token id \(vocabulary of 261\) 261 at position 1 is out of range/);
    assert.deepEqual(model.forward(new Int32Array(0)).shape, [0, 261]);
    assert.equal(cache.bytes(), 2 * 4 * 4 * 4 * 16 * 4);
  });
});

describe('edge cases of routing', () => {
  test('one expert (E = 1, k = 1) equals a dense SwiGLU layer with the same weights', () => {
    const base = presetConfig('qwen3_moe', 'tiny');
    const moeCfg: MoEDecoderConfig = { ...base, numExperts: 1, topK: 1, denseLayers: [], denseIntermediateSize: 0 };
    const denseCfg: MoEDecoderConfig = { ...moeCfg, denseLayers: [0, 1, 2, 3], denseIntermediateSize: base.moeIntermediateSize };
    const a = memoryModel(moeCfg);
    const b = new MoEDecoder(denseCfg);
    const pa = new Map(a.namedParameters());
    for (const [name, p] of b.namedParameters()) if (pa.has(name)) p.data.set(pa.get(name)!.data);
    const d = base.hiddenSize;
    const h = base.moeIntermediateSize;
    for (const [l, layer] of b.layers.entries()) {
      const moe = a.layers[l]!.moe!;
      const mlp = layer.mlp!;
      // stacked [1, out, in] = HF [out, in]
      assert.deepEqual([moe.w1.shape, moe.w3.shape, moe.w2.shape], [[1, h, d], [1, h, d], [1, d, h]]);
      mlp.gate.data.set(moe.w1.data);
      mlp.up.data.set(moe.w3.data);
      mlp.down.data.set(moe.w2.data);
    }
    const ids = Int32Array.from([3, 1, 4, 1, 5, 9]);
    assert.ok(maxDiff(noGrad(() => a.forward(ids)).data, noGrad(() => b.forward(ids)).data) < 1e-5);
  });

  test('every expert chosen (k = E): gates sum to 1 and cached decoding matches', () => {
    const c: MoEDecoderConfig = { ...presetConfig('mixtral', 'tiny'), numExperts: 4, topK: 4 };
    const model = memoryModel(c);
    const sums: number[] = [];
    model.onRouting = (_l, idx, w) => {
      assert.equal(idx.length % 4, 0);
      for (let t = 0; t < w.length / 4; t++) sums.push(w[4 * t]! + w[4 * t + 1]! + w[4 * t + 2]! + w[4 * t + 3]!);
    };
    const ids = Int32Array.from([7, 8, 9, 10, 11]);
    const full = noGrad(() => model.forward(ids)).data;
    assert.equal(sums.length, ids.length * model.layers.filter((l) => l.moe).length, 'the routing hook saw every token of every MoE layer');
    assert.ok(sums.every((s) => Math.abs(s - 1) < 1e-6));
    const cache = model.newCache(8);
    model.forward(ids.subarray(0, 2), cache);
    model.forward(ids.subarray(2, 4), cache);
    assert.ok(maxDiff(model.forward(ids.subarray(4), cache).data, full.subarray(4 * c.vocabSize)) < 2e-5);
  });
});

describe('decode reads only the chosen experts', () => {
  for (const fam of ['mixtral', 'olmoe'] as const) {
    test(`${fam}: poisoning every expert a token did not choose (NaN) leaves its logits unchanged`, () => {
      const model = memoryModel(presetConfig(fam, 'tiny'));
      const chosen = new Map<number, Set<number>>();
      model.onRouting = (layer, idx) => chosen.set(layer, new Set(idx));
      const ids = Int32Array.from([42]);
      const before = Float32Array.from(noGrad(() => model.forward(ids)).data);
      for (const layer of model.layers) {
        const moe = layer.moe!;
        const E = moe.numExperts;
        for (const w of [moe.w1, moe.w2, moe.w3]) {
          const per = w.size / E;
          for (let e = 0; e < E; e++) if (!chosen.get(layer.index)!.has(e)) w.data.fill(NaN, e * per, (e + 1) * per);
        }
      }
      const after = model.forward(ids, model.newCache(4)).data;
      assert.equal(maxDiff(after, before), 0);
    });
  }
});

test('training is possible: the graph reaches every parameter with finite gradients', () => {
  const model = memoryModel(presetConfig('qwen2_moe', 'tiny'));
  const ids = Int32Array.from([256, 5, 6, 7, 8, 9]);
  const logits = model.forward(ids.subarray(0, 5));
  // the recorded path (ops, separate q/k/v products) and the inference path (fused rotary loop, one
  // qkv product) agree to float32 rounding: the fused product's GEMM blocks its sums differently
  const scale = Math.max(1, ...Array.from(logits.data, Math.abs));
  const d = maxDiff(logits.data, noGrad(() => model.forward(ids.subarray(0, 5))).data);
  assert.ok(d < 2e-6 * scale, `recorded and inference paths differ by ${d} (logits up to ${scale})`);
  const loss = crossEntropy(logits, ids.subarray(1));
  loss.backward();
  for (const [name, p] of model.namedParameters()) {
    assert.ok(p.grad, `${name} has no gradient`);
    assert.ok(Array.from(p.grad.data).every(Number.isFinite), `${name}: non-finite gradient`);
  }
});
