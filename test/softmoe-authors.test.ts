// The 'authors' recipe of the Soft MoE classifier against a PyTorch fixture of Chung et al.'s
// formulation (reference/softmoe_authors_fixture.py): pixel standardisation, slots from the
// normalised tokens, no decoder bias; logits, D, C, loss and every gradient, both formulations.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Tensor, ops, withBackend } from '../src/index.js';
import { SoftMoEClassifier, recipeModelFields } from '../src/models/softmoe-classifier.js';
import { resolveImplicitBiasOptions } from '../src/experiments/implicit-bias.js';
import { bytesToImages } from '../src/data/batches.js';
import { backendsUnderTest } from './helpers.js';

type Entry = { shape: number[]; data: number[] };
type Case = { meta: Record<string, number> } & Record<string, Entry>;

const fixture = JSON.parse(readFileSync(new URL('../../test/fixtures/softmoe_authors.json', import.meta.url), 'utf8')) as Record<string, Case>;
const t = (c: Case, key: string): Tensor => ops.tensor(Float32Array.from(c[key]!.data), c[key]!.shape);

/** max |a - b| / max |b| <= tol: the tolerance is 1e-4 relative to the largest value (float32 sums over <= 144 terms). */
function assertRel(actual: Tensor, expected: Tensor, what: string, tol = 1e-4): void {
  assert.equal(actual.size, expected.size, `${what}: size`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.size; i++) {
    num = Math.max(num, Math.abs(actual.data[i]! - expected.data[i]!));
    den = Math.max(den, Math.abs(expected.data[i]!));
  }
  assert.ok(num <= tol * Math.max(den, 1e-12), `${what}: relative error ${(num / den).toExponential(2)} > ${tol}`);
}

for (const backend of backendsUnderTest()) {
  for (const [name, c] of Object.entries(fixture)) {
    for (const f of ['slots', 'tokens'] as const) {
      test(`authors recipe matches the PyTorch fixture of their formulation: ${name} (n=${c.meta['n']}), ${f} side (${backend})`, () => {
        withBackend(backend, () => {
          const S = c.meta['imageSize']!;
          const { config } = resolveImplicitBiasOptions({ recipe: 'authors' });
          assert.deepEqual(config.pixelStats, { mean: 0.1307, std: 0.3081 });
          assert.equal(config.shuffle, false);
          assert.equal(config.stepFirstEpoch, false);
          const model = new SoftMoEClassifier({ ...config.model, numExperts: c.meta['n']!, imageSize: S, patch: S / 2 }, 0);
          assert.deepEqual({ ...recipeModelFields('authors') }, { normalize: config.model.normalize, slotInputs: config.model.slotInputs, phiInit: config.model.phiInit, decoderBias: config.model.decoderBias });
          model.moe.formulation = f;
          model.moe.phi.data.set(t(c, 'phi').data);
          model.moe.scale!.data.set(t(c, 'scale').data);
          model.moe.experts.w1.data.set(t(c, 'w1').data);
          model.moe.experts.w2.data.set(t(c, 'w2').data);
          model.decoder.weight.data.set(t(c, 'decoder').data);
          // pixels through the loaders' own scaling with the recipe's statistics
          const B = c.meta['B']!;
          const images = new Tensor(bytesToImages(Uint8Array.from(c['pixels']!.data), 1, S * S, config.pixelStats!), [B, S * S]);
          const out = model.forward(images);
          assertRel(out.logits, t(c, 'logits'), 'logits');
          const w = model.moe.weights(model.patchify(images));
          assertRel(w.dispatch, t(c, 'D'), 'D');
          assertRel(w.combine, t(c, 'C'), 'C');
          const loss = ops.crossEntropy(out.logits, new Tensor(Int32Array.from(c['labels']!.data), [B]));
          assertRel(ops.reshape(loss, [1]), t(c, 'loss'), 'loss');
          loss.backward();
          assertRel(model.moe.phi.grad!, t(c, 'dphi'), 'dPhi');
          assertRel(model.moe.scale!.grad!, t(c, 'dscale'), 'dscale');
          assertRel(model.moe.experts.w1.grad!, t(c, 'dw1'), 'dw1');
          assertRel(model.moe.experts.w2.grad!, t(c, 'dw2'), 'dw2');
          assertRel(model.decoder.weight.grad!, t(c, 'ddecoder'), 'ddecoder');
        });
      });
    }
  }
}
