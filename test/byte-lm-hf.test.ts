// A byte LM exported to an HF MoE layout (Mixtral or Qwen2-MoE) computes the same logits as the byte LM;
// configs no HF layout expresses are refused by name; `moe convert RUN DST` writes HF and GGUF that load.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ByteLM, type LMConfig } from '../src/models/lm.js';
import { byteLMToHF } from '../src/models/byte-lm-hf.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { Tensor } from '../src/tensor/tensor.js';
import { noGrad } from '../src/tensor/autograd.js';
import { Rng } from '../src/tensor/rng.js';
import { validateRun } from '../src/config/run.js';
import { buildModel } from '../src/models/registry.js';
import { saveCheckpoint } from '../src/models/checkpoint.js';
import { loadLM } from '../src/models/load-lm.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import { quantPerplexity, summarise } from '../bench/quant-perplexity.js';
import { runTraining } from '../src/train/run.js';
import { loadCheckpoint } from '../src/models/checkpoint.js';
import { expertTokenCountsOf } from '../src/models/expert-token-counts.js';
import type { TrainerState } from '../src/train/trainer.js';

const BASE: Partial<LMConfig> = {
  dModel: 32, heads: 4, layers: 2, maxSeqLen: 32, numExperts: 4, k: 2, dFF: 24, activation: 'swiglu', attentionBias: false,
};

function ids(T: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  return Int32Array.from({ length: T }, () => rng.int(256));
}

/** Largest |a - b| relative to the largest |a|. */
function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0, s = 0;
  for (let i = 0; i < a.length; i++) { m = Math.max(m, Math.abs(a[i]! - b[i]!)); s = Math.max(s, Math.abs(a[i]!)); }
  return m / s;
}

function byteLogits(m: ByteLM, x: Int32Array): Float32Array {
  m.eval();
  return noGrad(() => m.forward(new Tensor(x, [1, x.length])).logits.data as Float32Array);
}

function decoderLogits(d: MoEDecoder, x: Int32Array): Float32Array {
  return noGrad(() => d.forward(x).data as Float32Array);
}

function exported(cfg: Partial<LMConfig>, seed = 3): { lm: ByteLM; dec: MoEDecoder; family: string; warnings: string[] } {
  const lm = new ByteLM({ ...BASE, ...cfg }, seed);
  // random-init router weights are tiny: scale them so the top-k choice is not a near-tie everywhere
  for (const l of lm.moeLayers()) {
    const w = (l.router as unknown as { weight: Tensor }).weight.data as Float32Array;
    for (let i = 0; i < w.length; i++) w[i] = w[i]! * 20;
  }
  const x = byteLMToHF(lm);
  const dec = fromHF(x.config, new MemoryTensorSource(x.tensors));
  return { lm, dec, family: String(x.config.model_type), warnings: x.warnings };
}

const cases: Array<[string, Partial<LMConfig>, string]> = [
  ['top-2, renormalised, untied', {}, 'mixtral'],
  ['top-2, tied embeddings', { tieEmbeddings: true }, 'mixtral'],
  ['k = E', { k: 4 }, 'mixtral'],
  ['topk-softmax order', { router: { type: 'topk', order: 'topk-softmax' } }, 'mixtral'],
  ['E = 1, k = 1 (gate not renormalised)', { numExperts: 1, k: 1 }, 'qwen2_moe'],
  ['switch (k = 1, gate = p)', { router: { type: 'switch' } }, 'qwen2_moe'],
  ['top-2 without renormalising', { router: { type: 'topk', normalize: false } }, 'qwen2_moe'],
  ['every other block dense', { layers: 3, moeEvery: 2 }, 'qwen2_moe'],
];

for (const [name, cfg, family] of cases) {
  test(`byteLMToHF: ${name} -> ${family}, the same logits (T = 1 and T = 20)`, () => {
    const { lm, dec, family: got } = exported(cfg);
    assert.equal(got, family);
    for (const T of [1, 20]) {
      const x = ids(T, T);
      const e = relErr(byteLogits(lm, x), decoderLogits(dec, x));
      assert.ok(e < 2e-5, `T = ${T}: relative error ${e}`);
    }
  });
}

test('byteLMToHF: the KV-cached decoder continues as the byte LM does (greedy)', () => {
  const { lm, dec } = exported({});
  const x = ids(6, 9);
  const cache = dec.newCache(32);
  const seq = Array.from(x);
  noGrad(() => {
    let logits = dec.forward(x, cache);
    for (let i = 0; i < 8; i++) {
      const last = (logits.data as Float32Array).subarray((logits.shape[0]! - 1) * 256);
      const ref = byteLogits(lm, Int32Array.from(seq)).subarray((seq.length - 1) * 256);
      assert.ok(relErr(ref, last) < 2e-5, `step ${i}`);
      const next = ref.indexOf(Math.max(...ref));
      seq.push(next);
      logits = dec.forward(Int32Array.of(next), cache);
    }
  });
});

test('byteLMToHF refuses what no HF MoE layout expresses, naming the field', () => {
  const refused: Array<[Partial<LMConfig>, RegExp]> = [
    [{ attentionBias: true }, /model\.attentionBias is true/],
    [{ norm: 'layer' }, /model\.norm is 'layer'/],
    [{ positions: 'learned' }, /model\.positions is 'learned'/],
    [{ activation: 'gelu' }, /model\.activation is 'gelu'/],
    [{ ffn: 'dense' }, /model\.ffn is 'dense'/],
    [{ router: { type: 'hash' } }, /model\.router of block 0 is 'hash'/],
    [{ attention: { type: 'switchhead' }, attentionBias: false }, /model\.attention is/],
  ];
  for (const [cfg, re] of refused) {
    assert.throws(() => byteLMToHF(new ByteLM({ ...BASE, ...cfg }, 1)), re, JSON.stringify(cfg));
  }
});

test('byteLMToHF --arch: qwen2_moe on request; mixtral only where it fits; qwen3_moe, olmoe refused', () => {
  const lm = new ByteLM(BASE, 2);
  assert.equal(byteLMToHF(lm).config.model_type, 'mixtral');
  const q = byteLMToHF(lm, { family: 'qwen2_moe' });
  assert.equal(q.config.model_type, 'qwen2_moe');
  const x = ids(10, 4);
  assert.ok(relErr(byteLogits(lm, x), decoderLogits(fromHF(q.config, new MemoryTensorSource(q.tensors)), x)) < 2e-5);
  assert.throws(() => byteLMToHF(new ByteLM({ ...BASE, layers: 2, moeEvery: 2 }, 1), { family: 'mixtral' }), /model\.moeEvery gives dense blocks \(0\)/);
  assert.throws(() => byteLMToHF(new ByteLM({ ...BASE, router: { type: 'switch' } }, 1), { family: 'mixtral' }), /does not renormalise the top-k gates/);
  for (const f of ['qwen3_moe', 'olmoe']) assert.throws(() => byteLMToHF(lm, { family: f }), /normalises queries and keys/);
  assert.throws(() => byteLMToHF(lm, { family: 'llama' }), /--arch llama cannot hold a byte LM; use mixtral or qwen2_moe/);
});

test('byteLMToHF warns that an evaluation capacity factor is dropped', () => {
  const { warnings } = exported({ capacityFactor: 1.0 });
  assert.equal(warnings.length, 2);
  assert.match(warnings[0]!, /block 0 drops tokens over an evaluation capacity factor of 1/);
});

test('moe convert RUN DST: HF (F32: the byte LM\'s logits) and GGUF Q8_0 that load and generate', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-bytelm-hf-'));
  try {
    const config = validateRun({ model: { type: 'byte-lm', ...BASE }, data: { dataset: 'udhr' } });
    const { model } = buildModel(config.model, config.train.seed);
    const run = join(dir, 'run');
    saveCheckpoint(join(run, 'checkpoint'), { model, config });
    const cli = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
    const out = execFileSync(process.execPath, [cli, 'convert', run, join(dir, 'hf'), '--format', 'hf', '--json'], { encoding: 'utf8' });
    assert.equal(JSON.parse(out.trim().split('\n').at(-1)!).modelType, 'mixtral');
    const tok = JSON.parse(readFileSync(join(dir, 'hf', 'tokenizer.json'), 'utf8')) as { added_tokens: unknown[]; model: { vocab: Record<string, number> } };
    assert.equal(tok.added_tokens.length, 0);
    assert.equal(Object.keys(tok.model.vocab).length, 256);
    const hf = await loadLM(join(dir, 'hf'), {});
    const x = ids(12, 5);
    assert.ok(relErr(byteLogits(model as ByteLM, x), decoderLogits(hf.model, x)) < 2e-5);
    execFileSync(process.execPath, [cli, 'convert', run, join(dir, 'q8.gguf'), '--format', 'gguf', '--dtype', 'q8_0'], { encoding: 'utf8' });
    const q8 = await loadLM(join(dir, 'q8.gguf'), {});
    const e = relErr(byteLogits(model as ByteLM, x), decoderLogits(q8.model, x));
    assert.ok(e > 0 && e < 0.05, `Q8_0 relative error ${e}`);
    execFileSync(process.execPath, [cli, 'convert', run, join(dir, 'qw'), '--format', 'hf', '--arch', 'qwen2_moe'], { encoding: 'utf8' });
    assert.equal(JSON.parse(readFileSync(join(dir, 'qw', 'config.json'), 'utf8')).model_type, 'qwen2_moe');
    assert.throws(() => execFileSync(process.execPath, [cli, 'convert', join(dir, 'hf'), join(dir, 'y'), '--format', 'hf', '--arch', 'qwen2_moe'], { encoding: 'utf8', stdio: 'pipe' }),
      /--arch applies to a moe-ts run as SRC/);
    // not a byte LM run: named
    const other = join(dir, 'other');
    const cls = validateRun({ model: { type: 'softmoe-classifier', numExperts: 2 }, data: { dataset: 'fashion-mnist' } });
    saveCheckpoint(other, { model: buildModel(cls.model, 0).model, config: cls });
    assert.throws(() => execFileSync(process.execPath, [cli, 'convert', other, join(dir, 'x'), '--format', 'hf'], { encoding: 'utf8', stdio: 'pipe' }),
      /only byte-lm runs have an HF MoE layout/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('quant-perplexity: the f32 export scores the held-out bytes as the byte LM does; q8_0 and q4_0 move it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-bytelm-ppl-'));
  try {
    const config = validateRun({ model: { type: 'byte-lm', ...BASE }, data: { dataset: 'udhr', maxLanguages: 2, testFraction: 0.1, seqLen: 32 } });
    const { model } = buildModel(config.model, config.train.seed);
    saveCheckpoint(join(dir, 'checkpoint'), { model, config });
    const rows = await quantPerplexity({ run: dir, dtypes: ['f32', 'q8_0', 'q4_0'], maxBytes: 200 });
    assert.equal(rows.length, 4 * 2);
    const s = new Map(summarise(rows).map((r) => [r.dtype, r]));
    const lmBits = s.get('byte-lm')!.bitsPerByte, f32 = s.get('f32')!.bitsPerByte;
    // an untrained model: about log2(256) = 8 bits per byte
    assert.ok(lmBits > 6 && lmBits < 10, `byte LM ${lmBits} bits/byte`);
    assert.ok(Math.abs(f32 - lmBits) / lmBits < 1e-5, `f32 export ${f32} vs byte LM ${lmBits}`);
    for (const q of ['q8_0', 'q4_0']) assert.notEqual(s.get(q)!.bitsPerByte, f32, q);
    assert.ok(rows.every((r) => r.bytes > 100 && r.bytes <= 199), JSON.stringify(rows.map((r) => r.bytes)));
    await assert.rejects(quantPerplexity({ run: dir, dtypes: ['f32'], languages: ['xx_none'] }), /language xx_none is not one the run trained on/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('moe train keeps per-expert training token counts in its checkpoint (a resume adds up); moe convert writes them to config.json', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-bytelm-counts-'));
  try {
    const config = validateRun({
      model: { type: 'byte-lm', ...BASE, layers: 3, moeEvery: 2 },
      data: { dataset: 'udhr', maxLanguages: 2, seqLen: 16, stepsPerEpoch: 3, evalWindows: 2 },
      train: { epochs: 1, batchSize: 2, seed: 1, evalEvery: 0 },
    });
    const run = join(dir, 'run');
    await runTraining(config, { out: run, progress: null });
    const counted = (): NonNullable<TrainerState['expertTokenCounts']> => (loadCheckpoint(join(run, 'checkpoint')).trainerState as TrainerState).expertTokenCounts!;
    const one = counted();
    // 3 steps of 2 windows of 16 bytes: 96 tokens; block 1 is the only MoE block; top-2, dropless
    assert.equal(one.tokens, 96);
    assert.deepEqual(Object.keys(one.layers), ['blocks.1.moe']);
    assert.equal(one.layers['blocks.1.moe']!.reduce((a, b) => a + b, 0), 2 * 96);
    await runTraining({ ...config, train: { ...config.train, epochs: 2 } }, { out: run, resume: run, progress: null });
    const two = counted();
    assert.equal(two.tokens, 192);
    assert.equal(two.layers['blocks.1.moe']!.reduce((a, b) => a + b, 0), 2 * 192);
    assert.ok(two.layers['blocks.1.moe']!.every((c, e) => c >= one.layers['blocks.1.moe']![e]!));
    const cli = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
    execFileSync(process.execPath, [cli, 'convert', run, join(dir, 'hf'), '--format', 'hf'], { encoding: 'utf8' });
    const hf = await loadLM(join(dir, 'hf'), {});
    assert.deepEqual(expertTokenCountsOf(hf.model), { tokens: 192, layers: [null, two.layers['blocks.1.moe'], null] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
