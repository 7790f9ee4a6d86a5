// Random-init MoE decoders for tests and benchmarks: presets per family, written as an HF directory tensor by tensor.

import { mkdirSync } from 'node:fs';
import { Rng, deriveSeed } from '../tensor/rng.js';
import { writeHFDir, type HFWriteResult } from '../formats/hf/write.js';
import { BYTE_BOS_ID, BYTE_EOS_ID, BYTE_TOKENIZER_VOCAB_SIZE, byteLevelTokenizerConfig, byteLevelTokenizerJson } from '../formats/hf/byte-tokenizer.js';
import { HF_MODEL_TYPES } from '../formats/hf/config.js';
import { decoderConfigToHF, validateMoEDecoderConfig, type MoEDecoderConfig, type MoEFamily } from './moe-decoder-config.js';
import { hfTensorLayout } from './moe-decoder-hf.js';

export const PRESETS = ['tiny', 'small', '1b'] as const;
export type Preset = (typeof PRESETS)[number];

/**
 * tiny (~1M parameters, tests): switches on each family's optional features so that the PyTorch
 * fixtures cover them (Mixtral: GQA and a sliding window of 6; Qwen2-MoE: shared expert with its
 * gate, qkv bias, tied embeddings, no renormalisation; Qwen3-MoE: per-head QK-norm, head_dim apart
 * from hidden/heads, a dense layer, linear RoPE scaling; OLMoE: full QK-norm, 16 experts top-4).
 * small (~100M) and 1b (~1B): OLMoE-shaped for every family (64 experts, top-8), for benchmarks.
 */
export function presetConfig(family: MoEFamily, preset: Preset): MoEDecoderConfig {
  if (!(HF_MODEL_TYPES as readonly string[]).includes(family)) throw new Error(`unknown arch '${String(family)}' (supported: ${HF_MODEL_TYPES.join(', ')})`);
  if (!(PRESETS as readonly string[]).includes(preset)) throw new Error(`unknown preset '${String(preset)}' (supported: ${PRESETS.join(', ')})`);
  const base: MoEDecoderConfig = {
    family, vocabSize: BYTE_TOKENIZER_VOCAB_SIZE, hiddenSize: 64, numLayers: 4, numHeads: 4, numKVHeads: 2, headDim: 16,
    numExperts: 8, topK: 2, moeIntermediateSize: 128, router: { type: 'softmax', normTopkProb: family !== 'olmoe' && family !== 'qwen2_moe' },
    denseIntermediateSize: 0, denseLayers: [], sharedExpertIntermediateSize: 0, sharedExpertGate: false,
    qkvBias: family === 'qwen2_moe', qkNorm: family === 'qwen3_moe' ? 'head' : family === 'olmoe' ? 'full' : 'none',
    rmsNormEps: family === 'mixtral' || family === 'olmoe' ? 1e-5 : 1e-6, ropeTheta: family === 'mixtral' ? 1e6 : 10000,
    ropeScaling: null, slidingWindow: null, tieWordEmbeddings: false, maxPositionEmbeddings: 4096,
  };
  let c: MoEDecoderConfig;
  if (preset === 'tiny') {
    c = { ...base, maxPositionEmbeddings: 512 };
    if (family === 'mixtral') c.slidingWindow = 6;
    if (family === 'qwen2_moe') Object.assign(c, { topK: 4, sharedExpertIntermediateSize: 128, sharedExpertGate: true, tieWordEmbeddings: true });
    if (family === 'qwen3_moe') Object.assign(c, { headDim: 32, denseLayers: [1], denseIntermediateSize: 192, ropeScaling: { type: 'linear', factor: 2 } });
    if (family === 'olmoe') Object.assign(c, { numKVHeads: 4, numExperts: 16, topK: 4, moeIntermediateSize: 64 });
  } else {
    const big = preset === '1b';
    const d = big ? 1024 : 512;
    const heads = big ? 16 : 8;
    c = {
      ...base, hiddenSize: d, numLayers: big ? 10 : 8, numHeads: heads, numKVHeads: family === 'olmoe' ? heads : heads / 4, headDim: 64,
      numExperts: 64, topK: 8, moeIntermediateSize: big ? 512 : 128,
    };
    if (family === 'qwen2_moe') Object.assign(c, { sharedExpertIntermediateSize: 4 * c.moeIntermediateSize, sharedExpertGate: true });
  }
  validateMoEDecoderConfig(c);
  return c;
}

/** Parameters of a config (embedding and lm_head counted separately when untied). */
export function parameterCount(c: MoEDecoderConfig): number {
  return hfTensorLayout(c).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * Random tensors in HF layout, generated one at a time from (seed, tensor index), so the same seed
 * gives the same values whatever is read first. Matrices [out, in] uniform with variance 1/in
 * (activations keep their scale, router logits and final logits come out O(1)); norm weights
 * 1 + u and biases u with u of standard deviation 0.1, so a weight that is not applied changes the
 * output. Uniform rather than normal: a twelfth of the generator's time (the 1b preset is 1e9 draws).
 */
export function* randomHFTensors(c: MoEDecoderConfig, seed: number): Generator<[string, Float32Array, number[]]> {
  let i = 0;
  for (const slot of hfTensorLayout(c)) {
    const n = slot.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const rng = new Rng(deriveSeed(seed, i++));
    // U(c - b, c + b) has standard deviation b / sqrt(3)
    const b = slot.kind === 'matrix' ? Math.sqrt(3 / slot.shape[slot.shape.length - 1]!) : 0.1 * Math.sqrt(3);
    const c = slot.kind === 'norm' ? 1 : 0;
    rng.fillUniform(data, c - b, c + b);
    yield [slot.name, data, slot.shape];
  }
}

export interface CreateOptions {
  family: MoEFamily;
  preset: Preset;
  out: string;
  seed?: number;
  maxShardBytes?: number;
}

/** Writes a random-init HF directory (config.json, safetensors, byte-level tokenizer). */
export function createRandomHFDir(opts: CreateOptions): HFWriteResult & { config: MoEDecoderConfig; parameters: number } {
  const c = presetConfig(opts.family, opts.preset);
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
  mkdirSync(opts.out, { recursive: true });
  const config = { ...decoderConfigToHF(c), bos_token_id: BYTE_BOS_ID, eos_token_id: BYTE_EOS_ID, moe_ts: { preset: opts.preset, seed } };
  const res = writeHFDir(opts.out, {
    config, tensors: randomHFTensors(c, seed), dtype: 'F32',
    tokenizerJson: byteLevelTokenizerJson(), tokenizerConfig: byteLevelTokenizerConfig(),
    ...(opts.maxShardBytes !== undefined ? { maxShardBytes: opts.maxShardBytes } : {}),
  });
  return { ...res, config: c, parameters: parameterCount(c) };
}
