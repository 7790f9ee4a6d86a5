// Per-MoE-layer routing for metrics.jsonl: each layer's training forwards read through a forward hook, logged as compact arrays.
//
// Models average their router metrics over layers for the step's scalars (entropy, loadCV, ...),
// which hides the one layer that collapses. The step record's `moe` field keeps them per layer:
// { "<module path>": { tokensPerExpert: [E], entropy, entropyOfMean, dropFraction, deadExperts,
// loadCV, loadBalance, zLoss, ... } } for top-k style MoELayers and { combineSumPerExpert: [E],
// combineEntropy } for Soft MoE layers (docs/dashboard.md has the full shape). Read through a hook
// on the layer instances rather than through each model's step values, so every model that holds
// MoELayer / SoftMoELayer modules gets it without changes, with the exact values of the training
// forward (aux losses as computed, before their coefficients).

import type { Module } from '../nn/module.js';
import { MoELayer, type MoEOutput } from '../moe/layer.js';
import { SoftMoELayer, type SoftMoEOutput } from '../moe/soft.js';

/** One layer's entry in a step record: numbers and per-expert arrays (JSON has no NaN: non-finite values are left out). */
export type LayerEntry = Record<string, number | number[]>;

/** 6 significant digits: enough for a chart, and a log of thousands of steps stays small. */
const round = (v: number): number => Number(v.toPrecision(6));

/** Running sums over the training forwards of one layer since the last take (a layer may run more than once per step). */
interface Acc {
  calls: number;
  arrays: Map<string, number[]>;
  /** Sum over calls of each scalar, and how many calls had it. */
  scalars: Map<string, { sum: number; n: number }>;
}

function addArray(acc: Acc, key: string, v: readonly number[]): void {
  const a = acc.arrays.get(key);
  if (!a) acc.arrays.set(key, v.slice());
  else for (let i = 0; i < Math.max(a.length, v.length); i++) a[i] = (a[i] ?? 0) + (v[i] ?? 0);
}

function addScalar(acc: Acc, key: string, v: number): void {
  if (!Number.isFinite(v)) return;
  const s = acc.scalars.get(key) ?? { sum: 0, n: 0 };
  s.sum += v;
  s.n++;
  acc.scalars.set(key, s);
}

/** Entropy (nats) of the share of each entry in a non-negative vector: log E when even. */
export function shareEntropy(v: readonly number[]): number {
  const total = v.reduce((a, b) => a + b, 0);
  if (!(total > 0)) return NaN;
  let h = 0;
  for (const x of v) if (x > 0) h -= (x / total) * Math.log(x / total);
  return h;
}

function recordTopK(acc: Acc, out: MoEOutput): void {
  const m = out.metrics;
  addArray(acc, 'tokensPerExpert', m.tokensPerExpert);
  // kept differs from demand only when capacity dropped assignments: log it only then
  if (m.dropFraction > 0) addArray(acc, 'keptPerExpert', m.keptPerExpert);
  addScalar(acc, 'entropy', m.entropy);
  addScalar(acc, 'entropyOfMean', m.entropyOfMean);
  addScalar(acc, 'dropFraction', m.dropFraction);
  addScalar(acc, 'loadCV', m.loadCV);
  addScalar(acc, 'deadExperts', m.deadExperts.length);
  // loadBalance, zLoss and router-specific aux losses, unweighted, as the layer computed them
  for (const [name, t] of Object.entries(out.losses)) if (t.size === 1) addScalar(acc, name, t.item());
}

function recordSoft(acc: Acc, out: SoftMoEOutput): void {
  const c = out.metrics.combineSumPerExpert;
  addArray(acc, 'combineSumPerExpert', c);
}

/**
 * Calls record(name, output, input) after every training-mode forward of each MoELayer and
 * SoftMoELayer in the model (name: its module path, 'moe' for a bare layer); returns the undo.
 */
export function hookMoELayers(model: Module, record: (name: string, out: unknown, x: unknown, layer: MoELayer | SoftMoELayer) => void): () => void {
  const restores: Array<() => void> = [];
  for (const [path, m] of model.namedModules()) {
    if (!(m instanceof MoELayer) && !(m instanceof SoftMoELayer)) continue;
    const name = path === '' ? 'moe' : path;
    // an instance property shadows the class's forward; the undo puts back what was there (another
    // hook's, or nothing: the class's), so hooks on one layer undo in the reverse order of creation
    const target = m as unknown as { forward: (...args: unknown[]) => unknown };
    const own = Object.prototype.hasOwnProperty.call(target, 'forward');
    const original = target.forward;
    target.forward = function hooked(this: Module, ...args: unknown[]): unknown {
      const out = original.apply(this, args);
      if (this.training) record(name, out, args[0], m);
      return out;
    };
    restores.push(() => {
      if (own) target.forward = original;
      else delete (target as { forward?: unknown }).forward;
    });
  }
  return () => { for (const r of restores) r(); };
}

export class LayerLog {
  private readonly accs = new Map<string, Acc>();
  private readonly restore: () => void;
  private layers = 0;

  /** Hooks every MoELayer and SoftMoELayer in the model; only forwards in training mode are counted (evaluation is not a step). */
  constructor(model: Module) {
    for (const [, m] of model.namedModules()) if (m instanceof MoELayer || m instanceof SoftMoELayer) this.layers++;
    this.restore = hookMoELayers(model, (name, out, _x, layer) => {
      let acc = this.accs.get(name);
      if (!acc) this.accs.set(name, (acc = { calls: 0, arrays: new Map(), scalars: new Map() }));
      acc.calls++;
      if (layer instanceof MoELayer) recordTopK(acc, out as MoEOutput);
      else recordSoft(acc, out as SoftMoEOutput);
    });
  }

  /** Whether the model has any MoE layer to log. */
  get size(): number {
    return this.layers;
  }

  /** The layers' entries since the last take (null when no layer ran in training mode), and a fresh start. */
  take(): Record<string, LayerEntry> | null {
    if (this.accs.size === 0) return null;
    const out: Record<string, LayerEntry> = {};
    for (const [name, acc] of this.accs) {
      const e: LayerEntry = {};
      for (const [k, a] of acc.arrays) e[k] = a.map(round);
      for (const [k, s] of acc.scalars) e[k] = round(s.sum / s.n);
      const c = acc.arrays.get('combineSumPerExpert');
      if (c) {
        const h = shareEntropy(c);
        if (Number.isFinite(h)) e['combineEntropy'] = round(h);
      }
      out[name] = e;
    }
    this.accs.clear();
    return out;
  }

  /** Removes the hooks. */
  stop(): void {
    this.restore();
    this.accs.clear();
  }
}
