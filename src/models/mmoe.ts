// Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): E shared experts that see every input, one
// softmax gate per task mixing them, and one tower per task on its own mixture.
//
//   B = batch, d = inputDim, E = numExperts, h = expertHidden, o = expertOut, T = tasks
//   experts:  y_e = act(x W1_e + b1_e) W2_e + b2_e          y [E, B, o]
//   gate t:   g_t = softmax(x Wg_t)                         g_t [B, E]
//   task t:   f_t = sum_e g_t[:, e] * y_e                   f_t [B, o]
//   tower t:  logits_t = act(f_t Wt1 + bt1) Wt2 + bt2       [B, classes_t]
//
// Unlike a sparse MoE layer nothing is routed: the gates are dense, so every expert runs on every
// row and the "dispatch" is a broadcast. With E = 1 every gate is 1 and the model is the classic
// shared-bottom multi-task network, the baseline MMoE was proposed against.

import { Module } from '../nn/module.js';
import { Linear } from '../nn/linear.js';
import { uniform } from '../nn/init.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { add, gelu, geluTanh, matmul, mul, relu, reshape, silu, softmax, sum, transpose } from '../ops/index.js';
import type { Schema } from '../config/schema.js';

export const MMOE_ACTIVATIONS = ['relu', 'gelu', 'geluTanh', 'silu'] as const;
export type MMoEActivation = (typeof MMOE_ACTIVATIONS)[number];

/** One prediction head: its name (the prefix of its metrics, 'fine.accuracy') and class count. */
export interface TaskHead {
  name: string;
  classes: number;
}

/** Fashion-MNIST's 10 classes and the 4-way coarse grouping of src/train/multitask.ts. */
export const FASHION_MNIST_TASK_HEADS: readonly TaskHead[] = Object.freeze([
  Object.freeze({ name: 'fine', classes: 10 }),
  Object.freeze({ name: 'coarse', classes: 4 }),
]);

export interface MMoEConfig {
  inputDim: number;
  numExperts: number;
  expertHidden: number;
  expertOut: number;
  tasks: TaskHead[];
  towerHidden: number;
  activation: MMoEActivation;
}

export const MMOE_SCHEMA: Schema = {
  inputDim: { type: 'integer', default: 784, min: 1, doc: 'input features per example (784 = a flattened 28x28 image)' },
  numExperts: { type: 'integer', default: 8, min: 1, doc: 'shared experts E, all run on every input; 1 = a shared-bottom model' },
  expertHidden: { type: 'integer', default: 128, min: 1, doc: 'hidden width of each expert MLP (inputDim -> expertHidden -> expertOut)' },
  expertOut: { type: 'integer', default: 64, min: 1, doc: 'output width of each expert, the width of every task tower input' },
  tasks: {
    type: 'json',
    default: FASHION_MNIST_TASK_HEADS.map((t) => ({ ...t })),
    doc: 'the tasks as [{ name, classes }], one gate and one tower each; default Fashion-MNIST fine (10) and coarse (4)',
  },
  towerHidden: { type: 'integer', default: 32, min: 1, doc: 'hidden width of each task tower (expertOut -> towerHidden -> classes)' },
  activation: { type: 'string', default: 'relu', oneOf: MMOE_ACTIVATIONS, doc: 'activation inside the experts and the towers' },
};

/** Checks the `tasks` field beyond the schema's 'json': names become metric keys, so they must be plain and unique. */
export function validateTaskHeads(tasks: unknown, where = 'mmoe.tasks'): TaskHead[] {
  if (!Array.isArray(tasks) || tasks.length === 0) throw new Error(`${where}: expected a non-empty array of { name, classes }, got ${JSON.stringify(tasks)}`);
  const seen = new Set<string>();
  return tasks.map((t: unknown, i) => {
    const o = t as Partial<TaskHead> | null;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error(`${where}[${i}]: expected { name, classes }, got ${JSON.stringify(t)}`);
    const extra = Object.keys(o).filter((k) => k !== 'name' && k !== 'classes');
    if (extra.length > 0) throw new Error(`${where}[${i}].${extra[0]}: unknown key (known: name, classes)`);
    if (typeof o.name !== 'string' || !/^[A-Za-z0-9_-]+$/.test(o.name)) {
      throw new Error(`${where}[${i}].name: expected letters, digits, '_' or '-' (it prefixes metric keys such as '<name>.accuracy'), got ${JSON.stringify(o.name)}`);
    }
    if (seen.has(o.name)) throw new Error(`${where}[${i}].name: '${o.name}' appears twice`);
    seen.add(o.name);
    if (typeof o.classes !== 'number' || !Number.isInteger(o.classes) || o.classes < 2) {
      throw new Error(`${where}[${i}].classes: expected an integer >= 2, got ${JSON.stringify(o.classes)}`);
    }
    return { name: o.name, classes: o.classes };
  });
}

function activate(kind: MMoEActivation, x: Tensor): Tensor {
  switch (kind) {
    case 'relu': return relu(x);
    case 'gelu': return gelu(x);
    case 'geluTanh': return geluTanh(x);
    case 'silu': return silu(x);
  }
}

/**
 * E two-layer MLPs with weights stacked [E, d, h] and [E, h, o] like ExpertBank, but dense: every
 * expert sees every row. One batched matmul per projection ([B, d] against [E, d, h] reads x once
 * for all experts) replaces ExpertBank's grouped GEMM over x repeated E times, which would copy
 * the input E times for nothing. Unlike ExpertBank the output width o may differ from d.
 */
export class DenseExpertBank extends Module {
  readonly w1: Tensor;
  readonly b1: Tensor;
  readonly w2: Tensor;
  readonly b2: Tensor;

  constructor(readonly numExperts: number, readonly dIn: number, readonly dHidden: number, readonly dOut: number,
    readonly activation: MMoEActivation, rng: Rng) {
    super();
    const bound1 = 1 / Math.sqrt(dIn); // PyTorch's Linear init, per expert
    const bound2 = 1 / Math.sqrt(dHidden);
    this.w1 = this.param('w1', uniform([numExperts, dIn, dHidden], bound1, rng));
    this.b1 = this.param('b1', uniform([numExperts, dHidden], bound1, rng));
    this.w2 = this.param('w2', uniform([numExperts, dHidden, dOut], bound2, rng));
    this.b2 = this.param('b2', uniform([numExperts, dOut], bound2, rng));
  }

  /** x [B, d] -> every expert's output [E, B, o]. */
  forward(x: Tensor): Tensor {
    if (x.rank !== 2 || x.shape[1] !== this.dIn) throw new Error(`DenseExpertBank: input must be [B, ${this.dIn}], got [${x.shape.join(', ')}]`);
    const E = this.numExperts;
    const h = activate(this.activation, add(matmul(x, this.w1), reshape(this.b1, [E, 1, this.dHidden]))); // [E, B, h]
    return add(matmul(h, this.w2), reshape(this.b2, [E, 1, this.dOut])); // [E, B, o]
  }
}

/** A task tower: Linear -> activation -> Linear. */
export class Tower extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;

  constructor(dIn: number, hidden: number, classes: number, readonly activation: MMoEActivation, rng: Rng) {
    super();
    this.fc1 = this.module('fc1', new Linear(dIn, hidden, { rng }));
    this.fc2 = this.module('fc2', new Linear(hidden, classes, { rng }));
  }

  forward(x: Tensor): Tensor {
    return this.fc2.forward(activate(this.activation, this.fc1.forward(x)));
  }
}

export interface MMoEOutput {
  /** One [B, classes_t] per task, in config order. */
  logits: Tensor[];
  /** One [B, E] per task: the softmax gate, each row a distribution over the experts. */
  gates: Tensor[];
}

/** Summary of one task's gate over a batch (read off the values; not differentiable). */
export interface GateStats {
  /** Mean gate weight per expert [E] (sums to 1): how much of the task each expert carries. */
  meanGate: number[];
  /** Mean over rows of the gate's entropy (nats): 0 = one expert per row, ln E = uniform mixing. */
  entropy: number;
  /** Entropy of meanGate: ln E when the task uses all experts equally overall. */
  entropyOfMean: number;
}

export function gateStats(gate: Tensor): GateStats {
  if (gate.rank !== 2) throw new Error(`gateStats: gate must be [B, E], got [${gate.shape.join(', ')}]`);
  const [B, E] = gate.shape as [number, number];
  const g = gate.data;
  const meanGate = new Array<number>(E).fill(0);
  let entropy = 0;
  for (let b = 0; b < B; b++) {
    for (let e = 0; e < E; e++) {
      const p = g[b * E + e]!;
      meanGate[e]! += p;
      if (p > 0) entropy -= p * Math.log(p);
    }
  }
  if (B > 0) {
    for (let e = 0; e < E; e++) meanGate[e]! /= B;
    entropy /= B;
  }
  const entropyOfMean = meanGate.reduce((h, p) => (p > 0 ? h - p * Math.log(p) : h), 0);
  return { meanGate, entropy, entropyOfMean };
}

export class MMoE extends Module {
  readonly experts: DenseExpertBank;
  /** gates[t]: [E, d] as a bias-free Linear(d -> E), the paper's g_t(x) = softmax(W_t x). */
  readonly gates: Linear[];
  readonly towers: Tower[];
  readonly tasks: readonly TaskHead[];

  constructor(readonly config: MMoEConfig, seed = 0) {
    super();
    this.tasks = Object.freeze(validateTaskHeads(config.tasks));
    for (const k of ['inputDim', 'numExperts', 'expertHidden', 'expertOut', 'towerHidden'] as const) {
      const v = config[k];
      if (!Number.isInteger(v) || v < 1) throw new Error(`mmoe.${k}: expected a positive integer, got ${v}`);
    }
    if (!MMOE_ACTIVATIONS.includes(config.activation)) {
      throw new Error(`mmoe.activation: '${String(config.activation)}' is unknown (known: ${MMOE_ACTIVATIONS.join(', ')})`);
    }
    const rng = new Rng(seed);
    const { inputDim: d, numExperts: E, expertHidden: h, expertOut: o, towerHidden, activation } = config;
    this.experts = this.module('experts', new DenseExpertBank(E, d, h, o, activation, rng));
    this.gates = this.tasks.map((t) => this.module(`gate_${t.name}`, new Linear(d, E, { bias: false, rng })));
    this.towers = this.tasks.map((t) => this.module(`tower_${t.name}`, new Tower(o, towerHidden, t.classes, activation, rng)));
  }

  get numExperts(): number {
    return this.config.numExperts;
  }

  /** x [B, inputDim] -> logits and gates per task. */
  forward(x: Tensor): MMoEOutput {
    const d = this.config.inputDim;
    const B = x.size / d;
    if (!Number.isInteger(B) || x.shape[0] !== B) throw new Error(`mmoe: input must be [B, ${d}], got [${x.shape.join(', ')}]`);
    const x2 = x.rank === 2 ? x : reshape(x, [B, d]); // [B, 1, 28, 28] images work unflattened
    const y = this.experts.forward(x2); // [E, B, o]
    const E = this.config.numExperts;
    const logits: Tensor[] = [];
    const gates: Tensor[] = [];
    for (let t = 0; t < this.tasks.length; t++) {
      const g = softmax(this.gates[t]!.forward(x2)); // [B, E]
      // weight each expert's rows by its gate column, then sum the experts: f [B, o]
      const f = sum(mul(reshape(transpose(g), [E, B, 1]), y), 0);
      logits.push(this.towers[t]!.forward(f));
      gates.push(g);
    }
    return { logits, gates };
  }
}
