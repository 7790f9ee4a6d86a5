// Expert parallelism with the experts' optimizer state on the workers (src/parallel/sharded-optimizer.ts):
// weights, state() and loadState() equal a one-process optimizer's bit for bit at N = 1, 2, 4
// for Adam, AdamW and SGD with momentum (with clipping and a layer used twice in one graph);
// the main thread keeps only the non-expert state; checkpoints move between N = 1 and N = 2 in
// both directions; a worker that dies in the optimizer step fails the run with a clear error
// (no hang) and the run resumes from its checkpoint to the same metrics as an uninterrupted run;
// with model growth the workers' state is re-sharded to the grown experts, bit for bit with one
// process (layer level and a whole run, resumed from a grown checkpoint).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng, Tensor, ops, moe } from '../src/index.js';
import { attachExpertParallel, type ExpertParallel } from '../src/parallel/expert-parallel.js';
import { ExpertShardedOptimizer, optimizerStateBytes } from '../src/parallel/sharded-optimizer.js';
import { OP } from '../src/parallel/protocol.js';
import { Adam, AdamW, SGD, clipGradNorm, type Optimizer } from '../src/train/optim.js';
import { growMoELayer } from '../src/moe/grow.js';
import { extendOptimizerState } from '../src/train/growth.js';
import { validateRun, type RunConfig } from '../src/config/run.js';
import { runTraining } from '../src/train/run.js';
import { loadCheckpoint } from '../src/models/checkpoint.js';
import { randTensor } from './helpers.js';

const LAYER: moe.MoELayerConfig = { dModel: 6, dFF: 8, numExperts: 4, router: { type: 'topk', k: 2 }, activation: 'swiglu', bias: true, capacityFactor: 1.25, seed: 3 };

const OPTIMIZERS: Array<[string, (l: moe.MoELayer) => Optimizer]> = [
  ['Adam with L2 decay', (l) => new Adam(l.namedParameters(), { lr: 0.01, weightDecay: 0.1 })],
  ['AdamW', (l) => new AdamW(l.namedParameters(), { lr: 0.01, weightDecay: 0.1 })],
  ['SGD with nesterov momentum', (l) => new SGD(l.namedParameters(), { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01 })],
];

/** Three steps; the layer runs twice in the graph of each (a backward must not overwrite a gradient view autograd has not taken yet). */
function train3(layer: moe.MoELayer, opt: Optimizer): number[] {
  const losses: number[] = [];
  for (let s = 0; s < 3; s++) {
    const x = randTensor(new Rng(20 + s), [9, 6]);
    const a = layer.forward(x);
    const b = layer.forward(ops.gelu(a.y));
    const loss = ops.add(ops.sum(ops.mul(b.y, b.y)), ops.add(a.auxLoss, b.auxLoss));
    losses.push(loss.item());
    loss.backward();
    clipGradNorm(layer.parameters(), 0.5);
    opt.step();
    opt.zeroGrad();
  }
  return losses;
}

const snapshot = (l: moe.MoELayer): Array<[string, number[]]> => l.namedParameters().map(([n, p]) => [n, [...p.data]]);
const plainState = (s: Record<string, Tensor>): Array<[string, number[], number[]]> => Object.entries(s).map(([k, t]) => [k, [...t.shape], [...t.data]]);

for (const [name, make] of OPTIMIZERS) {
  test(`experts' optimizer on the workers equals one process bit for bit at N = 1, 2, 4: ${name}`, async () => {
    const ref = new moe.MoELayer(LAYER);
    const refOpt = make(ref);
    const refLosses = train3(ref, refOpt);
    const refState = refOpt.state();
    const expertBytes = optimizerStateBytes(Object.fromEntries(Object.entries(refState).filter(([k]) => k.includes('.experts.'))));
    assert.ok(expertBytes > 0);
    for (const N of [1, 2, 4]) {
      const layer = new moe.MoELayer(LAYER);
      const ep = attachExpertParallel(layer, { workers: N, timeoutMs: 30_000 });
      try {
        const opt = new ExpertShardedOptimizer(make(layer), ep);
        assert.deepEqual(train3(layer, opt), refLosses, `N=${N}: losses`);
        assert.deepEqual(snapshot(layer), snapshot(ref), `N=${N}: weights after 3 steps`);
        assert.deepEqual(plainState(opt.state()), plainState(refState), `N=${N}: gathered state (keys, order, values)`);
        assert.equal(opt.steps, 3);
        // the main thread holds the non-expert state only; the workers the rest
        assert.equal(opt.mainStateBytes(), optimizerStateBytes(refState) - expertBytes, `N=${N}: main-thread state bytes`);
        assert.equal(opt.workerStateBytes.reduce((a, b) => a + b, 0), expertBytes, `N=${N}: worker state bytes`);
        // a one-process state loads (scattered to the workers) and the next steps match one process continuing
        const cont = new moe.MoELayer(LAYER);
        const contOpt = make(cont);
        for (const [n, p] of cont.namedParameters()) p.data.set(ref.namedParameters().find(([m]) => m === n)![1].data);
        contOpt.loadState(refState);
        for (const [n, p] of layer.namedParameters()) p.data.set(ref.namedParameters().find(([m]) => m === n)![1].data);
        opt.loadState(refState);
        assert.deepEqual(train3(layer, opt), train3(cont, contOpt), `N=${N}: steps after loadState`);
        assert.deepEqual(plainState(opt.state()), plainState(contOpt.state()), `N=${N}: state after loadState and 3 steps`);
      } finally {
        await ep.close();
      }
    }
  });
}

test('sharded optimizer: loadState is validated on the main thread with the one-process messages; one phase at a time; a replaced expert bank is refused', async () => {
  const layer = new moe.MoELayer(LAYER);
  const ep = attachExpertParallel(layer, { workers: 2, timeoutMs: 30_000 });
  try {
    const opt = new ExpertShardedOptimizer(new Adam(layer.namedParameters()), ep);
    const bad = { step: new Tensor(Float64Array.of(1), [1]), 'exp_avg.experts.w1': new Tensor(new Float32Array(3), [3]) };
    assert.throws(() => opt.loadState(bad), /Adam.loadState: 'exp_avg.experts.w1' has shape \[3\], parameter 'experts.w1' has shape \[4, 6, 8\]/);
    assert.throws(() => new ExpertShardedOptimizer(new Adam(layer.namedParameters().filter(([n]) => n !== 'experts.w2')), ep), /has 4 of the 5 expert parameters/);
    // the optimizer step overlaps the main thread's work with a phase in flight: a second phase must wait for it
    const args = { layer: 0, callId: 0, tokens: 0, rows: 0, flags: 0, backend: 0 };
    const first = ep.group.start(OP.release, args, 'first');
    assert.throws(() => ep.group.run(OP.release, args, 'second'), /expert-parallel: second issued while 'release' \(first\) is still running/);
    ep.group.finish(first);
    layer.experts.to('float64');
    assert.throws(() => layer.forward(randTensor(new Rng(1), [3, 6])), /float32 tensors only, got float64 \(expert weights\)/);
    layer.experts.to('float32');
    assert.throws(() => layer.forward(randTensor(new Rng(1), [3, 6])), /layer 0's experts were replaced, resized or cast after the workers took over/);
  } finally {
    await ep.close();
  }
});

test('sharded optimizer faults: a worker killed or exiting in the optimizer step fails it naming the worker, with no hang', async () => {
  const layer = new moe.MoELayer(LAYER);
  const x = randTensor(new Rng(2), [8, 6]);
  const ep = attachExpertParallel(layer, { workers: 2, timeoutMs: 1500 });
  try {
    const opt = new ExpertShardedOptimizer(new AdamW(layer.namedParameters()), ep);
    ops.sum(layer.forward(x).y).backward();
    void ep.group.threads[1]!.terminate();
    assert.throws(() => opt.step(), /expert-parallel: worker 1 did not finish 'optim' \(optimizer step\) within 1500 ms .*resume the run from its last checkpoint/);
    assert.throws(() => opt.state(), /worker group is broken by an earlier failure/);
  } finally {
    await ep.close();
  }
  const ep2 = attachExpertParallel(layer, { workers: 2, timeoutMs: 60_000 });
  try {
    const opt = new ExpertShardedOptimizer(new AdamW(layer.namedParameters()), ep2);
    ops.sum(layer.forward(x).y).backward();
    ep2.group.injectExit(0, OP.optim, 9);
    const t0 = Date.now();
    assert.throws(() => opt.step(), /expert-parallel: worker 0 exited during 'optim' \(optimizer step\)/);
    assert.ok(Date.now() - t0 < 30_000, 'reported at once, not at the deadline');
  } finally {
    await ep2.close();
  }
});

/** The byte LM of configs/udhr-lm-moe.json at a tiny size: 2 epochs of 3 steps. */
function tinyConfig(experts: number, model: Record<string, unknown> = {}): RunConfig {
  const raw = JSON.parse(readFileSync(fileURLToPath(new URL('../../configs/udhr-lm-moe.json', import.meta.url)), 'utf8')) as Record<string, Record<string, unknown>>;
  Object.assign(raw['model']!, { dModel: 16, layers: 2, heads: 2, dFF: 16, numExperts: 4, ...model });
  Object.assign(raw['data']!, { maxLanguages: 2, seqLen: 16, stepsPerEpoch: 3, evalWindows: 4 });
  Object.assign(raw['train']!, { epochs: 2 });
  Object.assign(raw['optim']!, { warmupSteps: 1 });
  raw['parallel'] = { experts };
  return validateRun(raw);
}

const savedState = (run: string): Array<[string, number[], number[]]> =>
  [...loadCheckpoint(join(run, 'checkpoint')).optimizerState!].map(([k, t]) => [k, [...t.shape], [...t.data]]);

const metricsOf = (dir: string): string[] =>
  readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.stringify({ ...JSON.parse(l), seconds: 0, time: 0 }));

test('training: N = 2 and 4 equal N = 1; a worker dying mid-run fails it clearly and the run resumes with N = 1; N = 1 checkpoints resume with N = 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-ep-optim-'));
  const quiet = { progress: null, log: () => {} };
  try {
    const ref = join(dir, 'n1');
    await runTraining(tinyConfig(1), { out: ref, ...quiet });
    const want = metricsOf(ref);
    assert.ok(want.length >= 8, 'steps, evaluations and the test record');
    for (const N of [2, 4]) {
      const out = join(dir, `n${N}`);
      await runTraining(tinyConfig(N), { out, ...quiet });
      assert.deepEqual(metricsOf(out), want, `N=${N}: metrics.jsonl`);
      assert.deepEqual(savedState(out), savedState(ref), `N=${N}: the checkpoint's optimizer state (gathered from the workers)`);
    }
    // N = 2: worker 1 exits in the optimizer step of step 5 (epoch 2; the checkpoint holds step 3)
    const broken = join(dir, 'broken');
    let ep: ExpertParallel | null = null;
    await assert.rejects(runTraining(tinyConfig(2), {
      out: broken, ...quiet, onExpertParallel: (e) => { ep = e; },
      onStep: (v) => { if (v['step'] === 4) ep!.group.injectExit(1, OP.optim, 7); },
    }), /expert-parallel: worker 1 exited during 'optim' \(optimizer step\); the step failed \(resume the run from its last checkpoint\)/);
    // its N = 2 checkpoint resumes in place with N = 1
    await runTraining(tinyConfig(1), { out: broken, resume: broken, ...quiet });
    assert.deepEqual(metricsOf(broken), want, 'resumed with N = 1 after the failure');
    // an N = 1 checkpoint (step 3) resumes with N = 2
    const half = join(dir, 'half');
    await runTraining(tinyConfig(1), { out: half, maxSteps: 4, ...quiet });
    await runTraining(tinyConfig(2), { out: half, resume: half, ...quiet });
    assert.deepEqual(metricsOf(half), want, 'N = 1 checkpoint resumed with N = 2');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('model growth with the optimizer on the workers: state() before, grow, extend and load re-shards it; equals one process bit for bit at N = 2, 4', async () => {
  const cfg: moe.MoELayerConfig = { ...LAYER, numExperts: 4 };
  const run = (layer: moe.MoELayer, opt: Optimizer): { losses: number[]; state: Array<[string, number[], number[]]>; weights: Array<[string, number[]]> } => {
    const losses = train3(layer, opt);
    const before = opt.state();
    growMoELayer(layer, { add: 4, offset: 0, seed: 9 });
    extendOptimizerState(opt, before);
    losses.push(...train3(layer, opt));
    return { losses, state: plainState(opt.state()), weights: snapshot(layer) };
  };
  const ref = new moe.MoELayer(cfg);
  const want = run(ref, new Adam(ref.namedParameters(), { lr: 0.01 }));
  for (const N of [2, 4]) {
    const layer = new moe.MoELayer(cfg);
    const ep = attachExpertParallel(layer, { workers: N, timeoutMs: 30_000 });
    try {
      const opt = new ExpertShardedOptimizer(new Adam(layer.namedParameters(), { lr: 0.01 }), ep);
      assert.deepEqual(run(layer, opt), want, `N=${N}`);
      // the grown experts' moments are on the workers: 8 experts x (w1, w2, w3, b1, b2) x 2 moments, split over N
      const expertState = 2 * 4 * (2 * 6 * 8 + 8 * 6 + 8 + 6) * 8;
      assert.equal(opt.workerStateBytes.reduce((a, b) => a + b, 0), expertState, `N=${N}: state bytes on the workers`);
      assert.ok(opt.mainStateBytes() < expertState / 4, `N=${N}: the main thread holds only the router's state (${opt.mainStateBytes()} B)`);
      assert.equal(ep.expertLayers()[0]!.bank.numExperts, 8);
    } finally {
      await ep.close();
    }
  }
});

test('training with model growth at N = 2: the workers own the grown experts\' state, metrics and optimizer state equal N = 1, and a grown checkpoint resumes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-ep-grow-'));
  const grow = { numExperts: 2, grow: [{ step: 2, add: 2 }] };
  const quiet = { progress: null, log: () => {} };
  try {
    await runTraining(tinyConfig(1, grow), { out: join(dir, 'n1'), ...quiet });
    const lines: string[] = [];
    await runTraining(tinyConfig(2, grow), { out: join(dir, 'n2'), progress: null, log: (l) => lines.push(l) });
    assert.ok(lines.some((l) => /from 2 to 4 experts/.test(l)), 'the model grew');
    assert.ok(!lines.some((l) => /stays on the main thread/.test(l)), lines.join('\n'));
    assert.deepEqual(metricsOf(join(dir, 'n2')), metricsOf(join(dir, 'n1')));
    assert.deepEqual(savedState(join(dir, 'n2')), savedState(join(dir, 'n1')), 'the checkpoint\'s optimizer state (gathered from the workers)');
    // a checkpoint written after the growth (step 3) resumes at N = 2: growth replays, then the state loads into the grown experts
    const half = join(dir, 'half');
    await runTraining(tinyConfig(2, grow), { out: half, maxSteps: 4, ...quiet });
    await runTraining(tinyConfig(2, grow), { out: half, resume: half, ...quiet });
    assert.deepEqual(metricsOf(half), metricsOf(join(dir, 'n1')), 'resumed after growth');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
