// Optimizers, gradient clipping and learning-rate schedules: PyTorch parity, state round trips, errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SGD, Adam, AdamW, Optimizer, clipGradNorm, constant, warmupCosine, warmupLinear, rankAtMostOne, type NamedParams } from '../src/train/index.js';
import { ops, Tensor, type DType } from '../src/index.js';

interface Case {
  name: string;
  optimizer: 'SGD' | 'Adam' | 'AdamW';
  options: { momentum?: number; nesterov?: boolean; weightDecay: number; betas?: [number, number]; eps?: number };
  lrs: number[];
  after: Array<Record<string, number[]>>;
}
interface Fixture {
  meta: { steps: number; clipMaxNorm: number };
  shapes: Record<string, number[]>;
  init: Record<string, number[]>;
  grads: Array<Record<string, number[] | null>>;
  cases: Case[];
  clip: Array<{ totalNorm: number; grads: Record<string, number[]> }>;
}

const fx = JSON.parse(readFileSync(new URL('../../test/fixtures/optim.json', import.meta.url), 'utf8')) as Fixture;
const NAMES = Object.keys(fx.shapes);

function makeParams(dtype: DType, values: Record<string, ArrayLike<number>> = fx.init): Array<[string, Tensor]> {
  return NAMES.map((n) => [n, ops.tensor(Array.from(values[n]!), fx.shapes[n]!, { dtype, requiresGrad: true })]);
}

function setGrads(params: NamedParams, step: number): void {
  for (const [n, p] of params) {
    const g = fx.grads[step]![n];
    p.grad = g === null || g === undefined ? null : ops.tensor(g, fx.shapes[n]!, { dtype: p.dtype });
  }
}

function makeOpt(c: Case, params: NamedParams): Optimizer {
  const o = c.options;
  switch (c.optimizer) {
    case 'SGD':
      return new SGD(params, { lr: c.lrs[0]!, momentum: o.momentum!, nesterov: o.nesterov!, weightDecay: o.weightDecay });
    case 'Adam':
      return new Adam(params, { lr: c.lrs[0]!, betas: o.betas!, eps: o.eps!, weightDecay: o.weightDecay });
    case 'AdamW':
      // The fixture puts the rank-1 bias in a no-decay group: moe-ts's default rule.
      return new AdamW(params, { lr: c.lrs[0]!, betas: o.betas!, eps: o.eps!, weightDecay: o.weightDecay });
  }
}

/** Largest |a - e| / max(1, |e|). */
function maxRelErr(a: ArrayLike<number>, e: ArrayLike<number>): number {
  assert.equal(a.length, e.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - e[i]!) / Math.max(1, Math.abs(e[i]!)));
  return worst;
}

function snapshot(params: NamedParams): Record<string, number[]> {
  return Object.fromEntries(params.map(([n, p]) => [n, Array.from(p.data)]));
}

for (const c of fx.cases) {
  for (const [dtype, tol] of [['float64', 1e-12], ['float32', 1e-6]] as const) {
    test(`${c.name} matches torch.optim over ${fx.meta.steps} steps (${dtype})`, () => {
      const params = makeParams(dtype);
      const before = params.map(([, p]) => [p, p.data] as const);
      const opt = makeOpt(c, params);
      for (let s = 0; s < fx.meta.steps; s++) {
        opt.lr = c.lrs[s]!;
        setGrads(params, s);
        opt.step();
        for (const [n, p] of params) {
          const err = maxRelErr(p.data, c.after[s]![n]!);
          assert.ok(err <= tol, `${c.name} step ${s} '${n}': max relative error ${err.toExponential(2)} > ${tol}`);
        }
      }
      assert.equal(opt.steps, fx.meta.steps);
      for (const [p, data] of before) assert.equal(p.data, data, 'parameters are updated in place');
    });
  }

  test(`${c.name}: state saved after 2 steps and loaded into a new optimizer continues identically`, () => {
    const full = makeParams('float32');
    const ref = makeOpt(c, full);
    for (let s = 0; s < 5; s++) {
      ref.lr = c.lrs[s]!;
      setGrads(full, s);
      ref.step();
    }

    const first = makeParams('float32');
    const a = makeOpt(c, first);
    for (let s = 0; s < 2; s++) {
      a.lr = c.lrs[s]!;
      setGrads(first, s);
      a.step();
    }
    const saved = a.state();
    // Fresh tensors, as after reading a checkpoint: nothing may be shared with the first run.
    const resumed = makeParams('float32', snapshot(first));
    const b = makeOpt(c, resumed);
    b.loadState(saved);
    assert.equal(b.steps, 2);
    for (let s = 2; s < 5; s++) {
      b.lr = c.lrs[s]!;
      setGrads(resumed, s);
      b.step();
    }
    assert.deepEqual(snapshot(resumed), snapshot(full));
    assert.deepEqual(Object.keys(b.state()).sort(), Object.keys(ref.state()).sort());
  });
}

test('state names: step, per-parameter steps and buffers; a parameter without a gradient has none', () => {
  const params = makeParams('float32');
  const adam = new Adam(params, { lr: 0.01 });
  setGrads(params, 2); // 'experts' has no gradient at this step
  const expertsBefore = Array.from(params[2]![1].data);
  adam.step();
  assert.deepEqual(Array.from(params[2]![1].data), expertsBefore);
  const st = adam.state();
  assert.deepEqual(Object.keys(st).sort(), ['exp_avg.bias', 'exp_avg.weight', 'exp_avg_sq.bias', 'exp_avg_sq.weight', 'step', 'step.bias', 'step.weight']);
  assert.deepEqual([...st['step']!.shape], [1]);
  assert.equal(st['step']!.item(), 1);
  assert.deepEqual([...st['exp_avg.weight']!.shape], [4, 3]);
  // A copy: changing it must not reach the optimizer.
  st['exp_avg.weight']!.data.fill(99);
  assert.notEqual(adam.state()['exp_avg.weight']!.data[0], 99);

  const sgd = new SGD(params, { lr: 0.1, momentum: 0.9 });
  setGrads(params, 0);
  sgd.step();
  assert.deepEqual(Object.keys(sgd.state()).sort(), ['momentum_buffer.bias', 'momentum_buffer.experts', 'momentum_buffer.weight', 'step']);
  assert.deepEqual(Object.keys(new SGD(params, { lr: 0.1 }).state()), ['step']);
});

test('loadState names what is wrong and changes nothing when it fails', () => {
  const params = makeParams('float32');
  const opt = new AdamW(params, { lr: 0.01 });
  setGrads(params, 0);
  opt.step();
  const good = opt.state();
  const before = opt.state();

  const without = (k: string): Record<string, Tensor> => Object.fromEntries(Object.entries(good).filter(([n]) => n !== k));
  assert.throws(() => opt.loadState(without('step')), /AdamW\.loadState: missing 'step'/);
  assert.throws(() => opt.loadState(without('exp_avg_sq.bias')), /state of parameter 'bias' is incomplete: missing 'exp_avg_sq\.bias'/);
  assert.throws(() => opt.loadState(without('step.weight')), /missing 'step\.weight'/);
  assert.throws(() => opt.loadState({ ...good, 'exp_avg.weight': ops.zeros([3, 4]) }), /'exp_avg\.weight' has shape \[3, 4\], parameter 'weight' has shape \[4, 3\]/);
  assert.throws(() => opt.loadState({ ...good, 'exp_avg.nope': ops.zeros([4]) }), /'exp_avg\.nope' names no parameter of this optimizer \('nope'\)/);
  assert.throws(() => opt.loadState({ ...good, 'momentum_buffer.bias': ops.zeros([4]) }), /unknown entry 'momentum_buffer\.bias'/);
  assert.throws(() => opt.loadState({ ...good, step: ops.tensor([1.5]) }), /'step' must be one non-negative integer/);
  // Several problems are reported together.
  assert.throws(
    () => opt.loadState({ ...without('step'), 'exp_avg.weight': ops.zeros([2]) }),
    (e: Error) => /2 problems/.test(e.message) && /missing 'step'/.test(e.message) && /'exp_avg\.weight' has shape \[2\]/.test(e.message),
  );
  // SGD state into Adam is rejected by name.
  const sgd = new SGD(params, { lr: 0.1, momentum: 0.9 });
  sgd.step();
  assert.throws(() => opt.loadState(sgd.state()), /unknown entry 'momentum_buffer\.weight'/);

  const after = opt.state();
  assert.deepEqual(Object.keys(after), Object.keys(before));
  for (const k of Object.keys(before)) assert.deepEqual(Array.from(after[k]!.data), Array.from(before[k]!.data), k);
});

test('AdamW gives rank <= 1 parameters no weight decay by default; noDecay overrides', () => {
  const mk = (): Array<[string, Tensor]> => [
    ['w', ops.ones([2, 3], { requiresGrad: true })],
    ['b', ops.ones([3], { requiresGrad: true })],
    ['norm.scale', ops.ones([], { requiresGrad: true })],
  ];
  const run = (opt: Optimizer, params: NamedParams): number[] => {
    for (const [, p] of params) p.grad = ops.zerosLike(p); // zero gradient: only decay moves a parameter
    opt.step();
    return params.map(([, p]) => p.data[0]!);
  };
  const p1 = mk();
  const w1 = new AdamW(p1, { lr: 0.1, weightDecay: 0.5 });
  assert.deepEqual([w1.weightDecayOf('w'), w1.weightDecayOf('b'), w1.weightDecayOf('norm.scale')], [0.5, 0, 0]);
  const [w, b, s] = run(w1, p1);
  assert.ok(Math.abs(w! - Math.fround(1 - 0.1 * 0.5)) < 1e-7, `decayed weight ${w}`);
  assert.equal(b, 1);
  assert.equal(s, 1);

  const p2 = mk();
  const byName = new AdamW(p2, { lr: 0.1, weightDecay: 0.5, noDecay: (n) => n.startsWith('norm.') });
  assert.deepEqual([byName.weightDecayOf('w'), byName.weightDecayOf('b'), byName.weightDecayOf('norm.scale')], [0.5, 0.5, 0]);
  assert.deepEqual(run(byName, p2).map((v) => v < 1), [true, true, false]);

  // Adam and SGD follow torch: everything decays unless told otherwise.
  assert.equal(new Adam(mk(), { weightDecay: 0.1 }).weightDecayOf('b'), 0.1);
  assert.equal(new SGD(mk(), { lr: 0.1, weightDecay: 0.1, noDecay: rankAtMostOne }).weightDecayOf('b'), 0);
});

test('zeroGrad clears gradients; steps counts step() calls', () => {
  const params = makeParams('float32');
  const opt = new SGD(params, { lr: 0.1 });
  setGrads(params, 0);
  opt.step();
  opt.zeroGrad();
  for (const [, p] of params) assert.equal(p.grad, null);
  opt.step(); // no gradients: nothing moves, the counter still advances
  assert.equal(opt.steps, 2);
});

test('clipGradNorm: hand-computed norm, scaling above maxNorm only, non-finite norms untouched', () => {
  const a = ops.zeros([2], { requiresGrad: true });
  const b = ops.zeros([1], { requiresGrad: true });
  const c = ops.zeros([3], { requiresGrad: true }); // no gradient: ignored
  const reset = (): void => {
    a.grad = ops.tensor([3, 4]);
    b.grad = ops.tensor([12]);
  };
  reset();
  assert.equal(clipGradNorm([a, b, c], 100), 13);
  assert.deepEqual([...a.grad!.toFlatList(), ...b.grad!.toFlatList()], [3, 4, 12]);
  reset();
  assert.equal(clipGradNorm([a, b, c], 6.5), 13);
  const k = 6.5 / (13 + 1e-6);
  assert.deepEqual([...a.grad!.toFlatList(), ...b.grad!.toFlatList()], [3 * k, 4 * k, 12 * k].map(Math.fround));

  for (const bad of [NaN, Infinity]) {
    a.grad = ops.tensor([bad, 1]);
    b.grad = ops.tensor([12]);
    const n = clipGradNorm([a, b], 1);
    assert.ok(Number.isNaN(bad) ? Number.isNaN(n) : n === Infinity, `norm ${n}`);
    assert.deepEqual(b.grad.toList(), [12], 'gradients are not scaled by a non-finite norm');
  }

  // Autograd may give two leaves the same gradient tensor; it must be scaled once.
  const shared = ops.tensor([6, 8]);
  a.grad = shared;
  const d = ops.zeros([2], { requiresGrad: true });
  d.grad = shared;
  const n = clipGradNorm([a, d], 1);
  assert.ok(Math.abs(n - Math.sqrt(200)) < 1e-12);
  assert.ok(Math.abs(shared.data[0]! - 6 / (Math.sqrt(200) + 1e-6)) < 1e-6);

  assert.equal(clipGradNorm([c], 1), 0);
  assert.throws(() => clipGradNorm([a], -1), /clipGradNorm: maxNorm must be a finite number >= 0, got -1/);
});

test('clipGradNorm matches torch.nn.utils.clip_grad_norm_', () => {
  for (let s = 0; s < fx.clip.length; s++) {
    const params = makeParams('float64');
    setGrads(params, s);
    const live = params.filter(([, p]) => p.grad !== null);
    const norm = clipGradNorm(params.map(([, p]) => p), fx.meta.clipMaxNorm);
    const want = fx.clip[s]!;
    assert.ok(Math.abs(norm - want.totalNorm) <= 1e-12 * want.totalNorm, `step ${s}: norm ${norm} vs ${want.totalNorm}`);
    assert.deepEqual(live.map(([n]) => n), Object.keys(want.grads));
    for (const [n, p] of live) assert.ok(maxRelErr(p.grad!.data, want.grads[n]!) <= 1e-12, `step ${s} '${n}'`);
  }
});

test('schedules at their boundaries', () => {
  const close = (a: number, b: number, what: string): void => assert.ok(Math.abs(a - b) <= 1e-15, `${what}: ${a} vs ${b}`);
  assert.equal(constant(0.3)(0), 0.3);
  assert.equal(constant(0.3)(1e9), 0.3);

  const cos = warmupCosine({ lr: 1, warmupSteps: 10, totalSteps: 110, minLr: 0.1 });
  close(cos(0), 0, 'cosine step 0');
  close(cos(1), 0.1, 'cosine step 1');
  close(cos(9), 0.9, 'cosine warmup-1');
  close(cos(10), 1, 'cosine warmup');
  close(cos(60), 0.55, 'cosine midpoint');
  close(cos(109), 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * 99 / 100)), 'cosine total-1');
  close(cos(110), 0.1, 'cosine total');
  close(cos(1000), 0.1, 'cosine beyond');
  close(warmupCosine({ lr: 2, warmupSteps: 0, totalSteps: 4 })(0), 2, 'no warmup starts at lr');
  close(warmupCosine({ lr: 2, warmupSteps: 0, totalSteps: 4 })(4), 0, 'minLr defaults to 0');

  const lin = warmupLinear({ lr: 1, warmupSteps: 4, totalSteps: 14, minLr: 0.5 });
  close(lin(0), 0, 'linear step 0');
  close(lin(3), 0.75, 'linear warmup-1');
  close(lin(4), 1, 'linear warmup');
  close(lin(9), 0.75, 'linear midpoint');
  close(lin(13), 0.55, 'linear total-1');
  close(lin(14), 0.5, 'linear total');
  close(lin(99), 0.5, 'linear beyond');

  // Monotone after warmup.
  for (let s = 10; s < 120; s++) assert.ok(cos(s + 1) <= cos(s), `cosine increases at ${s}`);
});

test('bad arguments give errors that name the field', () => {
  const ps = makeParams('float32');
  assert.throws(() => new SGD(ps, { lr: -1 }), /SGD: lr must be a finite number >= 0, got -1/);
  assert.throws(() => new SGD(ps, { lr: 0.1, momentum: -0.5 }), /SGD: momentum must be/);
  assert.throws(() => new SGD(ps, { lr: 0.1, nesterov: true }), /SGD: nesterov needs momentum > 0 and dampening 0/);
  assert.throws(() => new SGD(ps, { lr: 0.1, weightDecay: NaN }), /SGD: weightDecay must be/);
  assert.throws(() => new SGD([], { lr: 0.1 }), /SGD: got an empty parameter list/);
  assert.throws(() => new SGD([ps[0]!, ps[0]!], { lr: 0.1 }), /SGD: parameter name 'weight' appears twice/);
  assert.throws(() => new SGD([ps[0]!, ['other', ps[0]![1]]], { lr: 0.1 }), /SGD: parameter 'other' is the same tensor/);
  assert.throws(() => new SGD([['idx', ops.tensor([1, 2], undefined, { dtype: 'int32' })]], { lr: 0.1 }), /SGD: parameter 'idx' is int32/);
  assert.throws(() => new SGD(ps.map(([, p]) => p) as unknown as NamedParams, { lr: 0.1 }), /SGD: params must be an array of \[name, Tensor\] pairs/);
  assert.throws(() => new Adam(ps, { betas: [1, 0.999] }), /Adam: betas\[0\] must be a finite number in \[0, 1\), got 1/);
  assert.throws(() => new AdamW(ps, { betas: [0.9, -0.1] }), /AdamW: betas\[1\] must be/);
  assert.throws(() => new Adam(ps, { eps: -1 }), /Adam: eps must be/);
  const opt = new Adam(ps);
  assert.throws(() => { opt.lr = NaN; }, /Adam: lr must be a finite number >= 0, got NaN/);
  ps[0]![1].grad = ops.zeros([12]);
  assert.throws(() => opt.step(), /Adam: gradient of 'weight' has shape \[12\], parameter has shape \[4, 3\]/);

  assert.throws(() => constant(-1), /constant: lr must be/);
  assert.throws(() => warmupCosine({ lr: NaN, warmupSteps: 1, totalSteps: 2 }), /warmupCosine: lr must be/);
  assert.throws(() => warmupCosine({ lr: 1, warmupSteps: 1.5, totalSteps: 2 }), /warmupCosine: warmupSteps must be an integer >= 0, got 1\.5/);
  assert.throws(() => warmupLinear({ lr: 1, warmupSteps: 1, totalSteps: -3 }), /warmupLinear: totalSteps must be an integer >= 0/);
  assert.throws(() => warmupLinear({ lr: 1, warmupSteps: 5, totalSteps: 5 }), /warmupLinear: totalSteps \(5\) must be greater than warmupSteps \(5\)/);
  assert.throws(() => warmupCosine({ lr: 1, warmupSteps: 0, totalSteps: 5, minLr: 2 }), /warmupCosine: minLr \(2\) must not exceed lr \(1\)/);
  assert.throws(() => warmupCosine({ lr: 1, warmupSteps: 0, totalSteps: 5 })(-1), /warmupCosine: step must be a number >= 0, got -1/);
});

test('Adam minimises a small quadratic (with a schedule driving lr)', () => {
  const target = ops.tensor([3, -2, 0.5, 7]);
  const scale = ops.tensor([1, 10, 0.1, 2]); // badly conditioned on purpose: Adam's per-coordinate scaling copes
  const x = ops.zeros([4], { requiresGrad: true });
  const opt = new Adam([['x', x]], { lr: 0.5 });
  const sched = warmupCosine({ lr: 0.5, warmupSteps: 10, totalSteps: 400, minLr: 0.001 });
  const loss = (): Tensor => ops.sum(ops.mul(scale, ops.square(ops.sub(x, target))));
  const start = loss().item();
  for (let s = 0; s < 400; s++) {
    opt.zeroGrad();
    loss().backward();
    opt.lr = sched(opt.steps);
    opt.step();
  }
  const end = loss().item();
  assert.ok(end < 1e-4 * start, `loss ${start} -> ${end}`);
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(x.data[i]! - target.data[i]!) < 1e-2, `x[${i}] = ${x.data[i]}`);
});
