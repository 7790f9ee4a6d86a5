// Expert parallelism on one host: the exchange layout against a naive count, the parallel layer
// against the one-process MoELayer (bit for bit: outputs, every gradient, aux losses, metrics) at
// N = 1, 2, 4 on every backend, faults (a killed worker, an exiting worker, a failing worker: a
// clear error, no hang), config validation, and a tiny `moe train` run whose metrics equal N = 1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng, Tensor, noGrad, ops, withBackend, moe } from '../src/index.js';
import { attachExpertParallel, ExpertParallel } from '../src/parallel/expert-parallel.js';
import { evenSplit, exchangeLayout, ownerOf, rowMatrix } from '../src/parallel/layout.js';
import { OP } from '../src/parallel/protocol.js';
import { validateRun, applySets } from '../src/config/run.js';
import { backendsUnderTest, layerStep, randTensor, type LayerStep } from './helpers.js';

test('exchangeLayout counts the rows each shard sends each expert, as a naive loop does', () => {
  const rng = new Rng(7);
  for (const [T, E, N, k] of [[17, 8, 4, 2], [5, 4, 2, 1], [1, 3, 3, 1], [0, 4, 2, 2], [30, 6, 4, 3]] as const) {
    const token: number[] = [];
    const expert: number[] = [];
    for (let t = 0; t < T; t++) {
      const chosen = new Set<number>();
      while (chosen.size < k) chosen.add(rng.int(E));
      for (const e of chosen) { token.push(t); expert.push(e); }
    }
    const plan = moe.planDispatch(Int32Array.from(token), Int32Array.from(expert), new Float32Array(token.length), E, null);
    const l = exchangeLayout(plan.tokenOfRow, plan.groupSizes, T, N);
    const shards = evenSplit(T, N);
    const experts = evenSplit(E, N);
    const naive = Array.from({ length: N }, () => new Array<number>(N).fill(0));
    for (let i = 0; i < token.length; i++) naive[ownerOf(shards, token[i]!)]![ownerOf(experts, expert[i]!)]!++;
    assert.deepEqual(rowMatrix(l), naive, `T=${T} E=${E} N=${N}`);
    assert.equal(l.sendOffset[N * E], plan.tokenOfRow.length);
    checkSlots(l, plan.tokenOfRow);
  }
  // rows of an expert in score order, not token order (expert choice): each source's rows keep plan order in its slots
  const l = exchangeLayout(Int32Array.of(3, 0, 2, 1, 1, 3), Int32Array.of(4, 2), 4, 2);
  checkSlots(l, Int32Array.of(3, 0, 2, 1, 1, 3));
  assert.deepEqual([...l.rowOfSlot], [1, 3, 4, 0, 2, 5]);
  assert.throws(() => exchangeLayout(new Int32Array(0), new Int32Array(2), 4, 3), /3 ranks for 2 experts/);
  assert.throws(() => exchangeLayout(Int32Array.of(0, 9), Int32Array.of(2), 4, 1), /row 1 names token 9, outside \[0, 4\)/);
});

/** Slots are a permutation of the rows; each (source shard, expert) block holds that source's rows of the expert, in plan order. */
function checkSlots(l: ReturnType<typeof exchangeLayout>, tokenOfRow: Int32Array): void {
  const E = l.experts;
  for (let g = 0; g < tokenOfRow.length; g++) assert.equal(l.rowOfSlot[l.slotOfRow[g]!], g);
  for (let r = 0; r < l.ranks; r++) {
    for (let e = 0; e < E; e++) {
      const want: number[] = [];
      for (let g = l.groupStart[e]!; g < l.groupStart[e + 1]!; g++) if (ownerOf(l.shardStart, tokenOfRow[g]!) === r) want.push(g);
      assert.deepEqual([...l.rowOfSlot.subarray(l.sendOffset[r * E + e]!, l.sendOffset[r * E + e + 1]!)], want, `source ${r}, expert ${e}`);
    }
  }
}

interface Case {
  name: string;
  config: moe.MoELayerConfig;
  T: number;
}

const CASES: Case[] = [
  { name: 'top-2 gelu, capacity 1 (drops)', config: { dModel: 8, dFF: 12, numExperts: 4, router: { type: 'topk', k: 2 }, capacityFactor: 1, seed: 5 }, T: 20 },
  { name: 'top-1 swiglu with biases, dropless, shared expert', config: { dModel: 6, dFF: 8, numExperts: 8, router: { type: 'topk', k: 1 }, activation: 'swiglu', bias: true, sharedExperts: 1, seed: 2 }, T: 13 },
  { name: 'probability drops, top-3 of 4', config: { dModel: 5, dFF: 7, numExperts: 4, router: { type: 'topk', k: 3 }, capacityFactor: 0.5, dropPolicy: 'probability', seed: 9 }, T: 11 },
  // 2 tokens, top-1 of 8: at most 2 experts busy, so at N = 4 some ranks get no token at all
  { name: 'zero-token experts on some ranks (T=2, E=8, k=1)', config: { dModel: 4, dFF: 6, numExperts: 8, router: { type: 'topk', k: 1 }, seed: 1 }, T: 2 },
  { name: 'one token', config: { dModel: 4, dFF: 5, numExperts: 4, router: { type: 'topk', k: 2 }, seed: 3 }, T: 1 },
  { name: 'no tokens', config: { dModel: 4, dFF: 5, numExperts: 4, router: { type: 'topk', k: 2 }, seed: 3 }, T: 0 },
];

/** One forward and backward (twice with accumulate: the second adds into existing gradients). */
function step(layer: moe.MoELayer, x: Tensor, g: Tensor, repeats: number): LayerStep {
  const xa = new Tensor(Float32Array.from(x.data), [...x.shape]).requireGrad();
  let out: moe.MoEOutput | null = null;
  for (let i = 0; i < repeats; i++) {
    out = layer.forward(xa);
    ops.add(ops.sum(ops.mul(out.y, g)), out.auxLoss).backward();
  }
  return layerStep(layer, out!, xa);
}

/** [workers, overlap degree] pairs the layer is checked at, besides N = 1, 2, 4 without overlap. */
const OVERLAPS: Array<[number, number]> = [[1, 3], [2, 2], [4, 3]];

for (const backend of backendsUnderTest()) {
  for (const c of CASES) {
    test(`expert-parallel layer equals MoELayer bit for bit at N = 1, 2, 4, and with overlap: ${c.name} (${backend})`, async () => {
      const d = c.config.dModel;
      const x = randTensor(new Rng(11), [c.T, d]);
      const g = randTensor(new Rng(12), [c.T, d]);
      const reference = withBackend(backend, () => ({ once: step(new moe.MoELayer(c.config), x, g, 1), twice: step(new moe.MoELayer(c.config), x, g, 2) }));
      for (const [N, overlapDegree] of [[1, 1], [2, 1], [4, 1], ...OVERLAPS] as Array<[number, number]>) {
        const opts = { workers: N, timeoutMs: 30_000, overlapDegree };
        const layer = new moe.MoELayer(c.config);
        const ep = attachExpertParallel(layer, opts);
        const incoming: number[][] = [];
        ep.onExchange = (_layer, rows) => incoming.push(rows[0]!.map((_, j) => rows.reduce((a, r) => a + r[j]!, 0)));
        try {
          const got = withBackend(backend, () => step(layer, x, g, 1));
          assert.deepEqual(got, reference.once, `N=${N} overlap ${overlapDegree}: one step`);
          // eval without a graph: same output, nothing kept for backward
          const y = withBackend(backend, () => noGrad(() => layer.forward(x).y));
          assert.deepEqual([...y.data], reference.once.y, `N=${N} overlap ${overlapDegree}: noGrad forward`);
          const layer2 = new moe.MoELayer(c.config);
          const ep2 = attachExpertParallel(layer2, opts);
          try {
            assert.deepEqual(withBackend(backend, () => step(layer2, x, g, 2)), reference.twice, `N=${N} overlap ${overlapDegree}: accumulated gradients`);
          } finally {
            await ep2.close();
          }
          if (c.T === 2 && N === 4) assert.ok(incoming.every((rows) => rows.includes(0)), `N=${N}: some rank received no rows (${JSON.stringify(incoming)})`);
          if (c.T >= 11 && N > 1) assert.ok(ep.bytes.crossRank > 0, `N=${N}: rows crossed between ranks`);
        } finally {
          await ep.close();
        }
      }
    });
  }
}

test('a model of two MoE layers: each layer has its own experts on the shared workers; close() restores the layers', async () => {
  const cfg = (seed: number): moe.MoELayerConfig => ({ dModel: 6, dFF: 8, numExperts: 4, router: { type: 'topk', k: 2 }, capacityFactor: 1.25, seed });
  const run = (a: moe.MoELayer, b: moe.MoELayer, x: Tensor): number[] => {
    const xa = new Tensor(Float32Array.from(x.data), [...x.shape]).requireGrad();
    const h = a.forward(xa);
    const o = b.forward(ops.gelu(h.y));
    ops.add(ops.sum(ops.mul(o.y, o.y)), ops.add(h.auxLoss, o.auxLoss)).backward();
    return [...o.y.data, ...xa.grad!.data, ...a.experts.w1.grad!.data, ...b.experts.w2.grad!.data];
  };
  const x = randTensor(new Rng(1), [15, 6]);
  const want = run(new moe.MoELayer(cfg(1)), new moe.MoELayer(cfg(2)), x);
  const a = new moe.MoELayer(cfg(1));
  const b = new moe.MoELayer(cfg(2));
  const ep = new ExpertParallel([a, b], { workers: 2 });
  try {
    assert.deepEqual(run(a, b, x), want);
  } finally {
    await ep.close();
  }
  assert.equal(a.routedExperts, null);
});

test('faults: a killed worker fails the step with an error naming it (no hang); the group stays broken', async () => {
  const layer = new moe.MoELayer({ dModel: 4, dFF: 6, numExperts: 4, router: { type: 'topk', k: 2 }, seed: 1 });
  const ep = attachExpertParallel(layer, { workers: 2, timeoutMs: 1500 });
  const x = randTensor(new Rng(2), [8, 4]);
  try {
    layer.forward(x); // healthy
    // terminate() cannot tell the blocked main thread: the phase's deadline must
    void ep.group.threads[1]!.terminate();
    assert.throws(() => layer.forward(x), /expert-parallel: worker 1 did not finish 'pack' \(layer 0 forward\) within 1500 ms .*resume the run from its last checkpoint/);
    assert.throws(() => layer.forward(x), /worker group is broken by an earlier failure: expert-parallel: worker 1 did not finish/);
  } finally {
    await ep.close();
  }
  // once the exit is known, a new group's step fails at once, naming the exit
  const ep2 = attachExpertParallel(layer, { workers: 2, timeoutMs: 60_000 });
  try {
    const w = ep2.group.threads[0]!;
    void w.terminate();
    await once(w, 'exit');
    const t0 = Date.now();
    assert.throws(() => layer.forward(x), /expert-parallel: worker 0 exited \(code 1\) during 'pack'/);
    assert.ok(Date.now() - t0 < 30_000, 'the exit is reported without waiting for the deadline');
  } finally {
    await ep2.close();
  }
});

test('faults: a worker that exits or throws inside a phase fails the step at once with its reason', async () => {
  const layer = new moe.MoELayer({ dModel: 4, dFF: 6, numExperts: 4, router: { type: 'topk', k: 2 }, seed: 1 });
  const x = randTensor(new Rng(2), [8, 4]);
  const args = { layer: 0, callId: 0, tokens: 0, rows: 0, flags: 0, backend: 0 };
  const ep = attachExpertParallel(layer, { workers: 2, timeoutMs: 60_000 });
  try {
    assert.throws(() => ep.group.run(OP.fail, args, 'test'), /worker 0 failed in 'fail' \(test\): failure requested by the test hook/);
    assert.throws(() => layer.forward(x), /broken by an earlier failure/);
  } finally {
    await ep.close();
  }
  const ep2 = attachExpertParallel(layer, { workers: 2, timeoutMs: 60_000 });
  try {
    assert.throws(() => ep2.group.run(OP.exit, { ...args, arg: 3 }, 'test'), /worker 0 exited during 'exit' \(test\)/);
  } finally {
    await ep2.close();
  }
  assert.throws(() => ep2.group.run(OP.pack, args, 'test'), /the worker group is closed/);
});

test('faults with overlap: a killed worker fails the step naming it; the others stop waiting for its chunks', async () => {
  const layer = new moe.MoELayer({ dModel: 4, dFF: 6, numExperts: 4, router: { type: 'topk', k: 2 }, seed: 1 });
  const ep = attachExpertParallel(layer, { workers: 2, timeoutMs: 1500, overlapDegree: 2 });
  const x = randTensor(new Rng(2), [8, 4]);
  try {
    layer.forward(x); // healthy
    void ep.group.threads[1]!.terminate();
    // rank 0 waits for rank 1's chunk 0 and gives up before the main thread's deadline, naming rank 1
    assert.throws(() => layer.forward(x), /expert-parallel: worker 0 failed in 'forwardOverlap' \(layer 0 forward\): rank 0: rank 1 did not pack chunk 0 of 2 within 1200 ms/);
    assert.throws(() => layer.forward(x), /worker group is broken by an earlier failure/);
  } finally {
    await ep.close();
  }
});

test('expert parallelism refuses what it cannot do, naming it', async () => {
  const layer = new moe.MoELayer({ dModel: 4, dFF: 6, numExperts: 2, seed: 1 });
  assert.throws(() => attachExpertParallel(layer, { workers: 3 }), /3 workers for a layer of 2 experts/);
  assert.throws(() => attachExpertParallel(layer, { workers: 2, overlapDegree: 0 }), /overlapDegree = 0 must be an integer in \[1, 64\] \(parallel.overlap\)/);
  assert.throws(() => attachExpertParallel(new moe.ExpertBank(2, 4, 4), { workers: 1 }), /the model has no MoELayer/);
  const ep = attachExpertParallel(layer, { workers: 2 });
  try {
    layer.to('float64');
    // float64 runs on the js backend only
    assert.throws(() => withBackend('js', () => layer.forward(randTensor(new Rng(1), [3, 4], 'float64'))), /expert-parallel: float32 tensors only, got float64/);
  } finally {
    await ep.close();
  }
});

test('config: parallel.experts is validated and settable with --set', () => {
  const base = { model: { type: 'softmoe-classifier' } };
  assert.equal(validateRun(base).parallel, undefined);
  assert.deepEqual(validateRun({ ...base, parallel: { experts: 4 } }).parallel, { experts: 4, trace: null, overlap: 1 });
  assert.throws(() => validateRun({ ...base, parallel: { overlap: 65 } }), /config.parallel.overlap: 65 is above the maximum 64/);
  assert.throws(() => validateRun({ ...base, parallel: { experts: 0 } }), /config.parallel.experts: 0 is below the minimum 1/);
  assert.throws(() => validateRun({ ...base, parallel: { workers: 2 } }), /config.parallel.workers: unknown key/);
  const raw: Record<string, unknown> = { ...base };
  applySets(raw, ['parallel.experts=2', 'parallel.overlap=3']);
  assert.deepEqual(validateRun(raw).parallel, { experts: 2, trace: null, overlap: 3 });
  assert.throws(() => applySets({}, ['parallel.experts=two']), /--set parallel.experts=two: expected a number/);
});

test('moe train --set parallel.experts=2 (also with parallel.overlap=2) writes the same metrics.jsonl as one process', () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-ep-'));
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const cfg = fileURLToPath(new URL('../../configs/udhr-lm-moe.json', import.meta.url));
  const small = ['--set', 'model.dModel=16', '--set', 'model.layers=2', '--set', 'model.heads=2', '--set', 'model.dFF=16', '--set', 'model.numExperts=4',
    '--set', 'data.maxLanguages=2', '--set', 'data.seqLen=16', '--set', 'data.stepsPerEpoch=3', '--set', 'data.evalWindows=4', '--set', 'train.epochs=2',
    '--set', 'optim.warmupSteps=1'];
  try {
    const metrics = (n: number, overlap = 1): string[] => {
      const out = join(dir, `n${n}-o${overlap}`);
      const r = spawnSync(process.execPath, [main, 'train', '--config', cfg, ...small, ...(n > 1 ? ['--set', `parallel.experts=${n}`, '--set', `parallel.overlap=${overlap}`] : []), '--out', out],
        { encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      // wall-clock fields differ between any two runs
      return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.stringify({ ...JSON.parse(l), seconds: 0, time: 0 }));
    };
    const one = metrics(1);
    assert.ok(one.length >= 8, 'steps, evaluations and the test record');
    assert.deepEqual(metrics(2), one);
    assert.deepEqual(metrics(2, 2), one);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('simulator: the seed\'s T/N_d log N_d holds for the log-round (Bruck) all-to-all; pairwise is T/N_d, ring about T/2', async () => {
  const { exchangeCost, uniformBytes, validateTopology } = await import('../src/parallel/simulator.js');
  // bandwidth only (latency ~0), one node: 1 GB/s per device
  const topo = validateTopology({ devices: 64, devicesPerNode: 64, intra: { bandwidthGBs: 1, latencyUs: 1e-9 }, inter: { bandwidthGBs: 1, latencyUs: 1e-9 } }, 'test');
  const t = (T: number, D: number, a: 'pairwise' | 'ring' | 'bruck'): number => exchangeCost(uniformBytes(T, D, 2, 1024), topo, a).seconds;
  for (const a of ['pairwise', 'ring', 'bruck'] as const) assert.ok(Math.abs(t(8192, 8, a) / t(4096, 8, a) - 2) < 1e-6, `${a}: linear in T`);
  const rel = (x: number, y: number): number => Math.abs(x / y - 1);
  for (const D of [4, 8, 16, 32]) {
    // Bruck: log2 D rounds, each moving half of a device's T k / D rows
    assert.ok(rel(t(4096, D, 'bruck'), (4096 / D) * Math.log2(D) * (2 * 1024 / 2) / 1e9) < 1e-6, `bruck D=${D}`);
    // pairwise: D - 1 rounds of T k / D^2 rows each
    assert.ok(rel(t(4096, D, 'pairwise'), ((4096 / D) * ((D - 1) / D) * 2 * 1024) / 1e9) < 1e-6, `pairwise D=${D}`);
    // ring: the busiest link carries every block passing it, sum of hop counts / D
    assert.ok(rel(t(4096, D, 'ring'), ((4096 / D) * (2 / D) * 1024 * (D * (D - 1)) / 2) / 1e9) < 1e-6, `ring D=${D}`);
  }
  // two nodes: the hierarchical exchange sends exactly the cross-node bytes over the slow links, in fewer rounds
  const two = validateTopology({ devices: 16, devicesPerNode: 8, intra: { bandwidthGBs: 450, latencyUs: 3 }, inter: { bandwidthGBs: 50, latencyUs: 8 } }, 'test');
  const m = uniformBytes(4096, 16, 2, 2048);
  const pw = exchangeCost(m, two, 'pairwise');
  const hi = exchangeCost(m, two, 'hierarchical');
  assert.ok(rel(hi.interBytes, pw.interBytes) < 1e-9);
  assert.ok(hi.rounds < pw.rounds);
  assert.throws(() => validateTopology({ devices: 0 }, 'x.json'), /x.json: devices must be a positive integer, got 0/);
});
