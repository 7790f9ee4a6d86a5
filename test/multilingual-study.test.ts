// The multilingual study: MI / ARI / clustering against hand-computed cases, byte classes, routing hooks, and the --quick parts end to end.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adjustedRandIndex, clusterProfiles, entropyBits, groupRows, jensenShannon, mutualInformation } from '../src/experiments/multilingual/information.js';
import { BYTE_CLASSES, byteClasses } from '../src/experiments/multilingual/byte-classes.js';
import { top1, withRoutingHook } from '../src/experiments/multilingual/routed-lm.js';
import { MULTILINGUAL_PARTS } from '../src/experiments/multilingual/parts.js';
import { experimentCommand } from '../src/cli/experiment-commands.js';
import { parseArgs } from '../src/cli/args.js';
import { ByteLM } from '../src/models/lm.js';
import { Tensor } from '../src/tensor/tensor.js';
import { encodeBytes } from '../src/data/text.js';

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'moe-multilingual-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

test('mutualInformation: hand-computed tables', () => {
  const diag = mutualInformation([[10, 0], [0, 10]]);
  close(diag.mi, 1); close(diag.nmi, 1); close(diag.uColGivenRow, 1);
  const indep = mutualInformation([[5, 5], [5, 5]]);
  close(indep.mi, 0); close(indep.nmi, 0);
  // p = [[.5, .25], [.25, 0]]: I = .5 log2(.5/.5625) + 2 * .25 log2(.25/.1875)
  const m = mutualInformation([[2, 1], [1, 0]]);
  close(m.mi, 0.5 * Math.log2(0.5 / 0.5625) + 0.5 * Math.log2(0.25 / 0.1875));
  close(m.mi, 0.1225562, 1e-6);
  close(m.hRow, entropyBits([3, 1]));
  // a label that splits 4 experts into pairs carries 1 of their 2 bits
  const half = mutualInformation([[5, 5, 0, 0], [0, 0, 5, 5]]);
  close(half.mi, 1); close(half.uColGivenRow, 0.5); close(half.nmi, 2 / 3);
  close(entropyBits([1, 1, 1, 1]), 2);
  close(entropyBits([]), 0);
  assert.throws(() => mutualInformation([[1, 2], [3]]), /row 1 has 1 columns/);
  assert.throws(() => mutualInformation([[1, -2]]), /cell \[0\]\[1\] = -2/);
  assert.deepEqual(groupRows([[1, 2], [3, 4], [5, 6]], [1, 0, 1], 2), [[3, 4], [6, 8]]);
  assert.throws(() => groupRows([[1]], [2], 2), /group id 2 of row 0/);
});

test('adjustedRandIndex: hand-computed cases', () => {
  close(adjustedRandIndex([0, 0, 1, 1, 2], [5, 5, 3, 3, 9]), 1);
  // contingency sums 2, row pairs 6, column pairs 3, C(6,2) = 15: (2 - 1.2) / (4.5 - 1.2)
  close(adjustedRandIndex([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]), 0.8 / 3.3);
  close(adjustedRandIndex([0, 0, 1, 2], [0, 0, 1, 1]), (1 - 1 / 3) / (1.5 - 1 / 3));
  assert.ok(adjustedRandIndex([0, 1, 0, 1, 0, 1], [0, 0, 0, 1, 1, 1]) < 0);
  assert.throws(() => adjustedRandIndex([0, 1], [0]), /2 and 1 items/);
});

test('jensenShannon and clusterProfiles', () => {
  close(jensenShannon([1, 0], [0, 1]), 1);
  close(jensenShannon([1, 3], [2, 6]), 0);
  const profiles = [[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1], [0, 0.1, 0.9], [0, 1, 0]];
  assert.deepEqual(Array.from(clusterProfiles(profiles, 3)), [0, 0, 1, 1, 2]);
  assert.deepEqual(Array.from(clusterProfiles(profiles, 1)), [0, 0, 0, 0, 0]);
  // ties (identical profiles) still assign every row
  const same = clusterProfiles([[1, 1], [1, 1], [1, 1], [1, 0]], 2);
  assert.deepEqual(Array.from(same), [0, 0, 0, 1]);
  assert.throws(() => clusterProfiles(profiles, 6), /K must be an integer in \[1, 5\]/);
});

test('byteClasses: every byte of a character takes its class', () => {
  const text = 'Ab 12, цвет!\nx';
  const c = Array.from(byteClasses(encodeBytes(text)), (i) => BYTE_CLASSES[i]);
  assert.deepEqual(c.slice(0, 7), ['capital', 'letter', 'whitespace', 'digit', 'digit', 'punctuation', 'whitespace']);
  // ц (2 bytes) starts a word, в е т (2 bytes each) are letters
  assert.deepEqual(c.slice(7, 15), ['word start', 'word start', 'letter', 'letter', 'letter', 'letter', 'letter', 'letter']);
  assert.deepEqual(c.slice(15), ['punctuation', 'whitespace', 'word start']);
  assert.equal(byteClasses(Uint8Array.of(0xff, 0x41))[0], BYTE_CLASSES.indexOf('other'));
});

test('withRoutingHook reports each MoE layer\'s routing and restores the routers; top1 picks the largest gate', () => {
  const m = new ByteLM({ dModel: 16, layers: 2, heads: 2, maxSeqLen: 8, numExperts: 4, k: 2, dFF: 8 }, 1);
  const route = m.moeLayers()[0]!.router.route;
  const seen: number[] = [];
  const ids = new Tensor(Int32Array.from([1, 2, 3, 4, 5, 6]), [1, 6]);
  withRoutingHook(m, (layer, r) => {
    seen.push(layer);
    assert.equal(r.tokens, 6);
    const t = top1(r);
    for (let tok = 0; tok < 6; tok++) {
      const gates = Array.from(r.token).flatMap((x, a) => (x === tok ? [[r.gates.data[a]!, r.expert[a]!]] : []));
      gates.sort((a, b) => b[0]! - a[0]!);
      assert.equal(t[tok], gates[0]![1]);
    }
  }, () => m.forward(ids));
  assert.deepEqual(seen, [0, 1]);
  assert.equal(m.moeLayers()[0]!.router.route, route);
});

test('moe experiment multilingual: the --quick parts write results.json with the expected fields, and reuse cached runs', async () => {
  const run = (argv: string[]) => experimentCommand(parseArgs(['experiment', 'multilingual', ...argv], new Set(['quick'])));
  const origLog = console.log;
  const origErr = console.error;
  const errs: string[] = [];
  console.log = () => {};
  console.error = (s: string) => { errs.push(String(s)); };
  try {
    assert.equal(await run(['specialisation', '--quick', '--out', join(dir, 'specialisation')]), 0);
    assert.equal(await run(['stability', '--quick', '--out', join(dir, 'stability')]), 0);
    assert.equal(await run(['rare', '--quick', '--out', join(dir, 'rare')]), 0);
    await assert.rejects(run(['nonsense', '--quick']), /unknown part 'nonsense' \(available: specialisation, stability, rare/);
    await assert.rejects(run(['rare', '--quick', '--seeds', '0']), /--seeds: '0' is not an integer >= 1/);
    await assert.rejects(run(['rare', '--bogus']), /bogus/);
  } finally {
    console.log = origLog;
    console.error = origErr;
  }
  assert.ok(errs.some((l) => /base seed 0: finished run found/.test(l)), 'stability reuses the specialisation run');
  const spec = JSON.parse(readFileSync(join(dir, 'specialisation', 'results.json'), 'utf8'));
  assert.equal(spec.part, 'specialisation');
  assert.match(spec.command, /^moe experiment multilingual specialisation --quick/);
  assert.ok(spec.seconds > 0);
  const s0 = spec.runs[0].specialisation;
  for (const k of ['language', 'family', 'genus', 'script', 'byteClass']) {
    const mi = s0.layers[0].final[k];
    assert.ok(mi.mi >= 0 && mi.mi <= mi.hCol + 1e-9, `${k} MI within [0, H(expert)]`);
  }
  assert.equal(spec.runs[0].usage.language[0].length, 4, 'one usage row per language');
  assert.ok(['family', 'genus', 'script'].every((k) => typeof s0.clusters[k].ari === 'number'));
  assert.ok(readdirSync(join(dir, 'specialisation')).some((f) => /^language-expert-layer0\.png$/.test(f)));
  const stab = JSON.parse(readFileSync(join(dir, 'stability', 'results.json'), 'utf8'));
  assert.deepEqual(stab.steps, [0, 3, 6]);
  assert.ok(stab.changes.every((c: { changedSincePrevious: number[] }) => c.changedSincePrevious.every((x) => x >= 0 && x <= 1)));
  const rare = JSON.parse(readFileSync(join(dir, 'rare', 'results.json'), 'utf8'));
  assert.deepEqual(rare.cells.map((c: { name: string }) => c.name), ['base', 'temperature', 'balance']);
  const m = rare.cells[1].runs[0].measures;
  assert.ok(m.lowTrainWindowShare >= 0 && m.lowTrainWindowShare <= 1);
  assert.ok(Number.isFinite(m.meanLoss.high) && Number.isFinite(m.meanLoss.low));
  assert.deepEqual(m.rare.map((r: { threshold: number }) => r.threshold), [0.25, 0.5]);
  for (const f of ['results.md', 'results.json']) assert.ok(existsSync(join(dir, 'rare', f)));
  assert.deepEqual(Object.keys(MULTILINGUAL_PARTS).slice(0, 3), ['specialisation', 'stability', 'rare']);
});
