// The variant experiments' command-line checks (no training runs) and Mixture-of-Depths FLOP counting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs } from '../src/cli/args.js';
import { variantExperiment } from '../src/cli/variant-experiments.js';
import { lmFlopsPerToken } from '../src/experiments/depth.js';
import { lmConfig } from '../src/models/lm.js';

const args = (...a: string[]) => parseArgs(['experiment', ...a], new Set(['quick']));

test('variant experiments: unknown names fall through, bad options are errors naming them', async () => {
  assert.equal(await variantExperiment('implicit-bias', args('implicit-bias'), 'x'), null);
  await assert.rejects(variantExperiment('continual', args('continual', '--seeds', '2'), 'x'), /seeds/);
  await assert.rejects(variantExperiment('straight-through', args('straight-through', '--steps', '0'), 'x'), /--steps: '0' is not an integer >= 1/);
  await assert.rejects(variantExperiment('depth', args('depth', '--capacities', '0.5,2'), 'x'), /--capacities: '2' in '0.5,2' is not a number in \(0, 1\]/);
});

test('FLOPs per token: capacity 1 is the dense count; routed blocks scale by C/T and attention by C', () => {
  const c = lmConfig({ dModel: 8, layers: 2, heads: 2, maxSeqLen: 16, positions: 'learned', numExperts: 4, k: 1, dFF: 16 });
  const T = 16;
  const block = (L: number): number => 8 * 64 + 4 * 8 * ((L + 1) / 2) + 4 * 8 * 16 + 2 * 8 * 4;
  assert.equal(lmFlopsPerToken(c, T), 2 * 8 * 256 + 2 * block(16));
  const half = lmConfig({ ...c, depthCapacity: 0.25, depthEvery: 2 });
  assert.equal(lmFlopsPerToken(half, T), 2 * 8 * 256 + block(16) + (4 / 16) * block(4) + 2 * 8);
});
