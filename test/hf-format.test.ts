// HF checkpoints: bit-exact round trips HF -> moe -> HF, deterministic `moe create`, shards, F16/BF16, and bad files
// (truncated shard, missing index entry, wrong shape, unknown model_type) reported with file and tensor.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../src/tensor/autograd.js';
import { openHFDir, writeHFDir, SafetensorsSource } from '../src/formats/hf/index.js';
import { floatToBF16, floatToF16 } from '../src/formats/hf/encode.js';
import { createRandomHFDir, parameterCount, presetConfig } from '../src/models/moe-decoder-create.js';
import { fromHF, toHF } from '../src/models/moe-decoder-hf.js';
import { loadLM } from '../src/models/load-lm.js';
import { writeGGUF } from '../src/formats/gguf/index.js';
import { run } from '../src/cli/cli.js';
import type { MoEFamily } from '../src/models/moe-decoder.js';

const FAMILIES: MoEFamily[] = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe'];
let root: string;
before(() => { root = mkdtempSync(join(tmpdir(), 'moe-hf-')); });
after(() => rmSync(root, { recursive: true, force: true }));

const sub = (name: string): string => join(root, name);
const readAll = (dir: string): Map<string, { shape: number[]; data: Float32Array }> => {
  const hf = openHFDir(dir);
  const out = new Map(hf.source.names().map((n) => [n, { shape: hf.source.info(n).shape, data: hf.source.read(n) }]));
  hf.source.close();
  return out;
};
const bitsEqual = (a: Float32Array, b: Float32Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('round trip HF -> moe -> HF', () => {
  for (const fam of FAMILIES) {
    test(`${fam}: every tensor bit-exact, same names and shapes, config.json unchanged`, () => {
      const a = sub(`rt-a-${fam}`);
      const b = sub(`rt-b-${fam}`);
      createRandomHFDir({ family: fam, preset: 'tiny', out: a, seed: 7 });
      const hf = openHFDir(a);
      const model = fromHF(hf.config, hf.source);
      hf.source.close();
      mkdirSync(b);
      writeHFDir(b, { ...toHF(model), dtype: 'F32' });
      const ta = readAll(a);
      const tb = readAll(b);
      assert.deepEqual([...tb.keys()].sort(), [...ta.keys()].sort());
      for (const [name, t] of ta) {
        assert.deepEqual(tb.get(name)!.shape, t.shape, name);
        assert.ok(bitsEqual(tb.get(name)!.data, t.data), `${name} differs`);
      }
      assert.equal(readFileSync(join(b, 'config.json'), 'utf8'), readFileSync(join(a, 'config.json'), 'utf8'));
    });
  }
});

describe('moe create', () => {
  test('same seed -> same bytes in every file; another seed -> other weights', () => {
    const x = sub('seed-x');
    const y = sub('seed-y');
    const z = sub('seed-z');
    createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: x, seed: 11 });
    createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: y, seed: 11 });
    createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: z, seed: 12 });
    const files = readdirSync(x).sort();
    assert.deepEqual(files, ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    assert.deepEqual(readdirSync(y).sort(), files);
    for (const f of files) assert.ok(readFileSync(join(x, f)).equals(readFileSync(join(y, f))), `${f} differs between two runs with seed 11`);
    assert.ok(!readFileSync(join(x, 'model.safetensors')).equals(readFileSync(join(z, 'model.safetensors'))));
  });

  test('preset sizes: tiny ~1M, small ~100M, 1b ~1B parameters (from the configs, nothing written)', () => {
    for (const fam of FAMILIES) {
      const [t, s, b] = (['tiny', 'small', '1b'] as const).map((p) => parameterCount(presetConfig(fam, p)));
      assert.ok(t > 0.5e6 && t < 1.5e6, `${fam} tiny: ${t}`);
      assert.ok(s > 0.8e8 && s < 1.3e8, `${fam} small: ${s}`);
      assert.ok(b > 0.8e9 && b < 1.3e9, `${fam} 1b: ${b}`);
      const c = presetConfig(fam, '1b');
      assert.equal(c.numExperts, 64);
      assert.equal(c.topK, 8);
    }
  });

  test('the CLI names what is wrong', async () => {
    const err: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => { err.push(String(s)); return true; }) as typeof process.stderr.write;
    try {
      assert.equal(await run(['create', '--arch', 'llama', '--preset', 'tiny', '--out', sub('cli')]), 2);
      assert.equal(await run(['create', '--arch', 'olmoe', '--preset', 'huge', '--out', sub('cli')]), 2);
      assert.equal(await run(['create', '--arch', 'olmoe', '--preset', 'tiny']), 2);
    } finally {
      process.stderr.write = write;
    }
    assert.match(err[0]!, /--arch 'llama' is not one of mixtral, qwen2_moe, qwen3_moe, olmoe/);
    assert.match(err[1]!, /--preset 'huge' is not one of tiny, small, 1b/);
    assert.match(err[2]!, /--out is required/);
  });
});

describe('shards and element types', () => {
  test('sharded output (index + shards) loads to the same logits; a later single-file write removes the stale shards', async () => {
    const a = sub('shard-src');
    createRandomHFDir({ family: 'qwen2_moe', preset: 'tiny', out: a, seed: 5 });
    const ref = await loadLM(a);
    assert.equal(ref.source, 'hf');
    assert.ok(ref.tokenizerJson && ref.tokenizerConfig);
    const s = sub('shard-out');
    mkdirSync(s);
    const res = writeHFDir(s, { ...toHF(ref.model), maxShardBytes: 1 << 20 });
    assert.ok(res.files.length >= 3, `${res.files.length} shards`);
    const index = JSON.parse(readFileSync(join(s, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    assert.equal(index.metadata.total_size, res.totalBytes);
    assert.equal(Object.keys(index.weight_map).length, res.tensorCount);
    for (const f of res.files) assert.ok(statSync(f).size <= (1 << 20) + 64 * 1024, `${f} too large`);
    const sharded = await loadLM(s);
    const ids = Int32Array.from([256, 1, 2, 3, 4]);
    const l1 = noGrad(() => ref.model.forward(ids)).data;
    const l2 = noGrad(() => sharded.model.forward(ids)).data;
    assert.deepEqual(Array.from(l2), Array.from(l1));
    writeHFDir(s, toHF(sharded.model));
    assert.deepEqual(readdirSync(s).sort(), ['config.json', 'model.safetensors']);
  });

  test('F16 and BF16: each stored value is the nearest representable one (ties even); overflow, NaN, subnormals', () => {
    const vals = new Float32Array(4000);
    let s = 1;
    for (let i = 0; i < vals.length; i++) { s = (s * 16807) % 2147483647; vals[i] = ((s / 2147483647) - 0.5) * Math.pow(2, (i % 60) - 30); }
    vals.set([0, -0, 1, 65504, 65520, 1e6, -1e6, 6e-8, 3e-8, 2.98e-8, 1 + 2 ** -11, 1 + 3 * 2 ** -11, NaN, Infinity, -Infinity], 0);
    const d = sub('dtype');
    mkdirSync(d);
    for (const dtype of ['F16', 'BF16'] as const) {
      writeHFDir(d, { config: { model_type: 'olmoe' }, tensors: [['x', vals, [vals.length]]], dtype });
      const src = SafetensorsSource.openDir(d);
      assert.equal(src.info('x').dtype, dtype);
      const got = src.read('x');
      src.close();
      // neighbours of the stored bit pattern, decoded through the same reader: the stored value must be at least as close
      const dv = new DataView(new ArrayBuffer(2));
      const decode = (bits: number): number => {
        if (dtype === 'BF16') return new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
        const sign = bits & 0x8000 ? -1 : 1; const e = (bits >> 10) & 0x1f; const f = bits & 0x3ff;
        return e === 0 ? sign * f * 2 ** -24 : e === 31 ? (f ? NaN : sign * Infinity) : sign * (1 + f / 1024) * 2 ** (e - 15);
      };
      const enc = dtype === 'F16' ? floatToF16 : floatToBF16;
      for (let i = 0; i < vals.length; i++) {
        const v = vals[i]!;
        if (Number.isNaN(v)) { assert.ok(Number.isNaN(got[i]!), `${dtype} NaN`); continue; }
        const bits = enc(v);
        dv.setUint16(0, bits);
        assert.equal(Object.is(got[i], decode(bits)) || got[i] === decode(bits), true, `${dtype} ${v}: reader and encoder disagree`);
        if (!Number.isFinite(got[i]!)) {
          assert.ok(Math.abs(v) >= (dtype === 'F16' ? 65520 : 3.3961e38) || !Number.isFinite(v), `${dtype} ${v} overflowed to ${got[i]}`);
          continue;
        }
        for (const nb of [bits - 1, bits + 1]) {
          const w = decode(nb & 0xffff);
          if (!Number.isFinite(w) || (nb & 0x7fff) === 0x7fff) continue;
          const dg = Math.abs(got[i]! - v);
          const dn = Math.abs(w - v);
          assert.ok(dg < dn || (dg === dn && (bits & 1) === 0), `${dtype}: ${v} stored as ${got[i]}, but ${w} is nearer`);
        }
      }
    }
  });

  test('a model loaded from BF16 weights runs and stays close to F32', () => {
    const a = sub('bf16-src');
    createRandomHFDir({ family: 'mixtral', preset: 'tiny', out: a, seed: 2 });
    const hf = openHFDir(a);
    const m32 = fromHF(hf.config, hf.source);
    hf.source.close();
    const b = sub('bf16-out');
    mkdirSync(b);
    writeHFDir(b, { ...toHF(m32), dtype: 'BF16' });
    const hb = openHFDir(b);
    const m16 = fromHF(hb.config, hb.source);
    hb.source.close();
    const ids = Int32Array.from([256, 10, 20, 30]);
    const x = noGrad(() => m32.forward(ids)).data;
    const y = noGrad(() => m16.forward(ids)).data;
    let m = 0;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
    assert.ok(m > 0 && m < 0.25, `BF16 vs F32 max diff ${m}`);
  });
});

describe('bad files name the file and the tensor', () => {
  const fresh = (name: string): string => {
    const d = sub(name);
    createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: d, seed: 3 });
    return d;
  };

  test('truncated shard', () => {
    const d = fresh('bad-trunc');
    const f = join(d, 'model.safetensors');
    truncateSync(f, statSync(f).size - 100);
    assert.throws(() => openHFDir(d), (e: Error) => e.message.includes(f) && /tensor "lm_head.weight": data_offsets .* run past the end of the data/.test(e.message));
  });

  test('missing index entry, and an index naming a missing shard', () => {
    const d = sub('bad-index');
    mkdirSync(d);
    const hf = openHFDir(fresh('bad-index-src'));
    writeHFDir(d, { ...toHF(fromHF(hf.config, hf.source)), maxShardBytes: 1 << 20 });
    hf.source.close();
    const ip = join(d, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(ip, 'utf8')) as { weight_map: Record<string, string> };
    const removed = { ...index.weight_map };
    delete removed['model.layers.1.mlp.experts.3.up_proj.weight'];
    writeFileSync(ip, JSON.stringify({ weight_map: removed }));
    assert.throws(() => openHFDir(d), (e: Error) => e.message.includes(ip) && e.message.includes('no weight_map entry for tensor model.layers.1.mlp.experts.3.up_proj.weight'));
    writeFileSync(ip, JSON.stringify({ weight_map: { ...index.weight_map, 'model.norm.weight': 'model-00009-of-00009.safetensors' } }));
    assert.throws(() => openHFDir(d), /model-00009-of-00009\.safetensors: cannot open \(does not exist\); it is named in .*index\.json/);
  });

  test('wrong shape and missing tensor', () => {
    const d = fresh('bad-shape');
    const hf = openHFDir(d);
    const { config, tensors } = toHF(fromHF(hf.config, hf.source));
    hf.source.close();
    const out = sub('bad-shape-out');
    mkdirSync(out);
    const altered = [...tensors].map(([n, data, shape]): [string, Float32Array, number[]] => (n === 'model.layers.2.mlp.gate.weight' ? [n, data, [shape[1]!, shape[0]!]] : [n, data, shape]));
    writeHFDir(out, { config, tensors: altered });
    const h2 = openHFDir(out);
    assert.throws(() => fromHF(h2.config, h2.source), /model\.safetensors: tensor model\.layers\.2\.mlp\.gate\.weight has shape \[64, 16\], but config\.json implies \[16, 64\]/);
    h2.source.close();
    writeHFDir(out, { config, tensors: altered.filter(([n]) => n !== 'model.layers.0.mlp.gate.weight') });
    const h3 = openHFDir(out);
    assert.throws(() => fromHF(h3.config, h3.source), (e: Error) => e.message.includes('tensor model.layers.0.mlp.gate.weight not found in') && e.message.includes('model.safetensors'));
    assert.throws(() => h3.source.read('model.norm.weight') && h3.source.read('nope'), /tensor nope not found/);
    h3.source.close();
    assert.throws(() => h3.source.read('model.norm.weight'), /closed/);
  });

  test('unknown model_type, unsupported settings', () => {
    const d = fresh('bad-config');
    const cp = join(d, 'config.json');
    const cfg = JSON.parse(readFileSync(cp, 'utf8')) as Record<string, unknown>;
    writeFileSync(cp, JSON.stringify({ ...cfg, model_type: 'llama' }));
    assert.throws(() => openHFDir(d), (e: Error) => e.message.includes(cp) && e.message.includes('model_type "llama" is not supported (supported: mixtral, qwen2_moe, qwen3_moe, olmoe)'));
    const bad = (patch: Record<string, unknown>, re: RegExp): void => {
      writeFileSync(cp, JSON.stringify({ ...cfg, ...patch }));
      const hf = openHFDir(d);
      try { assert.throws(() => fromHF(hf.config, hf.source, cp), re); } finally { hf.source.close(); }
    };
    bad({ rope_scaling: { rope_type: 'yarn', factor: 4 } }, /rope_scaling type "yarn" is not supported \(supported: linear, default/);
    bad({ hidden_act: 'gelu' }, /hidden_act 'gelu' is not supported/);
    bad({ clip_qkv: 8 }, /clip_qkv = 8 is not supported/);
    bad({ num_hidden_layers: 'four' }, /num_hidden_layers = "four" must be an integer >= 1/);
    bad({ num_key_value_heads: 3 }, /numKVHeads = 3 must divide numHeads = 4/);
    bad({ vocab_size: undefined }, /required field vocab_size is missing/);
  });

  for (const fam of FAMILIES) {
    test(`loadLM reads a ${fam} .gguf (F32) to the same logits as the HF directory it was written from`, async () => {
      const a = sub(`gguf-src-${fam}`);
      createRandomHFDir({ family: fam, preset: 'tiny', out: a, seed: 9 });
      const hf = await loadLM(a);
      const g = sub(`tiny-${fam}.gguf`);
      writeGGUF(g, { ...toHF(hf.model), dtype: 'f32', tokenizerJson: hf.tokenizerJson, tokenizerConfig: hf.tokenizerConfig });
      const gg = await loadLM(g);
      assert.equal(gg.source, 'gguf');
      const ids = Int32Array.from([256, 40, 41, 42, 43, 44, 45, 46]);
      const x = noGrad(() => hf.model.forward(ids)).data;
      const y = noGrad(() => gg.model.forward(ids)).data;
      let m = 0;
      for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
      assert.ok(m < 1e-5, `GGUF vs HF logits differ by ${m}`);
    });
  }

  test('loadLM: missing path, a file that is not .gguf', async () => {
    await assert.rejects(loadLM(sub('nothing-here')), /no such file or directory/);
    const f = sub('weights.bin');
    writeFileSync(f, 'x');
    await assert.rejects(loadLM(f), /not a directory and not a \.gguf file/);
  });
});
