// moe-ts -> HF -> PyTorch (trains, re-saves as bf16 shards) -> HF -> moe-ts: the fixtures of
// reference/round_trip_fixture.py. moe-ts's export must still be the bytes PyTorch read, its
// logits must match the reference's on that export and on the checkpoint PyTorch wrote back, and
// exporting that checkpoint again from moe-ts must give back PyTorch's bf16 tensors bit for bit.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../src/tensor/autograd.js';
import { openHFDir, writeHFDir } from '../src/formats/hf/index.js';
import { fromHF, toHF } from '../src/models/moe-decoder-hf.js';
import { loadLM } from '../src/models/load-lm.js';
import { ROUND_TRIP_FAMILIES, writeMoeTsCheckpoint } from './round-trip-model.js';
import { maxDiff } from './helpers.js';

interface Fixture {
  arch: string;
  exportSha256: string;
  ids: number[];
  shape: [number, number];
  losses: number[];
  logits0: number[];
  logits1: number[];
  routing1: Array<{ layer: number; indices: number[] }>;
}

const FIXTURES = new URL('../../test/fixtures/round-trip/', import.meta.url);
const fixture = (arch: string): Fixture => JSON.parse(readFileSync(new URL(`${arch}.json`, FIXTURES), 'utf8')) as Fixture;
/** float32 logits of the same weights through two implementations (different summation orders). */
const TOL = 1e-4;

let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'moe-round-trip-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

for (const arch of ROUND_TRIP_FAMILIES) {
  test(`${arch}: moe-ts export -> PyTorch reference logits`, () => {
    const fx = fixture(arch);
    const out = join(dir, `export-${arch}`);
    assert.equal(writeMoeTsCheckpoint(out, arch), fx.exportSha256, 'the export changed since the fixture was written: rerun reference/round_trip_fixture.py');
    const hf = openHFDir(out);
    const model = fromHF(hf.config, hf.source);
    hf.source.close();
    const logits = noGrad(() => model.forward(Int32Array.from(fx.ids)));
    assert.deepEqual(logits.shape, fx.shape);
    const d = maxDiff(logits.data, fx.logits0);
    console.log(`  ${arch} export: max |logit - torch| = ${d.toExponential(2)}`);
    assert.ok(d < TOL, `${arch}: max |logit - torch| = ${d}`);
  });

  test(`${arch}: the checkpoint PyTorch trained and re-saved (bf16, 2 shards) loads in moe-ts with the reference's logits`, async () => {
    const fx = fixture(arch);
    assert.ok(fx.losses[fx.losses.length - 1]! < fx.losses[0]! - 1, 'PyTorch trained the weights');
    assert.ok(maxDiff(fx.logits1, fx.logits0) > 1, 'the re-saved checkpoint is not the exported one');
    const back = new URL(`${arch}/`, FIXTURES).pathname;
    const { model } = await loadLM(back);
    const routes: Array<{ layer: number; indices: number[] }> = [];
    model.onRouting = (layer, idx) => routes.push({ layer, indices: Array.from(idx) });
    const logits = noGrad(() => model.forward(Int32Array.from(fx.ids)));
    const d = maxDiff(logits.data, fx.logits1);
    console.log(`  ${arch} re-saved by PyTorch: max |logit - torch| = ${d.toExponential(2)}`);
    assert.ok(d < TOL, `${arch}: max |logit - torch| = ${d}`);
    assert.deepEqual(routes.map((r) => r.indices), fx.routing1.map((r) => r.indices), 'same experts per token and layer');

    // and out again: moe-ts writes PyTorch's bf16 tensors back bit for bit
    const again = join(dir, `again-${arch}`);
    const { config, tensors } = toHF(model);
    mkdirSync(again);
    writeHFDir(again, { config, tensors, dtype: 'BF16' });
    const a = openHFDir(back);
    const b = openHFDir(again);
    try {
      assert.deepEqual([...b.source.names()].sort(), [...a.source.names()].sort());
      for (const name of a.source.names()) {
        assert.deepEqual([b.source.info(name).shape, b.source.info(name).dtype], [a.source.info(name).shape, "BF16"], name);
        assert.deepEqual(b.source.read(name), a.source.read(name), `${name}: values`);
      }
    } finally {
      a.source.close();
      b.source.close();
    }
  });
}
