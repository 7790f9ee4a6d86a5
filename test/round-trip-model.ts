// The moe-ts side of the PyTorch round trip (reference/round_trip_fixture.py, test/round-trip.test.ts):
// a small MoE decoder exported through toHF + writeHFDir, the path `moe convert` and `moe create`
// write HF directories with. The fixture script runs it from dist/ and the test runs it again, so
// both start from the same bytes (checked by hash).

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { writeHFDir } from '../src/formats/hf/write.js';
import { BYTE_BOS_ID, BYTE_EOS_ID, byteLevelTokenizerConfig, byteLevelTokenizerJson } from '../src/formats/hf/byte-tokenizer.js';
import { presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF, toHF } from '../src/models/moe-decoder-hf.js';
import { decoderConfigToHF, validateMoEDecoderConfig, type MoEDecoderConfig, type MoEFamily } from '../src/models/moe-decoder-config.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';

/** The HF families the round trip covers: OLMoE and Qwen3-MoE (Megatron-Bridge and vLLM read both) and Qwen2-MoE (vLLM; docs/scale-out.md). */
export const ROUND_TRIP_FAMILIES: MoEFamily[] = ['olmoe', 'qwen2_moe', 'qwen3_moe'];
export const ROUND_TRIP_SEED = 5;

/**
 * The tiny preset's features (OLMoE's QK-norm; Qwen2-MoE's shared expert, its gate, qkv bias, tied
 * embeddings; Qwen3-MoE's per-head QK-norm, a dense layer, linear RoPE scaling) at a size whose
 * bf16 files are small enough to commit.
 */
export function roundTripConfig(family: MoEFamily): MoEDecoderConfig {
  const c: MoEDecoderConfig = {
    ...presetConfig(family, 'tiny'), hiddenSize: 32, numLayers: 2, numHeads: 4, numKVHeads: family === 'olmoe' ? 4 : 2, headDim: 8,
    numExperts: family === 'olmoe' ? 8 : 4, topK: 2, moeIntermediateSize: 32,
  };
  if (family === 'qwen2_moe') c.sharedExpertIntermediateSize = 32;
  if (family === 'qwen3_moe') c.denseIntermediateSize = 64;
  validateMoEDecoderConfig(c);
  return c;
}

/** The in-memory moe-ts model (random weights from the seed). */
export function roundTripModel(family: MoEFamily, seed = ROUND_TRIP_SEED): MoEDecoder {
  const c = roundTripConfig(family);
  return fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, seed)));
}

/** Exports the model to dir as float32 HF; returns the SHA-256 of model.safetensors. */
export function writeMoeTsCheckpoint(dir: string, family: MoEFamily, seed = ROUND_TRIP_SEED): string {
  mkdirSync(dir, { recursive: true });
  const { config, tensors } = toHF(roundTripModel(family, seed));
  writeHFDir(dir, {
    config: { ...config, bos_token_id: BYTE_BOS_ID, eos_token_id: BYTE_EOS_ID }, tensors, dtype: 'F32',
    tokenizerJson: byteLevelTokenizerJson(), tokenizerConfig: byteLevelTokenizerConfig(),
  });
  return createHash('sha256').update(readFileSync(join(dir, 'model.safetensors'))).digest('hex');
}
