// The fused decode experts (kernel expertSwiGLU, addExpertsInto): equal to the grouped path (permute,
// three grouped products, SwiGLU, unpermute, residual add) on both backends for float32, Q8_0 and
// Q4_0 stacks, edge cases (T = 1, E = 1, k = E, experts without tokens, an expert twice for one
// token, T = 16), named errors for bad input, and the decoder's decode with it on and off.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { noGrad } from '../src/tensor/autograd.js';
import { withBackend, kernel } from '../src/kernels/registry.js';
import { add } from '../src/ops/index.js';
import { planDispatch } from '../src/moe/permute/bins.js';
import { permute, unpermute } from '../src/moe/permute/permute.js';
import { QuantWeight } from '../src/infer/quant/index.js';
import { quantizeRow, quantizedBytes, type QuantType } from '../src/tensor/quant-blocks.js';
import { addExpertsInto, expertSwiGLU, type Weight } from '../src/models/moe-decoder-weights.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { decoderConfigToHF, type MoEFamily } from '../src/models/moe-decoder.js';
import type { LoadDType } from '../src/models/moe-decoder-weights.js';
import { backendsUnderTest, maxDiff } from './helpers.js';

type Format = 'f32' | QuantType;

function stack(rng: Rng, E: number, rows: number, cols: number, format: Format): Weight {
  const v = new Float32Array(E * rows * cols);
  for (let i = 0; i < v.length; i++) v[i] = (rng.next() * 2 - 1) / Math.sqrt(cols);
  if (format === 'f32') return new Tensor(v, [E, rows, cols]);
  const rowBytes = quantizedBytes(format, cols);
  const data = new Uint8Array(E * rows * rowBytes);
  for (let r = 0; r < E * rows; r++) quantizeRow(format, v, r * cols, cols, data, r * rowBytes);
  return new QuantWeight(format, [E, rows, cols], data);
}

interface Case {
  T: number;
  d: number;
  h: number;
  E: number;
  token: Int32Array;
  expert: Int32Array;
  gates: Float32Array;
}

/** Top-k-like assignments: token t takes k distinct experts (or the given pairs). */
function topkCase(rng: Rng, T: number, E: number, k: number, d = 64, h = 96): Case {
  const token: number[] = [];
  const expert: number[] = [];
  for (let t = 0; t < T; t++) {
    const pool = Array.from({ length: E }, (_, e) => e);
    for (let j = 0; j < k; j++) {
      const at = Math.floor(rng.next() * pool.length);
      token.push(t);
      expert.push(pool.splice(at, 1)[0]!);
    }
  }
  const gates = Float32Array.from(token, () => rng.next());
  return { T, d, h, E, token: Int32Array.from(token), expert: Int32Array.from(expert), gates };
}

/** The grouped path the fused kernel replaces: residual + unpermute(SwiGLU experts(permute(x))). */
function grouped(x: Tensor, c: Case, w1: Weight, w3: Weight, w2: Weight, residual: Tensor): Float32Array {
  const plan = planDispatch(c.token, c.expert, c.gates, c.E, null);
  const y = unpermute(expertSwiGLU(permute(x, plan), w1, w3, w2, plan.groupSizes), new Tensor(c.gates, [c.gates.length]), plan, c.T);
  return add(residual, y).data as Float32Array;
}

function fused(x: Tensor, c: Case, w1: Weight, w3: Weight, w2: Weight, residual: Tensor): Float32Array {
  const out = (residual.data as Float32Array).slice();
  assert.ok(addExpertsInto(x, c.token, c.expert, c.gates, w1, w3, w2, out), 'the fused kernel takes these stacks');
  return out;
}

function randRows(rng: Rng, T: number, d: number): Tensor {
  return new Tensor(Float32Array.from({ length: T * d }, () => rng.next() * 2 - 1), [T, d]);
}

describe('fused decode experts = the grouped path', () => {
  for (const backend of backendsUnderTest()) {
    for (const format of ['f32', 'q8_0', 'q4_0'] as const) {
      test(`${backend} ${format}: T = 1, 3, 16; E = 1; k = E; empty experts; an expert twice`, () => {
        withBackend(backend, () => noGrad(() => {
          const rng = new Rng(11);
          const cases: Array<[string, Case]> = [
            ['T=1 k=2 of E=8', topkCase(rng, 1, 8, 2)],
            ['T=3 k=4 of E=8', topkCase(rng, 3, 8, 4)],
            ['T=16 k=2 of E=8', topkCase(rng, 16, 8, 2)],
            ['E=1', topkCase(rng, 2, 1, 1)],
            ['k=E=4', topkCase(rng, 2, 4, 4)],
            ['h not a multiple of 64', topkCase(rng, 2, 5, 2, 64, 160)],
          ];
          const twice = topkCase(rng, 2, 6, 2);
          twice.expert[1] = twice.expert[0]!; // token 0 sends its row to one expert twice
          cases.push(['an expert twice for one token', twice]);
          for (const [what, c] of cases) {
            const w1 = stack(rng, c.E, c.h, c.d, format);
            const w3 = stack(rng, c.E, c.h, c.d, format);
            const w2 = stack(rng, c.E, c.d, c.h, format);
            const x = randRows(rng, c.T, c.d);
            const residual = randRows(rng, c.T, c.d);
            const want = grouped(x, c, w1, w3, w2, residual);
            const got = fused(x, c, w1, w3, w2, residual);
            const diff = maxDiff(got, want);
            // the same products and the same summation order: equal up to float32 rounding of the gated sum
            assert.ok(diff <= 2e-6, `${backend} ${format} ${what}: max |fused - grouped| = ${diff}`);
          }
        }));
      });
    }
  }

  test('native = js reference (float32 to 1e-5; block formats within a few activation-rounding steps)', (t) => {
    if (!backendsUnderTest().includes('native')) return t.skip('native backend not built');
    const rng = new Rng(5);
    for (const format of ['f32', 'q8_0', 'q4_0'] as const) {
      const c = topkCase(rng, 4, 16, 4, 128, 256);
      const w1 = stack(rng, c.E, c.h, c.d, format);
      const w3 = stack(rng, c.E, c.h, c.d, format);
      const w2 = stack(rng, c.E, c.d, c.h, format);
      const x = randRows(rng, c.T, c.d);
      const residual = randRows(rng, c.T, c.d);
      const js = withBackend('js', () => fused(x, c, w1, w3, w2, residual));
      const nat = withBackend('native', () => fused(x, c, w1, w3, w2, residual));
      const scale = Math.max(...Array.from(js, Math.abs));
      const diff = maxDiff(js, nat);
      assert.ok(diff <= (format === 'f32' ? 1e-5 : 2e-3) * scale, `${format}: max |native - js| = ${diff} (scale ${scale})`);
    }
  });

  test('addExpertsInto declines what it cannot fuse: offloaded or mixed formats, float64', () => {
    const rng = new Rng(3);
    const c = topkCase(rng, 1, 4, 2, 64, 64);
    const f = stack(rng, c.E, c.h, c.d, 'f32');
    const q = stack(rng, c.E, c.h, c.d, 'q8_0');
    const x = randRows(rng, c.T, c.d);
    const out = new Float32Array(c.T * c.d);
    assert.equal(addExpertsInto(x, c.token, c.expert, c.gates, q, f, f, out), false);
    assert.equal(addExpertsInto(x, c.token, c.expert, c.gates, q, stack(rng, c.E, c.h, c.d, 'q4_0'), q, out), false);
    const x64 = new Tensor(Float64Array.from(x.data), [c.T, c.d]);
    assert.equal(addExpertsInto(x64, c.token, c.expert, c.gates, f, f, f, out), false);
    assert.ok(out.every((v) => v === 0), 'nothing written when declined');
  });
});

describe('fused decode experts: bad input is refused with a named error', () => {
  for (const backend of backendsUnderTest()) {
    test(`${backend}: indices out of range, lengths, weight kinds and sizes, non-finite rows for blocks`, () => {
      withBackend(backend, () => {
        const rng = new Rng(9);
        const c = topkCase(rng, 2, 4, 2, 64, 64);
        const f = stack(rng, c.E, c.h, c.d, 'f32').data as Float32Array;
        const q = stack(rng, c.E, c.h, c.d, 'q8_0').data as Uint8Array;
        const x = randRows(rng, c.T, c.d).data as Float32Array;
        const out = new Float32Array(c.T * c.d);
        const k = kernel('expertSwiGLU');
        const run = (o: Partial<{ token: Int32Array; expert: Int32Array; gates: Float32Array; x: Float32Array; w: Float32Array | Uint8Array; type: 'f32' | 'q8_0' }>): void =>
          k(o.x ?? x, o.token ?? c.token, o.expert ?? c.expert, o.gates ?? c.gates, o.w ?? f, o.w ?? f, o.w ?? f, out, c.T, c.d, c.h, c.E, o.type ?? 'f32');
        assert.throws(() => run({ expert: Int32Array.from([0, 1, 4, 2]) }), /expert\[2\] = 4 is outside 0\.\.3/);
        assert.throws(() => run({ token: Int32Array.from([0, 0, 2, 1]) }), /token\[2\] = 2 is outside 0\.\.1/);
        assert.throws(() => run({ gates: new Float32Array(3) }), /one entry per assignment/);
        assert.throws(() => run({ w: f.subarray(0, f.length - 1) }), /w1 has/);
        assert.throws(() => run({ w: q }), /w1 must be/);
        assert.throws(() => run({ w: f, type: 'q8_0' }), /w1 must be/);
        const bad = x.slice();
        bad[5] = Number.NaN;
        assert.throws(() => run({ x: bad, w: q, type: 'q8_0' }), /x row 0 holds a non-finite value/);
        assert.ok(out.every((v) => v === 0), 'out untouched by refused calls');
      });
    });
  }
});

describe('decoder decode with the fused kernels (qkvAttention, expertSwiGLU) on and off', () => {
  // olmoe: full QK-norm; qwen2_moe: qkv biases, shared expert; qwen3_moe: per-head QK-norm, a dense
  // layer; mixtral: sliding window 6 (the steps below pass it)
  const cases: Array<[MoEFamily, LoadDType, 'float32' | 'float16']> = [
    ['olmoe', 'f32', 'float32'], ['olmoe', 'q8_0', 'float16'], ['qwen2_moe', 'f32', 'float32'], ['qwen2_moe', 'q4_0', 'float32'],
    ['qwen3_moe', 'f32', 'float16'], ['mixtral', 'q8_0', 'float32'],
  ];
  for (const backend of backendsUnderTest()) {
    for (const [fam, dtype, kv] of cases) {
      test(`${backend} ${fam} ${dtype}, ${kv} cache: the same logits step by step, alone and in a batch of 3`, () => {
        withBackend(backend, () => {
          const c = presetConfig(fam, 'tiny');
          const m = fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 4)), 'config.json', { dtype });
          const prompts = [[256, 72, 101, 108, 108, 111], [256, 87], [256, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]];
          const steps = (on: boolean): Float32Array[] => {
            m.fusedDecode = on;
            const cache = m.newCache(64, kv);
            const out = [m.forward(Int32Array.from(prompts[0]!), cache).data as Float32Array];
            for (const id of [32, 119, 111, 114, 108, 100, 33]) out.push(m.forward(Int32Array.of(id), cache).data as Float32Array);
            // several sequences per step: prompts of 2, 6 and 18 rows (18: the kernel-per-op path), then decode steps
            const caches = prompts.map(() => m.newCache(64, kv));
            const batch = (ids: number[][]): void => {
              for (const l of m.forwardBatch(ids.map((x, i) => ({ ids: Int32Array.from(x), cache: caches[i]! })))) out.push(l.data as Float32Array);
            };
            batch(prompts);
            for (let i = 0; i < 3; i++) batch([[40 + i], [50 + i], [60 + i]]);
            return out;
          };
          const on = steps(true);
          const off = steps(false);
          assert.equal(m.fusedDecode, false);
          assert.equal(on.length, off.length);
          for (let i = 0; i < on.length; i++) {
            const diff = maxDiff(on[i]!, off[i]!);
            assert.ok(diff <= 1e-5, `${fam} ${dtype} output ${i}: max |fused - kernel per op| logit = ${diff}`);
          }
        });
      });
    }
  }
});
