// MoEDecoder with quantised weights (loadLM/fromHF dtype): q8_0/q4_0 logits near f32, KV-cached quantised
// decoding = quantised full forward, a Q8_0 GGUF = an HF dir loaded as q8_0, f16/bf16 rounding, no f32 copy kept.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../src/tensor/autograd.js';
import { Tensor } from '../src/tensor/tensor.js';
import { QuantWeight } from '../src/infer/quant/index.js';
import { openHFDir } from '../src/formats/hf/index.js';
import { writeGGUF } from '../src/formats/gguf/index.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { createRandomHFDir, presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF, toHF } from '../src/models/moe-decoder-hf.js';
import { loadLM } from '../src/models/load-lm.js';
import { MoEDecoder, decoderConfigToHF, type MoEFamily } from '../src/models/moe-decoder.js';
import type { LoadDType } from '../src/models/moe-decoder-weights.js';
import { maxDiff } from './helpers.js';

const FAMILIES: MoEFamily[] = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe'];
const IDS = Int32Array.from([256, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100]);

const build = (fam: MoEFamily, dtype: LoadDType): MoEDecoder => {
  const c = presetConfig(fam, 'tiny');
  return fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 7)), 'config.json', { dtype });
};
const logits = (m: MoEDecoder): Float32Array => noGrad(() => m.forward(IDS)).data as Float32Array;

let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'moe-quant-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

describe('quantised decoder (tiny presets)', () => {
  for (const fam of FAMILIES) {
    test(`${fam}: q8_0 and q4_0 logits near f32, q8_0 closer; cached decode = full forward; forwardBatch works`, () => {
      const ref = logits(build(fam, 'f32'));
      let rms = 0;
      for (const v of ref) rms += v * v;
      rms = Math.sqrt(rms / ref.length);
      const diffs: Record<string, number> = {};
      const means: Record<string, number> = {};
      for (const dtype of ['q8_0', 'q4_0'] as const) {
        const m = build(fam, dtype);
        // the matrices are blocks; router and norms stay float32
        const ws = new Map(m.namedWeights());
        assert.ok(ws.get('layers.0.attn.q') instanceof QuantWeight);
        assert.ok(m.embed instanceof QuantWeight);
        const moeLayer = m.layers.find((l) => l.moe)!;
        assert.ok(moeLayer.moe!.w1 instanceof QuantWeight && moeLayer.moe!.router.weight instanceof Tensor);
        const full = logits(m);
        diffs[dtype] = maxDiff(full, ref);
        means[dtype] = full.reduce((s, v, i) => s + Math.abs(v - ref[i]!), 0) / full.length;
        // KV-cached quantised decoding (prefill 5, then one token at a time) = the quantised full forward
        const cache = m.newCache(16);
        const V = m.config.vocabSize;
        let at = 0;
        for (const n of [5, 1, 1, 1, 1, 1, 1, 1]) {
          const step = m.forward(IDS.subarray(at, at + n), cache).data;
          const d = maxDiff(step, full.subarray(at * V, (at + n) * V));
          assert.ok(d < 1e-4, `${fam} ${dtype}: cached tokens ${at}..${at + n - 1} differ from the full forward by ${d}`);
          at += n;
        }
        // the batched step on quantised weights = each sequence alone
        const a = m.newCache(16);
        const b = m.newCache(16);
        m.forward(IDS.subarray(0, 4), b);
        const out = m.forwardBatch([{ ids: IDS.subarray(0, 3), cache: a }, { ids: IDS.subarray(4, 5), cache: b }]);
        const a2 = m.newCache(16);
        assert.ok(maxDiff(out[0]!.data, m.forward(IDS.subarray(0, 3), a2).data) < 1e-5);
      }
      const f = (x: number): string => x.toExponential(2);
      console.log(`  ${fam}: |logit - f32| mean/max: q8_0 ${f(means['q8_0']!)}/${f(diffs['q8_0']!)}, q4_0 ${f(means['q4_0']!)}/${f(diffs['q4_0']!)} (logit rms ${rms.toFixed(2)})`);
      // Random tiny routers sit near ties, so a rounding flips some tokens' experts (the max diff);
      // a wrong layout (transposed or misplaced experts) would move the mean by ~rms, not by a few %.
      assert.ok(means['q8_0']! > 0, 'q8_0 changed nothing: the quantised path was not used');
      assert.ok(means['q8_0']! < 0.08 * rms, `${fam}: q8_0 mean |diff| ${means['q8_0']} vs logit rms ${rms}`);
      assert.ok(means['q4_0']! < 0.5 * rms, `${fam}: q4_0 mean |diff| ${means['q4_0']} vs logit rms ${rms}`);
      assert.ok(means['q4_0']! > means['q8_0']!, `${fam}: q4_0 (${means['q4_0']}) should be further from f32 than q8_0 (${means['q8_0']})`);
    });
  }

  test('a q8_0 model holds blocks, not float32 copies: weight bytes ~ 34/128 of f32 for the quantised matrices', () => {
    const bytes = (m: MoEDecoder): number => m.namedWeights().reduce((s, [, w]) => s + (w instanceof QuantWeight ? w.bytes : w.data.byteLength), 0);
    const f = bytes(build('olmoe', 'f32'));
    const q = bytes(build('olmoe', 'q8_0'));
    assert.ok(q < 0.3 * f, `q8_0 model ${q} bytes vs f32 ${f}`);
  });

  test('f16 and bf16: every weight rounded to the type, held as float32; logits near f32', () => {
    const ref = logits(build('qwen3_moe', 'f32'));
    for (const dtype of ['f16', 'bf16'] as const) {
      const m = build('qwen3_moe', dtype);
      const q = m.layers[0]!.attn.q as Tensor;
      assert.equal(q.dtype, 'float32');
      const u = new Uint32Array((q.data as Float32Array).buffer);
      if (dtype === 'bf16') assert.ok(u.every((x) => (x & 0xffff) === 0), 'bf16: low 16 bits are zero');
      else assert.ok(u.every((x) => (x & 0x1fff) === 0 || (x & 0x7f800000) < 0x38800000), 'f16: no mantissa bits beyond 10 (normal range)');
      const d = maxDiff(logits(m), ref);
      assert.ok(d > 0 && d < 0.05, `${dtype}: max |logit diff| ${d}`);
    }
  });

  test('toHF of a q8_0 model writes the dequantised blocks; loading them again as q8_0 gives the same blocks', () => {
    const m = build('mixtral', 'q8_0');
    const { config, tensors } = toHF(m);
    const again = fromHF(config, new MemoryTensorSource(tensors), 'config.json', { dtype: 'q8_0' });
    assert.deepEqual(logits(again), logits(m));
  });
});

describe('Q8_0 GGUF vs HF directory loaded as q8_0', () => {
  for (const fam of ['qwen2_moe', 'olmoe'] as const) {
    test(`${fam}: the GGUF's blocks are kept as stored and give identical logits`, async () => {
      const hfDir = join(dir, fam);
      createRandomHFDir({ family: fam, preset: 'tiny', out: hfDir, seed: 11 });
      const hf = openHFDir(hfDir);
      const gguf = join(dir, `${fam}.gguf`);
      try {
        writeGGUF(gguf, { config: hf.config, tensors: hf.source.names().map((n) => [n, hf.source.read(n), hf.source.info(n).shape]), dtype: 'q8_0' });
      } finally {
        hf.source.close();
      }
      const a = await loadLM(hfDir, { dtype: 'q8_0' });
      const b = await loadLM(gguf, { dtype: 'q8_0' });
      assert.equal(b.source, 'gguf');
      const wa = new Map(a.model.namedWeights());
      for (const [name, w] of b.model.namedWeights()) {
        const o = wa.get(name)!;
        if (w instanceof QuantWeight) assert.deepEqual(w.data, (o as QuantWeight).data, `${name}: blocks differ`);
      }
      assert.deepEqual(logits(b.model), logits(a.model));
      // without a dtype, a GGUF whose experts are Q8_0 stays Q8_0; an HF directory loads as f32
      const d = await loadLM(gguf);
      assert.equal(d.dtype, 'q8_0');
      assert.deepEqual(logits(d.model), logits(a.model));
      assert.equal((await loadLM(hfDir)).dtype, 'f32');
      // f32 from the same GGUF dequantises the blocks: the float32 model of the q8_0 one's exact values
      const c = await loadLM(gguf, { dtype: 'f32' });
      assert.ok(c.model.embed instanceof Tensor);
      const back = toHF(a.model);
      assert.deepEqual(logits(c.model), logits(fromHF(back.config, new MemoryTensorSource(back.tensors))));
    });
  }

  test('an unknown dtype is refused, naming it', async () => {
    await assert.rejects(loadLM(dir, { dtype: 'q5_k' as LoadDType }), /dtype 'q5_k' is not one of f32, f16, bf16, q8_0, q4_0/);
  });
});
