// The simulator on a routing trace recorded from a real moe-ts run, end to end through the CLI:
// `moe train --set parallel.trace=FILE` (with the experts on 2 workers), then `moe simulate ep
// --trace FILE`: the bytes per link it prints equal a count made by hand from the trace (each row
// from its token's device to its expert's device, back in the combine, twice more in the backward),
// and the expert compute it adds for the predicted step equals the busiest device's FLOPs by hand.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { evenSplit, ownerOf } from '../src/parallel/layout.js';
import type { SimulationResult, TraceRecord } from '../src/parallel/simulator.js';

test('moe train records a routing trace; moe simulate ep prices it: bytes per link equal a hand count, inter-node bytes only across nodes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-ep-trace-'));
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const cfg = fileURLToPath(new URL('../../configs/udhr-lm-moe.json', import.meta.url));
  const sets = ['model.dModel=16', 'model.layers=2', 'model.heads=2', 'model.dFF=16', 'model.numExperts=4', 'data.maxLanguages=2', 'data.seqLen=16',
    'data.stepsPerEpoch=3', 'data.evalWindows=2', 'train.epochs=1', 'optim.warmupSteps=1', 'parallel.experts=2'];
  try {
    const trace = join(dir, 'trace.jsonl');
    const tr = spawnSync(process.execPath, [main, 'train', '--config', cfg, ...sets.flatMap((s) => ['--set', s]), '--set', `parallel.trace=${trace}`, '--out', join(dir, 'run')],
      { encoding: 'utf8', timeout: 120_000 });
    assert.equal(tr.status, 0, tr.stderr);
    const records = readFileSync(trace, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as TraceRecord);
    const steps = new Set(records.map((r) => r.step)).size;
    assert.equal(steps, 3, 'one record per layer per training step');
    assert.equal(records.length, 2 * steps);

    // 4 devices, 2 per node, made-up links, given as a file (as users give a topology)
    const topo = join(dir, 'topo.json');
    const D = 4;
    writeFileSync(topo, JSON.stringify({ name: 'test-2x2', devices: D, devicesPerNode: 2, intra: { bandwidthGBs: 100, latencyUs: 2 }, inter: { bandwidthGBs: 10, latencyUs: 5 }, computeTFlops: 2 }));
    const sim = spawnSync(process.execPath, [main, 'simulate', 'ep', '--trace', trace, '--topology', topo, '--bytes-per-value', '4', '--json'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(sim.status, 0, sim.stderr);
    const r = JSON.parse(sim.stdout) as SimulationResult;
    assert.equal(r.steps, steps);

    // expert compute by hand: per layer record the device with the most rows, forward + backward (3x), 2 matrices (gelu)
    let compute = 0;
    for (const rec of records) {
      assert.equal(rec.dFF, 16, 'the trace names the hidden width');
      assert.equal(rec.activation, 'gelu');
      const rows = new Array<number>(D).fill(0);
      const experts = evenSplit(rec.groupSizes.length, D);
      rec.groupSizes.forEach((n, e) => { rows[ownerOf(experts, e)]! += n; });
      compute += (3 * Math.max(...rows) * 2 * rec.dModel * 16 * 2) / 2e12 / steps;
    }
    assert.ok(r.computeSeconds !== null && Math.abs(r.computeSeconds - compute) < 1e-15, `compute ${r.computeSeconds} vs ${compute}`);
    // by hand: row g of a record goes from its token's device to its expert's device (dispatch), back (combine), and both again in the backward
    const want = Array.from({ length: D }, () => new Array<number>(D).fill(0));
    for (const rec of records) {
      const shards = evenSplit(rec.tokens, D);
      const experts = evenSplit(rec.groupSizes.length, D);
      let g = 0;
      rec.groupSizes.forEach((n, e) => {
        for (let i = 0; i < n; i++, g++) {
          const from = ownerOf(shards, rec.tokenOfRow[g]!);
          const to = ownerOf(experts, e);
          if (from === to) continue;
          const bytes = rec.dModel * 4;
          want[from]![to]! += (2 * bytes) / steps;
          want[to]![from]! += (2 * bytes) / steps;
        }
      });
    }
    const p = r.perStep.pairwise;
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) assert.ok(Math.abs(p.linkBytes[i]![j]! - want[i]![j]!) < 1e-6, `pairwise link ${i}->${j}: ${p.linkBytes[i]![j]} vs ${want[i]![j]}`);
    const node = (x: number): number => Math.floor(x / 2);
    let inter = 0;
    let intra = 0;
    want.forEach((row, i) => row.forEach((b, j) => { if (node(i) === node(j)) intra += b; else inter += b; }));
    assert.ok(inter > 0 && intra > 0, 'rows cross both kinds of link');
    assert.ok(Math.abs(p.interBytes - inter) < 1e-6 && Math.abs(p.intraBytes - intra) < 1e-6);
    // the hierarchical exchange moves the same cross-node bytes; every algorithm predicts a positive time
    assert.ok(Math.abs(r.perStep.hierarchical.interBytes - inter) < 1e-6);
    for (const a of ['pairwise', 'ring', 'bruck', 'hierarchical'] as const) assert.ok(r.perStep[a].seconds > 0, a);

    const text = spawnSync(process.execPath, [main, 'simulate', 'ep', '--trace', trace, '--topology', topo], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /busiest link MB\/step/);
    assert.match(text.stdout, /pairwise, MB\/step per link/);
    assert.match(text.stdout, /expert compute [0-9.]+ ms\/step .*step = compute \+ exchange/);
    assert.match(text.stdout, /busiest link MB\/step   step ms/);
    const bad = spawnSync(process.execPath, [main, 'simulate', 'ep', '--trace', trace, '--topology', topo, '--devices', '8'], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /simulate: 8 devices for 4 experts/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
