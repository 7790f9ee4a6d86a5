// Continual MoE during training: applies a model's `grow` schedule at its steps (every MoE layer
// grows, the optimizer's state is extended with zeros), ramps the new experts' logit offset to 0,
// and keeps frozen experts exactly where they were (their gradient rows and optimizer moments zero).

import type { Module } from '../nn/module.js';
import { Tensor } from '../tensor/tensor.js';
import { allocArray } from '../tensor/dtype.js';
import { deriveSeed } from '../tensor/rng.js';
import { growMoELayer, moeLayersOf, setGrowBias, type GrowEntry } from '../moe/grow.js';
import type { MoELayer } from '../moe/layer.js';
import type { Optimizer } from './optim.js';

/** Zeroes rows [0, rows) of a tensor whose first dimension is the expert dimension. */
function zeroLeadingRows(t: Tensor, rows: number): void {
  const rowSize = t.size / t.shape[0]!;
  t.data.fill(0, 0, Math.min(rows, t.shape[0]!) * rowSize);
}

/** The tensors of a layer indexed by expert on their first dimension (the ones growth resizes). */
function expertTensors(layer: MoELayer): Tensor[] {
  const r = layer.router as unknown as { weight: Tensor; noise?: { weight: Tensor } };
  const b = layer.experts;
  return [r.weight, r.noise?.weight ?? null, b.w1, b.w2, b.w3, b.b1, b.b2].filter((t): t is Tensor => t !== null);
}

/**
 * Extends an optimizer's state, as `before` = opt.state() read before the parameters grew, to the
 * parameters' current shapes (state() itself cannot be read while they disagree): a state buffer with fewer rows
 * than its (grown) parameter gets zero rows appended (Adam's moments of a new expert start at 0; its
 * step count is the parameter's, so bias correction is ~1 and the first update of a new row is
 * lr (1 - b1) / sqrt(1 - b2) ~ 3.2 lr in size, not lr). Rows listed in `zeroRows` are zeroed too.
 */
export function extendOptimizerState(opt: Optimizer, before: Record<string, Tensor>, zeroRows: ReadonlyMap<Tensor, number> = new Map()): string[] {
  const byName = new Map(opt.params.map(([n, p]) => [n, p] as const));
  const st = { ...before };
  const extended: string[] = [];
  for (const [key, t] of Object.entries(st)) {
    const dot = key.indexOf('.');
    if (dot < 0 || key.startsWith('step.')) continue;
    const p = byName.get(key.slice(dot + 1));
    if (!p) continue;
    let out = t;
    if (t.shape[0] !== p.shape[0]) {
      const sameTail = t.rank === p.rank && t.shape.slice(1).every((d, i) => d === p.shape[i + 1]);
      if (!sameTail || t.shape[0]! > p.shape[0]!) throw new Error(`extendOptimizerState: '${key}' has shape [${t.shape.join(', ')}], parameter has [${p.shape.join(', ')}]: only a first dimension that grew can be extended`);
      out = new Tensor(allocArray(t.dtype, p.size), p.shape);
      out.data.set(t.data);
      st[key] = out;
      extended.push(key);
    }
    const rows = zeroRows.get(p);
    if (rows !== undefined) zeroLeadingRows(out, rows);
  }
  opt.loadState(st);
  return extended;
}

export interface GrowthEvent {
  step: number;
  layers: number;
  oldExperts: number;
  newExperts: number;
  frozen: number;
}

/**
 * Runs a grow schedule over a model's MoE layers. Call beforeStep(step) before each optimizer step's
 * forward (step = steps already taken) and afterBackward() between backward and the optimizer step.
 */
export class GrowthController {
  /** Experts [0, frozen) of every layer are frozen (0: none). */
  private frozen = 0;
  /** Applied entries, in schedule order (index into the schedule). */
  private applied = 0;
  readonly events: GrowthEvent[] = [];

  constructor(readonly model: Module, readonly schedule: readonly GrowEntry[], readonly seed = 0, private readonly log: (line: string) => void = () => {}) {
    if (schedule.length > 0 && moeLayersOf(model).length === 0) throw new Error('grow: the model has no MoE layer to grow (model.grow needs ffn: moe)');
  }

  /** Experts currently frozen at the front of every MoE layer. */
  get frozenExperts(): number {
    return this.frozen;
  }

  /** Re-applies the growths a checkpoint at `step` already went through (before its weights load; no optimizer yet). */
  replay(step: number): void {
    while (this.applied < this.schedule.length && this.schedule[this.applied]!.step < step) this.apply(null);
    this.updateOffsets(step);
  }

  beforeStep(step: number, optimizer: Optimizer | null): void {
    while (this.applied < this.schedule.length && this.schedule[this.applied]!.step <= step) this.apply(optimizer, step);
    this.updateOffsets(step);
  }

  /** Zeroes the gradient rows of frozen experts (so clipping ignores them and Adam, whose moments there are 0, leaves them). */
  afterBackward(): void {
    if (this.frozen === 0) return;
    for (const [, layer] of moeLayersOf(this.model)) {
      for (const t of expertTensors(layer)) if (t.grad) zeroLeadingRows(t.grad, this.frozen);
    }
  }

  private apply(optimizer: Optimizer | null, atStep?: number): void {
    const i = this.applied++;
    const e = this.schedule[i]!;
    const layers = moeLayersOf(this.model);
    const oldE = layers[0]![1].config.numExperts;
    if (e.freezeOld && optimizer) {
      const names = new Map(optimizer.params.map(([n, p]) => [p, n] as const));
      for (const [, layer] of layers) {
        for (const t of expertTensors(layer)) {
          const n = names.get(t);
          if (n !== undefined && optimizer.weightDecayOf(n) > 0) throw new Error(`grow: freezeOld needs optim.weightDecay = 0 ('${n}' is decayed, which would move frozen experts)`);
        }
      }
    }
    const before = optimizer?.state() ?? null;
    layers.forEach(([, layer], li) => {
      if (layer.config.numExperts !== oldE) throw new Error(`grow: MoE layers have different expert counts (${layer.config.numExperts} vs ${oldE}); the schedule grows them together`);
      growMoELayer(layer, { add: e.add, offset: e.offset, seed: deriveSeed(this.seed, 7, i, li) });
    });
    if (e.freezeOld) this.frozen = oldE;
    if (optimizer && before) {
      const zero = new Map<Tensor, number>();
      if (e.freezeOld) for (const [, layer] of layers) for (const t of expertTensors(layer)) zero.set(t, oldE);
      extendOptimizerState(optimizer, before, zero);
    }
    const ev = { step: atStep ?? e.step, layers: layers.length, oldExperts: oldE, newExperts: oldE + e.add, frozen: this.frozen };
    this.events.push(ev);
    if (atStep !== undefined) this.log(`grow at step ${e.step}: ${layers.length} MoE layer(s) from ${oldE} to ${oldE + e.add} experts${e.freezeOld ? `, experts 0..${oldE - 1} frozen` : ''}`);
  }

  /** The new experts' offset at `step`: offset * (1 - (step - growStep) / rampSteps), reaching 0. */
  private updateOffsets(step: number): void {
    const layers = moeLayersOf(this.model);
    if (this.applied === 0) return;
    let from = layers[0]![1].config.numExperts - this.schedule.slice(0, this.applied).reduce((s, x) => s + x.add, 0);
    for (const e of this.schedule.slice(0, this.applied)) {
      const frac = e.rampSteps === 0 ? (step > e.step ? 1 : 0) : Math.min(1, (step - e.step) / e.rampSteps);
      const v = e.offset * (1 - frac);
      for (const [, layer] of layers) setGrowBias(layer, from, from + e.add, v === 0 ? 0 : v); // never -0
      from += e.add;
    }
  }
}

/** A controller for a model config's `grow` schedule (null when there is none). */
export function growthControllerFor(modelConfig: Readonly<Record<string, unknown>>, model: Module, seed: number, log?: (line: string) => void): GrowthController | null {
  const schedule = modelConfig['grow'] as GrowEntry[] | undefined;
  if (!schedule || schedule.length === 0) return null;
  return new GrowthController(model, schedule, seed, log);
}
