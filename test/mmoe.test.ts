// MMoE: shapes, gates, float64 gradients, the E = 1 shared-bottom identity, the coarse Fashion-MNIST task, a short real run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Rng, Tensor, noGrad, ops, withBackend, Linear } from '../src/index.js';
import { MMoE, MMOE_SCHEMA, gateStats, validateTaskHeads, type MMoEConfig } from '../src/models/mmoe.js';
import { validate } from '../src/config/schema.js';
import { fashionMnistTasks, FASHION_MNIST_COARSE, MultiTaskClassificationTask, type MultiTaskModel } from '../src/train/multitask.js';
import { Adam } from '../src/train/optim.js';
import { train } from '../src/train/trainer.js';
import { constant } from '../src/train/schedule.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/data/mnist.js';
import { subsetImages } from '../src/data/batches.js';
import { assertClose, checkAccumulatedGradients, randTensor } from './helpers.js';

const tiny = (extra: Partial<MMoEConfig> = {}): MMoEConfig => ({
  inputDim: 5, numExperts: 3, expertHidden: 4, expertOut: 3, towerHidden: 4, activation: 'relu',
  tasks: [{ name: 'a', classes: 3 }, { name: 'b', classes: 2 }], ...extra,
});

test('the schema fills the Fashion-MNIST defaults and rejects bad tasks', () => {
  const c = validate<MMoEConfig>(MMOE_SCHEMA, {}, 'model');
  assert.deepEqual(c.tasks, [{ name: 'fine', classes: 10 }, { name: 'coarse', classes: 4 }]);
  assert.equal(c.inputDim, 784);
  assert.equal(c.numExperts, 8);
  for (const f of Object.values(MMOE_SCHEMA)) assert.ok(f.doc.length > 10);
  assert.throws(() => validate(MMOE_SCHEMA, { experts: 4 }, 'model'), /model\.experts: unknown key/);
  assert.throws(() => validateTaskHeads([]), /non-empty array/);
  assert.throws(() => validateTaskHeads([{ name: 'a', classes: 3 }, { name: 'a', classes: 2 }]), /appears twice/);
  assert.throws(() => validateTaskHeads([{ name: 'a.b', classes: 3 }]), /prefixes metric keys/);
  assert.throws(() => validateTaskHeads([{ name: 'a', classes: 1 }]), /integer >= 2/);
  assert.throws(() => validateTaskHeads([{ name: 'a', classes: 3, weight: 2 }]), /weight: unknown key/);
  assert.throws(() => new MMoE({ ...c, tasks: 'fine' as unknown as MMoEConfig['tasks'] }), /mmoe\.tasks/);
});

test('forward shapes, and every gate row is a distribution over the experts', () => {
  const m = new MMoE(tiny(), 1);
  const out = m.forward(randTensor(new Rng(3), [6, 5]));
  assert.deepEqual(out.logits.map((l) => [...l.shape]), [[6, 3], [6, 2]]);
  assert.deepEqual(out.gates.map((g) => [...g.shape]), [[6, 3], [6, 3]]);
  for (const g of out.gates) {
    for (let b = 0; b < 6; b++) {
      let s = 0;
      for (let e = 0; e < 3; e++) { const p = g.data[b * 3 + e]!; assert.ok(p > 0 && p < 1); s += p; }
      assert.ok(Math.abs(s - 1) < 1e-6);
    }
    const st = gateStats(g);
    assert.ok(Math.abs(st.meanGate.reduce((a, b) => a + b, 0) - 1) < 1e-6);
    assert.ok(st.entropy > 0 && st.entropy <= Math.log(3) + 1e-9);
    assert.ok(st.entropyOfMean >= st.entropy - 1e-9, 'the entropy of the mean is at least the mean entropy (concavity)');
  }
  // the two gates are different modules: a task can weigh the experts differently
  assert.notDeepEqual([...out.gates[0]!.data], [...out.gates[1]!.data]);
  assert.throws(() => m.forward(randTensor(new Rng(3), [6, 4])), /\[B, 5\]/);
  // parameters: experts E*(d*h + h + h*o + o), gates T*d*E, towers per task o*th + th + th*c + c
  assert.equal(m.numParameters(), 3 * (5 * 4 + 4 + 4 * 3 + 3) + 2 * 5 * 3 + (3 * 4 + 4 + 4 * 3 + 3) + (3 * 4 + 4 + 4 * 2 + 2));
});

test('gradients of every parameter and the input match float64 finite differences', () => {
  withBackend('js', () => {
    for (const activation of ['relu', 'gelu'] as const) {
      const m = new MMoE(tiny({ activation }), 7).to('float64');
      const x = randTensor(new Rng(1), [4, 5], 'float64').requireGrad();
      const w0 = randTensor(new Rng(2), [4, 3], 'float64');
      const w1 = randTensor(new Rng(3), [4, 2], 'float64');
      // through the logits of both tasks and a cross-entropy, so softmax gates and towers all matter
      const loss = (): Tensor => {
        const o = m.forward(x);
        return ops.add(ops.add(ops.sum(ops.mul(o.logits[0]!, w0)), ops.sum(ops.mul(o.logits[1]!, w1))), ops.crossEntropy(o.logits[0]!, Int32Array.from([0, 2, 1, 0])));
      };
      loss().backward();
      checkAccumulatedGradients([...m.namedParameters(), ['x', x]], loss, { samples: 10, label: activation });
    }
  });
});

test('with one expert every gate is 1 and MMoE is a shared-bottom model, in outputs and gradients', () => {
  withBackend('js', () => {
    const cfg = tiny({ numExperts: 1 });
    const m = new MMoE(cfg, 5).to('float64');
    // the shared bottom as two dense Linear layers holding the expert's weights (Linear stores [out, in])
    const fc1 = new Linear(5, 4).to('float64');
    const fc2 = new Linear(4, 3).to('float64');
    fc1.weight.data.set(ops.transpose(ops.reshape(m.experts.w1, [5, 4])).data);
    fc1.bias!.data.set(m.experts.b1.data);
    fc2.weight.data.set(ops.transpose(ops.reshape(m.experts.w2, [4, 3])).data);
    fc2.bias!.data.set(m.experts.b2.data);
    const x = randTensor(new Rng(4), [5, 5], 'float64');
    const target = [Int32Array.from([0, 1, 2, 1, 0]), Int32Array.from([1, 0, 1, 1, 0])];
    const lossOf = (logits: Tensor[]): Tensor => ops.add(ops.crossEntropy(logits[0]!, target[0]!), ops.crossEntropy(logits[1]!, target[1]!));

    const out = m.forward(x);
    for (const g of out.gates) assert.ok(g.data.every((v) => v === 1));
    lossOf(out.logits).backward();
    const gradsMoE = m.namedParameters().map(([n, p]) => [n, p.grad!.data.slice()] as const);
    m.zeroGrad();

    const bottom = fc2.forward(ops.relu(fc1.forward(x)));
    const ref = m.towers.map((t) => t.forward(bottom));
    for (let t = 0; t < 2; t++) assertClose(out.logits[t]!, ref[t]!, 1e-12, 1e-12, `task ${t} logits`);
    lossOf(ref).backward();
    const get = (name: string) => gradsMoE.find(([n]) => n === name)![1];
    assertClose(get('experts.w1'), ops.transpose(fc1.weight.grad!).data, 1e-12, 1e-12, 'w1 gradient');
    assertClose(get('experts.b1'), fc1.bias!.grad!.data, 1e-12, 1e-12, 'b1 gradient');
    assertClose(get('experts.w2'), ops.transpose(fc2.weight.grad!).data, 1e-12, 1e-12, 'w2 gradient');
    assertClose(get('experts.b2'), fc2.bias!.grad!.data, 1e-12, 1e-12, 'b2 gradient');
    for (const [n, p] of m.namedParameters()) {
      if (n.startsWith('tower_')) assertClose(get(n), p.grad!.data, 1e-12, 1e-12, `${n} gradient`);
      // a softmax over one expert is constant: its gate learns nothing
      if (n.startsWith('gate_')) assert.ok(get(n).every((v) => v === 0), `${n} gradient is zero`);
    }
  });
});

test('the coarse Fashion-MNIST task groups tops, bottoms/full-body, footwear and bags', () => {
  const fine = Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const [f, c] = fashionMnistTasks(fine);
  assert.equal(f!.name, 'fine');
  assert.equal(f!.classes, 10);
  assert.equal(f!.labels, fine);
  assert.equal(c!.name, 'coarse');
  assert.equal(c!.classes, 4);
  // T-shirt, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot
  assert.deepEqual([...c!.labels], [0, 1, 0, 1, 0, 2, 0, 2, 3, 2]);
  assert.deepEqual([...FASHION_MNIST_COARSE], [0, 1, 0, 1, 0, 2, 0, 2, 3, 2]);
  assert.equal(c!.classNames![c!.labels[8]!], 'bag');
  assert.throws(() => fashionMnistTasks(Int32Array.from([3, 10])), /label 10 at index 1/);
});

const skipData = existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is missing (apt-get install dataset-fashion-mnist)`;

test('a short run on 2000 Fashion-MNIST images learns both tasks', { skip: skipData }, () => {
  const all = loadFashionMnist();
  const data = {
    train: subsetImages(all.train, Int32Array.from({ length: 2000 }, (_, i) => i)),
    val: null,
    test: subsetImages(all.test, Int32Array.from({ length: 1000 }, (_, i) => i)),
  };
  const model = new MMoE(validate<MMoEConfig>(MMOE_SCHEMA, { numExperts: 4, expertHidden: 32, expertOut: 32, towerHidden: 16 }, 'model'), 0);
  const task = new MultiTaskClassificationTask(model, data, { batchSize: 100, seed: 0 });
  const steps: Record<string, number>[] = [];
  const res = train(task, {
    epochs: 3, optimizer: new Adam(model.namedParameters(), { lr: 3e-3 }), schedule: constant(3e-3), clipNorm: null, seed: 0,
    metricsFile: null, checkpointDir: null, config: {}, evalEvery: 0, progress: null, onStep: (v) => steps.push(v),
  });
  const first = steps[0]!;
  for (const k of ['fine.loss', 'fine.accuracy', 'coarse.loss', 'coarse.accuracy', 'fine.gateEntropy', 'coarse.gateEntropy', 'taskLoss', 'accuracy']) {
    assert.ok(Number.isFinite(first[k]), `step values have ${k}`);
  }
  assert.ok(Math.abs(first['taskLoss']! - first['fine.loss']! - first['coarse.loss']!) < 1e-5, 'the loss is the sum of the task losses');
  const t = res.test!;
  assert.deepEqual(Object.keys(t).sort(), ['accuracy', 'coarse.accuracy', 'coarse.gateEntropy', 'coarse.loss', 'fine.accuracy', 'fine.gateEntropy', 'fine.loss', 'loss']);
  // chance: 10% fine; 40% coarse by always answering 'top'
  assert.ok(t['fine.accuracy']! > 0.6, `fine test accuracy ${t['fine.accuracy']}`);
  assert.ok(t['coarse.accuracy']! > 0.85, `coarse test accuracy ${t['coarse.accuracy']}`);
  assert.ok(Math.abs(t['accuracy']! - (t['fine.accuracy']! + t['coarse.accuracy']!) / 2) < 1e-12);
  const gates = task.meanGates('test');
  assert.equal(gates.length, 2);
  for (const g of gates) assert.ok(Math.abs(g.reduce((a, b) => a + b, 0) - 1) < 1e-6);
});

test('per-task loss weights scale the trained loss', () => {
  const model = new MMoE(tiny({ inputDim: 4 }), 2);
  const set = (n: number) => ({ images: new Float32Array(n * 4).map((_, i) => (i % 7) / 7), labels: Int32Array.from({ length: n }, (_, i) => i % 10), n, rows: 2, cols: 2, channels: 1, classes: 10 });
  const tasks = (labels: Int32Array) => [
    { name: 'a', classes: 3, labels: labels.map((v) => v % 3) },
    { name: 'b', classes: 2, labels: labels.map((v) => v % 2) },
  ];
  const data = { train: set(8), val: null, test: set(4) };
  const plain = new MultiTaskClassificationTask(model, data, { batchSize: 8, seed: 0, tasks });
  const weighted = new MultiTaskClassificationTask(model, data, { batchSize: 8, seed: 0, tasks, weights: [0.5, 3] });
  const batch = [...plain.batches(0)][0]!;
  assert.deepEqual([...batch.y.shape], [8, 2]);
  const a = noGrad(() => plain.step(batch));
  const b = noGrad(() => weighted.step(batch));
  assert.ok(Math.abs(b.loss.item() - (0.5 * a.values['a.loss']! + 3 * a.values['b.loss']!)) < 1e-5);
  assert.throws(() => new MultiTaskClassificationTask(model, data, { batchSize: 8, seed: 0, tasks, weights: [1] }), /weights must be 2/);
  // a model whose heads do not match the tasks is named, not silently mis-trained
  assert.throws(() => new MultiTaskClassificationTask(model, data, { batchSize: 8, seed: 0 }), /model's tasks \[a \(3\), b \(2\)\] do not match the data's tasks \[fine \(10\), coarse \(4\)\]/);
  const headless = { forward: (x: Tensor) => model.forward(x) } as unknown as MultiTaskModel;
  const wrong = new MultiTaskClassificationTask(headless, data, { batchSize: 8, seed: 0 });
  assert.throws(() => wrong.step([...wrong.batches(0)][0]!), /task 'fine' has 10 classes but the model's head 0 gives 3 logits/);
});
