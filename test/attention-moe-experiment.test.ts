// The attention-MoE experiment's FLOP counting, and its and depth-causal's command-line checks (no training run).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs } from '../src/cli/args.js';
import { variantExperiment } from '../src/cli/variant-experiments.js';
import { attentionFlopsPerToken } from '../src/experiments/attention-moe.js';

const args = (...a: string[]) => parseArgs(['experiment', ...a], new Set(['quick']));

test('attention FLOPs per token: dense 8 d^2 + 4 n d; SwitchHead pays for q, k, gates and only k experts', () => {
  const [d, T] = [64, 63];
  const n = 32; // (T + 1) / 2 keys on average
  assert.equal(attentionFlopsPerToken({ type: 'mha' }, d, 4, T), 8 * 64 * 64 + 4 * n * 64);
  // 2 heads of 16, E = 3, k = 1: q and k 2*(2*64*32), gates 2*(2*64*6), value and output experts 2*(2*64*16)*2 heads, mixing 4*n*32
  assert.equal(attentionFlopsPerToken({ type: 'switchhead', heads: 2, headDim: 16, experts: 3, k: 1 }, d, 4, T), 2 * 2 * 64 * 32 + 2 * 2 * 64 * 6 + 2 * 2 * 64 * 16 * 2 + 4 * n * 32);
  // k = E: every expert runs
  const all = attentionFlopsPerToken({ type: 'switchhead', heads: 2, headDim: 16, experts: 3, k: 3 }, d, 4, T);
  const one = attentionFlopsPerToken({ type: 'switchhead', heads: 2, headDim: 16, experts: 3, k: 1 }, d, 4, T);
  assert.equal(all - one, 2 * (2 * 2 * 64 * 16 * 2));
  // heads and headDim default to the block's heads and d / heads
  assert.equal(attentionFlopsPerToken({ type: 'switchhead', experts: 2, k: 1 }, d, 4, T), attentionFlopsPerToken({ type: 'switchhead', heads: 4, headDim: 16, experts: 2, k: 1 }, d, 4, T));
});

test('moe experiment attention-moe: bad options are errors naming them', async () => {
  await assert.rejects(variantExperiment('attention-moe', args('attention-moe', '--capacities', '0.5'), 'x'), /capacities/);
  await assert.rejects(variantExperiment('attention-moe', args('attention-moe', '--seeds', '0'), 'x'), /--seeds: '0' is not an integer >= 1/);
  await assert.rejects(variantExperiment('attention-moe', args('attention-moe', '--steps', 'x'), 'x'), /--steps: 'x' is not an integer >= 1/);
});

test('moe experiment depth-causal: bad options are errors naming them', async () => {
  await assert.rejects(variantExperiment('depth-causal', args('depth-causal', '--quick'), 'x'), /--quick is not an option/);
  await assert.rejects(variantExperiment('depth-causal', args('depth-causal', '--seeds', '2'), 'x'), /seeds/);
  await assert.rejects(variantExperiment('depth-causal', args('depth-causal', '--steps', '0'), 'x'), /--steps: '0' is not an integer >= 1/);
});
