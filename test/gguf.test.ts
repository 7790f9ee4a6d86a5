// GGUF: llama.cpp's layout (names, reversed dims, stacked experts, Mixtral's RoPE permutation),
// bit-exact round trips, quantised tensors, the tokenizer, unsupported files, and fuzzing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GGUFValueType } from '@huggingface/gguf';
import { Rng } from '../src/index.js';
import { GGML, GGUFFile, readGGUFAsHF, TIED_KEY, writeGGUF, writeGGUFFile, type GGUFWriteDType } from '../src/formats/gguf/index.js';
import { byteLevelTokenizerConfig, byteLevelTokenizerJson } from '../src/formats/hf/byte-tokenizer.js';
import { loadTokenizer } from '../src/formats/hf/tokenizer.js';
import { encodeFloats } from '../src/formats/hf/encode.js';
import { dequantizeArray, quantizeArray } from '../src/tensor/quant-blocks.js';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM } from '../src/models/load-lm.js';
import { run } from '../src/cli/cli.js';
import { noGrad } from '../src/index.js';

type Family = 'mixtral' | 'qwen2_moe' | 'qwen3_moe' | 'olmoe';
const FAMILIES: Family[] = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe'];
const dir = mkdtempSync(join(tmpdir(), 'moe-gguf-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const H = 64, HEADS = 4, KV = 2, HD = 16, E = 4, FF = 32, V = 300, L = 2;

/** A tiny HF model of the family: config.json and HF-named tensors (names spelled out, not taken from the code under test). */
function tinyModel(family: Family, seed: number, tied = false): { config: Record<string, unknown>; tensors: Array<[string, Float32Array, number[]]> } {
  const rng = new Rng(seed);
  const t: Array<[string, Float32Array, number[]]> = [];
  const add = (name: string, shape: number[]): void => {
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
    for (let i = 0; i < a.length; i++) a[i] = rng.normal() * 0.1;
    t.push([name, a, shape]);
  };
  add('model.embed_tokens.weight', [V, H]);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [H]);
    add(`${p}.self_attn.q_proj.weight`, [HEADS * HD, H]);
    add(`${p}.self_attn.k_proj.weight`, [KV * HD, H]);
    add(`${p}.self_attn.v_proj.weight`, [KV * HD, H]);
    add(`${p}.self_attn.o_proj.weight`, [H, HEADS * HD]);
    if (family === 'qwen2_moe') for (const x of ['q', 'k', 'v']) add(`${p}.self_attn.${x}_proj.bias`, [(x === 'q' ? HEADS : KV) * HD]);
    if (family === 'qwen3_moe') { add(`${p}.self_attn.q_norm.weight`, [HD]); add(`${p}.self_attn.k_norm.weight`, [HD]); }
    if (family === 'olmoe') { add(`${p}.self_attn.q_norm.weight`, [HEADS * HD]); add(`${p}.self_attn.k_norm.weight`, [KV * HD]); }
    add(`${p}.post_attention_layernorm.weight`, [H]);
    const moe = family === 'mixtral' ? 'block_sparse_moe' : 'mlp';
    add(`${p}.${moe}.gate.weight`, [E, H]);
    for (let e = 0; e < E; e++) {
      const names = family === 'mixtral' ? ['w1', 'w3', 'w2'] : ['gate_proj', 'up_proj', 'down_proj'];
      add(`${p}.${moe}.experts.${e}.${names[0]}.weight`, [FF, H]);
      add(`${p}.${moe}.experts.${e}.${names[1]}.weight`, [FF, H]);
      add(`${p}.${moe}.experts.${e}.${names[2]}.weight`, [H, FF]);
    }
    if (family === 'qwen2_moe') {
      for (const x of ['gate', 'up']) add(`${p}.mlp.shared_expert.${x}_proj.weight`, [2 * FF, H]);
      add(`${p}.mlp.shared_expert.down_proj.weight`, [H, 2 * FF]);
      add(`${p}.mlp.shared_expert_gate.weight`, [1, H]);
    }
  }
  add('model.norm.weight', [H]);
  if (!tied) add('lm_head.weight', [V, H]);
  const config: Record<string, unknown> = {
    model_type: family, vocab_size: V, hidden_size: H, num_hidden_layers: L, num_attention_heads: HEADS, num_key_value_heads: KV, head_dim: HD,
    rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 512, tie_word_embeddings: tied, num_experts_per_tok: 2,
  };
  if (family === 'mixtral') Object.assign(config, { num_local_experts: E, intermediate_size: FF });
  else if (family === 'olmoe') Object.assign(config, { num_experts: E, intermediate_size: FF, norm_topk_prob: false });
  else Object.assign(config, { num_experts: E, moe_intermediate_size: FF, norm_topk_prob: family === 'qwen3_moe' });
  if (family === 'qwen2_moe') config['shared_expert_intermediate_size'] = 2 * FF;
  return { config, tensors: t };
}

const tok = { tokenizerJson: byteLevelTokenizerJson(), tokenizerConfig: byteLevelTokenizerConfig() };
const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

for (const family of FAMILIES) {
  test(`${family}: HF -> GGUF -> HF keeps every tensor bit for bit; GGUF -> HF -> GGUF is byte-identical (F32)`, async () => {
    const tied = family === 'olmoe' || family === 'qwen2_moe'; // qwen2_moe tied: output.weight written as a copy (TIED_KEY)
    const m = tinyModel(family, 1, tied);
    const a = join(dir, `${family}-a.gguf`);
    writeGGUF(a, { config: m.config, tensors: m.tensors, dtype: 'f32', ...tok });
    const r = await readGGUFAsHF(a);
    try {
      const expectNames = m.tensors.map(([n]) => n).filter((n) => !(tied && n === 'lm_head.weight'));
      assert.deepEqual(new Set(r.source.names()), new Set(expectNames));
      for (const [name, data, shape] of m.tensors) {
        if (tied && name === 'lm_head.weight') continue;
        assert.deepEqual(r.source.info(name).shape, shape, name);
        assert.deepEqual(bits(r.source.read(name)), bits(data), name);
      }
      for (const k of ['hidden_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'head_dim', 'vocab_size',
        'max_position_embeddings', 'num_experts_per_tok', 'rms_norm_eps', 'rope_theta', 'tie_word_embeddings']) {
        assert.deepEqual(r.config[k], m.config[k], `config ${k}`);
      }
      assert.equal(r.config.model_type, family);
      assert.equal(r.config['bos_token_id'], 256);
      assert.equal(r.config['eos_token_id'], 257);
      const b = join(dir, `${family}-b.gguf`);
      writeGGUF(b, { config: r.config, tensors: r.source.names().map((n) => [n, r.source.read(n), r.source.info(n).shape]),
        dtype: 'f32', tokenizerJson: r.tokenizerJson, tokenizerConfig: r.tokenizerConfig });
      assert.ok(readFileSync(a).equals(readFileSync(b)), 'second GGUF is byte-identical');
    } finally {
      r.source.close();
    }
  });
}

test('llama.cpp layout: names, reversed dims, stacked experts, alignment, Mixtral q/k rows permuted for interleaved RoPE', async () => {
  const m = tinyModel('mixtral', 2);
  const p = join(dir, 'layout.gguf');
  writeGGUF(p, { config: m.config, tensors: m.tensors, ...tok });
  const raw = readFileSync(p);
  assert.equal(raw.toString('latin1', 0, 4), 'GGUF');
  assert.equal(raw.readUInt32LE(4), 3, 'version 3');
  const f = await GGUFFile.open(p);
  try {
    assert.equal(f.str('general.architecture'), 'llama');
    assert.equal(f.int('llama.expert_count'), E);
    assert.equal(f.str('tokenizer.ggml.model'), 'gpt2');
    assert.equal(f.array('tokenizer.ggml.tokens', 'string').length, V, 'token list padded to the vocabulary');
    assert.deepEqual(f.tensor('token_embd.weight').ne, [H, V]);
    assert.deepEqual(f.tensor('blk.0.ffn_gate_exps.weight').ne, [H, FF, E]);
    assert.deepEqual(f.tensor('blk.1.ffn_down_exps.weight').ne, [FF, H, E]);
    assert.deepEqual(f.tensor('blk.0.ffn_gate_inp.weight').ne, [H, E]);
    for (const t of f.tensors.values()) assert.equal(t.position % 32, 0, `${t.name} aligned`);
    // Expert 2's down projection sits at its slot of the stack.
    const down = new Float32Array(f.readBytes(f.tensor('blk.1.ffn_down_exps.weight')).buffer);
    const want = m.tensors.find(([n]) => n === 'model.layers.1.block_sparse_moe.experts.2.w2.weight')![1];
    assert.deepEqual(bits(down.subarray(2 * H * FF, 3 * H * FF)), bits(want));
    // llama.cpp's converter: w.reshape(heads, 2, hd / 2, in).swapaxes(1, 2): GGUF row h*hd + 2i + j = HF row h*hd + j*hd/2 + i.
    const q = new Float32Array(f.readBytes(f.tensor('blk.0.attn_q.weight')).buffer);
    const hq = m.tensors.find(([n]) => n === 'model.layers.0.self_attn.q_proj.weight')![1];
    for (const [h, i, j] of [[0, 0, 1], [1, 3, 0], [3, 7, 1]] as Array<[number, number, number]>) {
      const g = h * HD + 2 * i + j;
      const s = h * HD + j * (HD / 2) + i;
      assert.deepEqual(bits(q.subarray(g * H, (g + 1) * H)), bits(hq.subarray(s * H, (s + 1) * H)), `q row h${h} i${i} j${j}`);
    }
    const k = new Float32Array(f.readBytes(f.tensor('blk.0.attn_k.weight')).buffer);
    const hk = m.tensors.find(([n]) => n === 'model.layers.0.self_attn.k_proj.weight')![1];
    assert.deepEqual(bits(k.subarray(1 * H, 2 * H)), bits(hk.subarray((HD / 2) * H, (HD / 2 + 1) * H)), 'k row 1 = HF row hd/2 (kv heads)');
  } finally {
    f.close();
  }
});

for (const dtype of ['q8_0', 'q4_0', 'f16', 'bf16'] as GGUFWriteDType[]) {
  test(`${dtype}: matrices stored as ${dtype}, norms and routers F32; read() dequantises exactly; raw blocks pass through byte-identical`, async () => {
    const m = tinyModel('qwen2_moe', 3);
    const a = join(dir, `q-${dtype}-a.gguf`);
    writeGGUF(a, { config: m.config, tensors: m.tensors, dtype, ...tok });
    const r = await readGGUFAsHF(a);
    try {
      const want = { q8_0: 'Q8_0', q4_0: 'Q4_0', f16: 'F16', bf16: 'BF16' }[dtype as 'q8_0'];
      assert.equal(r.source.info('model.layers.0.mlp.experts.3.up_proj.weight').dtype, want);
      assert.equal(r.source.info('model.layers.0.self_attn.q_proj.weight').dtype, want);
      assert.equal(r.source.info('model.layers.0.mlp.gate.weight').dtype, 'F32', 'router stays F32');
      assert.equal(r.source.info('model.layers.0.mlp.shared_expert_gate.weight').dtype, 'F32');
      assert.equal(r.source.info('model.layers.1.input_layernorm.weight').dtype, 'F32');
      if (dtype === 'q8_0' || dtype === 'q4_0') {
        const [, x] = m.tensors.find(([n]) => n === 'model.layers.1.mlp.experts.2.down_proj.weight')!;
        const expect = dequantizeArray(dtype, quantizeArray(dtype, x), x.length);
        assert.deepEqual(bits(r.source.read('model.layers.1.mlp.experts.2.down_proj.weight')), bits(expect));
        const raw = r.source.readRaw('model.layers.1.mlp.experts.2.down_proj.weight');
        assert.deepEqual(raw.data, quantizeArray(dtype, x));
      }
      const b = join(dir, `q-${dtype}-b.gguf`);
      writeGGUF(b, { config: r.config, tensors: r.source.names().map((n) => [n, r.source.readRaw(n), r.source.info(n).shape]), dtype,
        tokenizerJson: r.tokenizerJson, tokenizerConfig: r.tokenizerConfig });
      assert.ok(readFileSync(a).equals(readFileSync(b)), 'raw pass-through is byte-identical');
    } finally {
      r.source.close();
    }
  });
}

test('tied qwen2_moe: output.weight is written as a copy of token_embd (llama.cpp requires it) and reads back tied, with no lm_head', async () => {
  for (const dtype of ['f32', 'q8_0'] as const) {
    const m = tinyModel('qwen2_moe', 4, true);
    const p = join(dir, `tied-qwen2-${dtype}.gguf`);
    writeGGUF(p, { config: m.config, tensors: m.tensors, dtype, ...tok });
    const f = await GGUFFile.open(p);
    try {
      assert.equal(f.bool(TIED_KEY), true);
      const emb = f.tensor('token_embd.weight');
      const out = f.tensor('output.weight');
      assert.deepEqual(out.ne, emb.ne);
      assert.equal(out.type, emb.type);
      assert.ok(Buffer.from(f.readBytes(out)).equals(Buffer.from(f.readBytes(emb))), `${dtype}: output.weight holds token_embd's bytes`);
    } finally {
      f.close();
    }
    const back = await readGGUFAsHF(p);
    try {
      assert.equal(back.config['tie_word_embeddings'], true, `${dtype}: tied again`);
      assert.ok(!back.source.names().includes('lm_head.weight'), `${dtype}: no lm_head in the HF view`);
    } finally {
      back.source.close();
    }
  }
  // other families keep llama.cpp's converter's rule: a tied model has no output.weight and no key
  const o = tinyModel('olmoe', 4, true);
  const po = join(dir, 'tied-olmoe.gguf');
  writeGGUF(po, { config: o.config, tensors: o.tensors, ...tok });
  const fo = await GGUFFile.open(po);
  try {
    assert.equal(fo.has(TIED_KEY), false);
    assert.equal(fo.tensors.has('output.weight'), false);
  } finally {
    fo.close();
  }
});

test('tokenizer: the GGUF byte-level vocabulary comes back as a tokenizer.json that encodes like the original', async () => {
  const m = tinyModel('qwen3_moe', 4);
  const p = join(dir, 'tok.gguf');
  writeGGUF(p, { config: m.config, tensors: m.tensors, ...tok });
  const r = await readGGUFAsHF(p);
  r.source.close();
  const before = loadTokenizer(tok.tokenizerJson, tok.tokenizerConfig);
  const after = loadTokenizer(r.tokenizerJson, r.tokenizerConfig);
  const text = 'Tous les êtres humains naissent libres 🌍 <|im_end|>';
  assert.deepEqual([...after.encode(text)], [...before.encode(text)]);
  assert.equal(after.decode(after.encode(text)), text);
  assert.equal(after.bosId, 256);
  assert.ok(after.eosIds.includes(257));
  assert.equal(after.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }),
    before.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }));
});

test('unsupported files are refused naming the file and what is wrong', async () => {
  const meta = (arch: string, extra: Array<[string, number]> = []) => [
    ['general.architecture', { type: GGUFValueType.STRING, value: arch }] as [string, { type: GGUFValueType; value: string | number }],
    ...extra.map(([k, v]) => [k, { type: GGUFValueType.UINT32, value: v }] as [string, { type: GGUFValueType; value: number }]),
  ];
  const gpt2 = join(dir, 'gpt2.gguf');
  writeGGUFFile(gpt2, meta('gpt2'), [{ name: 'token_embd.weight', type: GGML.F32, shape: [2, 32], data: new Uint8Array(256) }]);
  await assert.rejects(readGGUFAsHF(gpt2), (e: Error) => e.message.includes(gpt2) && /architecture 'gpt2' is not supported/.test(e.message));
  const dense = join(dir, 'dense-llama.gguf');
  writeGGUFFile(dense, meta('llama'), []);
  await assert.rejects(readGGUFAsHF(dense), /'llama' without experts is not supported/);
  const noKey = join(dir, 'nokey.gguf');
  writeGGUFFile(noKey, meta('olmoe', [['olmoe.expert_count', 4]]), []);
  await assert.rejects(readGGUFAsHF(noKey), (e: Error) => e.message.includes(noKey) && /olmoe\.embedding_length is missing/.test(e.message));
  // A K-quant tensor is listed but refused when read, by name and type.
  const kq = join(dir, 'kquant.gguf');
  const m = tinyModel('olmoe', 5, true);
  writeGGUF(kq, { config: m.config, tensors: m.tensors });
  const bytes = readFileSync(kq);
  const at = bytes.indexOf(Buffer.from('blk.0.attn_norm.weight'));
  bytes.writeUInt32LE(12, at + 'blk.0.attn_norm.weight'.length + 4 + 8); // its type field -> Q4_K
  writeFileSync(kq, bytes);
  const r = await readGGUFAsHF(kq);
  assert.equal(r.source.info('model.layers.0.input_layernorm.weight').dtype, 'Q4_K');
  assert.throws(() => r.source.read('model.layers.0.input_layernorm.weight'), /blk\.0\.attn_norm\.weight .*Q4_K is not supported/);
  r.source.close();
});

test('writeGGUF refuses incomplete experts, unknown names and partial blocks', () => {
  const m = tinyModel('mixtral', 6);
  const p = join(dir, 'bad-write.gguf');
  const without = m.tensors.filter(([n]) => n !== 'model.layers.1.block_sparse_moe.experts.2.w3.weight');
  assert.throws(() => writeGGUF(p, { config: m.config, tensors: without }), /blk\.1\.ffn_up_exps\.weight is missing experts 2/);
  assert.throws(() => writeGGUF(p, { config: m.config, tensors: [['model.layers.0.foo.weight', new Float32Array(4), [4]]] }), /model\.layers\.0\.foo\.weight has no llama\.cpp name/);
  assert.throws(() => writeGGUFFile(p, [], [{ name: 'x', type: GGML.Q8_0, shape: [2, 40], data: new Uint8Array(0) }]), /tensor x: Q8_0 needs rows that are multiples of 32/);
});

test('fuzz: truncated, bit-flipped, oversized and wrongly versioned files parse or fail with an error naming the file', { timeout: 120_000 }, async () => {
  const m = tinyModel('qwen3_moe', 7, true);
  const good = join(dir, 'fuzz-good.gguf');
  // Small tensors keep the file small: the header (tokenizer) dominates, as in real files.
  writeGGUF(good, { config: { ...m.config }, tensors: m.tensors, dtype: 'q8_0', ...tok });
  const orig = readFileSync(good);
  const headerEnd = orig.indexOf(Buffer.from('token_embd.weight')) + 200;
  const rng = new Rng(2024);
  const p = join(dir, 'fuzz.gguf');
  let parsed = 0;
  let refused = 0;
  for (let it = 0; it < 160; it++) {
    const b = Buffer.from(orig);
    let cut = b.length;
    switch (it % 5) {
      case 0: cut = rng.int(b.length); break; // truncate anywhere
      case 1: for (let f = 0; f < 1 + rng.int(4); f++) { const i = rng.int(headerEnd); b[i]! ^= 1 << rng.int(8); } break; // flip header bits
      case 2: { // a huge count or length at a random 8-byte-aligned spot of the header
        const i = 8 + 8 * rng.int(Math.floor((headerEnd - 16) / 8));
        b.writeBigUInt64LE([2n ** 62n, 2n ** 33n, 0xffffffffffffffffn, 1000000000n][rng.int(4)]!, i);
        break;
      }
      case 3: b.writeUInt32LE([0, 1, 2, 4, 0x01000000, 0xffffffff][rng.int(6)]!, 4); break; // version
      case 4: b[rng.int(4)] = rng.int(256); break; // magic
    }
    writeFileSync(p, b.subarray(0, cut));
    try {
      const r = await readGGUFAsHF(p);
      try {
        for (const n of r.source.names()) r.source.read(n);
      } finally {
        r.source.close();
      }
      parsed++;
    } catch (e) {
      refused++;
      assert.ok(e instanceof Error, `iteration ${it}: threw ${String(e)}`);
      assert.ok(e.message.includes(p), `iteration ${it}: error does not name the file: ${e.message}`);
    }
  }
  assert.ok(refused > 80, `most mutations are refused (${refused} refused, ${parsed} parsed)`);
});

test('crafted headers: each problem is named (magic, version, truncation, tensor past the end, huge counts)', async () => {
  const m = tinyModel('olmoe', 8, true);
  const good = join(dir, 'craft.gguf');
  writeGGUF(good, { config: m.config, tensors: m.tensors });
  const orig = readFileSync(good);
  const p = join(dir, 'crafted.gguf');
  const expectError = async (b: Buffer, re: RegExp): Promise<void> => {
    writeFileSync(p, b);
    await assert.rejects(readGGUFAsHF(p), (e: Error) => e.message.startsWith(p) && re.test(e.message));
  };
  const b1 = Buffer.from(orig); b1.write('GGML', 0, 'latin1');
  await expectError(b1, /wrong magic "GGML"/);
  const b2 = Buffer.from(orig); b2.writeUInt32LE(4, 4);
  await expectError(b2, /unsupported version/);
  await expectError(orig.subarray(0, orig.length - 100), /tensor "output_norm\.weight": data .* runs past the end of the file/);
  await expectError(orig.subarray(0, 300), /truncated|past the end|header/);
  const b3 = Buffer.from(orig); b3.writeBigUInt64LE(2n ** 40n, 8);
  await expectError(b3, /tensor_count 1099511627776 cannot fit in a file of \d+ bytes/);
  const b4 = Buffer.from(orig); b4.writeBigUInt64LE(2n ** 40n, 16);
  await expectError(b4, /kv_count 1099511627776 cannot fit/);
  // Millions of tensors claimed by a 64-byte file: refused before any entry is built.
  const tiny = Buffer.alloc(64);
  tiny.write('GGUF', 0, 'latin1');
  tiny.writeUInt32LE(3, 4);
  tiny.writeBigUInt64LE(9_999_999n, 8);
  await expectError(tiny, /tensor_count 9999999 cannot fit in a file of 64 bytes/);
  // A count that fits the file but not the library's limit still gets the library's message.
  const b5 = Buffer.from(orig); b5.writeBigUInt64LE(BigInt(Math.floor(orig.length / 30)), 16);
  await expectError(b5, /header|metadata|truncated|past the end/);
  await expectError(orig.subarray(0, 10), /too short/);
});

test('moe convert: HF -> GGUF -> HF gives the same logits bit for bit (F32) for every family; q8_0 stays close; bad options refused', { timeout: 120_000 }, async () => {
  const ids = Int32Array.from([72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100]);
  const logits = async (p: string): Promise<Float32Array> => {
    const m = await loadLM(p);
    return noGrad(() => m.model.forward(ids, null)).data as Float32Array;
  };
  const quiet = async (argv: string[]): Promise<number> => {
    const log = console.log;
    console.log = () => undefined;
    try {
      return await run(argv);
    } finally {
      console.log = log;
    }
  };
  for (const family of FAMILIES) {
    const hf = join(dir, `cv-${family}`);
    createRandomHFDir({ family, preset: 'tiny', out: hf, seed: 3 });
    const g = join(dir, `cv-${family}.gguf`);
    const back = join(dir, `cv-${family}-back`);
    assert.equal(await quiet(['convert', hf, g, '--format', 'gguf']), 0);
    assert.equal(await quiet(['convert', g, back, '--format', 'hf']), 0);
    const ref = await logits(hf);
    assert.deepEqual(bits(await logits(g)), bits(ref), `${family}: GGUF logits`);
    assert.deepEqual(bits(await logits(back)), bits(ref), `${family}: HF -> GGUF -> HF logits`);
    if (family === 'olmoe') {
      const q = join(dir, 'cv-olmoe-q8.gguf');
      assert.equal(await quiet(['convert', g, q, '--format', 'gguf', '--dtype', 'q8_0']), 0);
      const lq = await logits(q);
      let maxRef = 0;
      let maxDiff = 0;
      for (let i = 0; i < ref.length; i++) {
        maxRef = Math.max(maxRef, Math.abs(ref[i]!));
        maxDiff = Math.max(maxDiff, Math.abs(lq[i]! - ref[i]!));
      }
      assert.ok(maxDiff > 0 && maxDiff < 0.5 * maxRef, `q8_0 logits move, but not far (max |d| ${maxDiff}, max |logit| ${maxRef})`);
    }
  }
  const hf = join(dir, 'cv-olmoe');
  const err = async (argv: string[], re: RegExp): Promise<void> => {
    const write = process.stderr.write.bind(process.stderr);
    let text = '';
    process.stderr.write = ((s: string) => { text += s; return true; }) as typeof process.stderr.write;
    try {
      assert.equal(await run(argv), 2);
    } finally {
      process.stderr.write = write;
    }
    assert.match(text, re);
  };
  await err(['convert', hf, join(dir, 'x'), '--format', 'hf', '--dtype', 'q8_0'], /--dtype q8_0 needs --format gguf/);
  await err(['convert', hf, join(dir, 'x.gguf'), '--format', 'onnx'], /--format must be hf or gguf/);
  await err(['convert', join(dir, 'nothing'), join(dir, 'x.gguf'), '--format', 'gguf'], /does not exist/);
  await err(['convert', hf, join(dir, 'x.gguf'), '--format', 'gguf', '--dtype', 'q5_k'], /--dtype 'q5_k' is not one of/);
});

/** Rewrites a GGUF with the same metadata, each tensor replaced by what `map` makes of it (name, type, row-major shape, bytes). */
async function rewrite(src: string, dst: string, map: (t: { name: string; type: number; shape: number[]; data: Uint8Array }) => Array<{ name: string; type: number; shape: number[]; data: Uint8Array }>): Promise<void> {
  const f = await GGUFFile.open(src);
  try {
    const tensors = [...f.tensors.values()].flatMap((t) => map({ name: t.name, type: t.type, shape: t.shape, data: f.readBytes(t) }));
    writeGGUFFile(dst, [...f.metadata.entries()], tensors);
  } finally {
    f.close();
  }
}

test('files as llama.cpp also writes them: Mixtral with one tensor per expert, Qwen2 shared-expert gate as [hidden]', async () => {
  const m = tinyModel('mixtral', 9);
  const stacked = join(dir, 'mix-stacked.gguf');
  writeGGUF(stacked, { config: m.config, tensors: m.tensors });
  const split = join(dir, 'mix-split.gguf');
  await rewrite(stacked, split, (t) => {
    const e = /^(blk\.\d+)\.ffn_(gate|up|down)_exps\.weight$/.exec(t.name);
    if (!e) return [t];
    const per = t.data.length / t.shape[0]!;
    return Array.from({ length: t.shape[0]! }, (_, x) => ({ name: `${e[1]}.ffn_${e[2]}.${x}.weight`, type: t.type, shape: t.shape.slice(1), data: t.data.subarray(x * per, (x + 1) * per) }));
  });
  const r = await readGGUFAsHF(split);
  try {
    for (const [name, data] of m.tensors) assert.deepEqual(bits(r.source.read(name)), bits(data), name);
  } finally {
    r.source.close();
  }
  const q = tinyModel('qwen2_moe', 10);
  const a = join(dir, 'qwen2-shexp.gguf');
  writeGGUF(a, { config: q.config, tensors: q.tensors });
  const b = join(dir, 'qwen2-shexp-1d.gguf');
  await rewrite(a, b, (t) => [/ffn_gate_inp_shexp/.test(t.name) ? { ...t, shape: [H] } : t]);
  const rq = await readGGUFAsHF(b);
  try {
    assert.deepEqual(rq.source.info('model.layers.1.mlp.shared_expert_gate.weight').shape, [1, H]);
    assert.deepEqual(bits(rq.source.read('model.layers.1.mlp.shared_expert_gate.weight')), bits(q.tensors.find(([n]) => n === 'model.layers.1.mlp.shared_expert_gate.weight')![1]));
  } finally {
    rq.source.close();
  }
});

test('a file written by llama.cpp\'s gguf-py: metadata of every type, and our quantisers reproduce its Q8_0/Q4_0/F16/BF16 bytes', async () => {
  // reference/gguf_fixture.py: float32 rows that hit ggml's rounding corners, encoded by gguf-py's reference quantisers.
  const path = fileURLToPath(new URL('../../test/fixtures/gguf/gguf-py.gguf', import.meta.url));
  const f = await GGUFFile.open(path);
  try {
    assert.equal(f.str('general.architecture'), 'olmoe');
    assert.equal(f.num('test.u8'), 200);
    assert.equal(f.num('test.i8'), -100);
    assert.equal(f.num('test.u16'), 60000);
    assert.equal(f.num('test.i16'), -30000);
    assert.equal(f.num('test.u32'), 4000000000);
    assert.equal(f.num('test.i32'), -2000000000);
    assert.equal(f.num('test.f32'), Math.fround(0.1));
    assert.equal(f.num('test.u64'), 2 ** 40 + 1);
    assert.equal(f.num('test.i64'), -(2 ** 40) - 1);
    assert.equal(f.num('test.f64'), 0.1);
    assert.equal(f.bool('test.bool'), true);
    assert.equal(f.str('test.string'), 'Tous les êtres humains 🌍');
    assert.deepEqual(f.array('test.strings', 'string'), ['a', 'b c', '']);
    assert.deepEqual(f.array('test.ints', 'number'), [1, -2, 3]);
    const xt = f.tensor('x');
    assert.deepEqual(xt.shape, [10, 256]);
    const x = new Float32Array(f.readBytes(xt).slice().buffer);
    const stored = (name: string): Uint8Array => f.readBytes(f.tensor(name));
    assert.deepEqual(quantizeArray('q8_0', x), stored('x.q8_0'), 'Q8_0 bytes');
    assert.deepEqual(quantizeArray('q4_0', x), stored('x.q4_0'), 'Q4_0 bytes');
    assert.deepEqual(encodeFloats(x, 'F16'), stored('x.f16'), 'F16 bytes');
    assert.deepEqual(encodeFloats(x, 'BF16'), stored('x.bf16'), 'BF16 bytes');
    // Our writer, given the same entries and tensors, lays the file out byte for byte as gguf-py
    // (which also pads after the last tensor).
    const ours = join(dir, 'rewritten.gguf');
    writeGGUFFile(ours, [...f.metadata.entries()], [...f.tensors.values()].map((t) => ({ name: t.name, type: t.type, shape: t.shape, data: f.readBytes(t) })));
    const a = readFileSync(ours);
    const b = readFileSync(path);
    assert.ok(b.subarray(0, a.length).equals(a), 'same bytes');
    assert.ok(b.length - a.length < 32 && b.subarray(a.length).every((v) => v === 0), 'gguf-py only adds trailing padding');
  } finally {
    f.close();
  }
});
