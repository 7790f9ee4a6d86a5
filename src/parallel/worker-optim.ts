// The optimizer of an expert-parallel worker's own experts (OP.optim): the rank keeps the Adam /
// AdamW / SGD state of experts [e0, e1) of every layer and steps their weights in the shared
// parameter region, from the gradients in the shared gradient region. It runs the optimizer class
// the main thread would run (src/train/optim.ts) on row slices of the same tensors; the update is
// elementwise, so each element gets the same arithmetic as in one process (bit-identical).

import { Tensor } from '../tensor/tensor.js';
import { Adam, AdamW, SGD, type Optimizer } from '../train/optim.js';
import { OPTIM, PARAMS, f32, paramShape, type LayerMessage, type ParamName } from './protocol.js';

export type OptimKind = 'Adam' | 'AdamW' | 'SGD';

/** Hyperparameters of the run's optimizer (the learning rate comes with each step). */
export interface OptimConfig {
  kind: OptimKind;
  betas: [number, number];
  eps: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  /** Weight decay of each layer's expert parameters, as the full optimizer gives them (0: none). */
  decay: Record<number, Partial<Record<ParamName, number>>>;
}

/** A state dictionary in messages: Optimizer.state()'s keys, local names ('exp_avg.w1'). */
export type WireState = Record<string, { data: Float32Array | Float64Array; shape: number[] }>;

export type OptimMessage =
  | { type: 'optim'; seq: number; op: typeof OPTIM.configure; config: OptimConfig }
  | { type: 'optim'; seq: number; op: typeof OPTIM.step; lr: number; grads: Record<number, ParamName[]> }
  | { type: 'optim'; seq: number; op: typeof OPTIM.gather }
  | { type: 'optim'; seq: number; op: typeof OPTIM.load; layers: Record<number, WireState> };

/** A worker's answer to OPTIM.gather: its slice of every layer's state, and the bytes it holds. */
export interface OptimStateReply {
  type: 'optimState';
  seq: number;
  rank: number;
  layers: Record<number, WireState>;
  bytes: number;
}

export interface OptimLayer {
  msg: LayerMessage;
  e0: number;
  e1: number;
}

/** A rank's optimizers, one per layer, over its experts' rows of the shared regions. */
export class WorkerOptimizer {
  private config: OptimConfig | null = null;
  private readonly opts = new Map<number, { msg: LayerMessage; opt: Optimizer; grads: Map<ParamName, Tensor> }>();

  constructor(private readonly rank: number, private readonly post: (m: OptimStateReply, transfer: ArrayBuffer[]) => void) {}

  run(m: OptimMessage, layers: ReadonlyMap<number, OptimLayer>): void {
    switch (m.op) {
      case OPTIM.configure:
        this.config = m.config;
        this.opts.clear();
        return;
      case OPTIM.step:
        for (const [id, names] of Object.entries(m.grads)) this.step(this.layer(layers, Number(id)), names, m.lr);
        return;
      case OPTIM.gather: {
        const out: Record<number, WireState> = {};
        const transfer: ArrayBuffer[] = [];
        let bytes = 0;
        for (const [id, lay] of layers) {
          const st = this.layer(layers, id).opt.state();
          const wire: WireState = {};
          for (const [k, t] of Object.entries(st)) {
            const data = t.data as Float32Array | Float64Array;
            wire[k] = { data, shape: [...t.shape] };
            transfer.push(data.buffer as ArrayBuffer);
            if (k !== 'step' && !k.startsWith('step.')) bytes += data.byteLength;
          }
          out[lay.msg.id] = wire;
        }
        this.post({ type: 'optimState', seq: m.seq, rank: this.rank, layers: out, bytes }, transfer);
        return;
      }
      case OPTIM.load:
        for (const [id, wire] of Object.entries(m.layers)) {
          const st: Record<string, Tensor> = {};
          for (const [k, v] of Object.entries(wire)) st[k] = new Tensor(v.data, v.shape);
          this.layer(layers, Number(id)).opt.loadState(st);
        }
        return;
    }
  }

  private step(l: { opt: Optimizer; grads: Map<ParamName, Tensor> }, names: readonly ParamName[], lr: number): void {
    for (const [name, p] of l.opt.params) p.grad = names.includes(name as ParamName) ? l.grads.get(name as ParamName)! : null;
    l.opt.lr = lr;
    try {
      l.opt.step();
    } finally {
      for (const [, p] of l.opt.params) p.grad = null;
    }
  }

  /** The layer's optimizer, built on first use (and again when the layer's regions were re-registered). */
  private layer(layers: ReadonlyMap<number, OptimLayer>, id: number): { opt: Optimizer; grads: Map<ParamName, Tensor> } {
    const lay = layers.get(id);
    if (!lay) throw new Error(`optimizer: layer ${id} is not registered on this worker`);
    const have = this.opts.get(id);
    if (have && have.msg === lay.msg) return have;
    const c = this.config;
    if (!c) throw new Error('optimizer: not configured (OPTIM.configure must come first)');
    const named: Array<[string, Tensor]> = [];
    const grads = new Map<ParamName, Tensor>();
    const decay = c.decay[id] ?? {};
    let wd = 0;
    for (const name of PARAMS) {
      const sab = lay.msg.params[name];
      if (!sab) continue;
      const shape = paramShape(name, lay.msg.numExperts, lay.msg.dModel, lay.msg.dHidden);
      const per = shape.slice(1).reduce((a, b) => a * b, 1);
      const local = [lay.e1 - lay.e0, ...shape.slice(1)];
      // views, not copies: the step writes the weights the main thread's tensors show
      named.push([name, new Tensor(f32(sab, (lay.e1 - lay.e0) * per, lay.e0 * per), local)]);
      grads.set(name, new Tensor(f32(lay.msg.grads[name]!, (lay.e1 - lay.e0) * per, lay.e0 * per), local));
      const d = decay[name] ?? 0;
      if (d !== 0 && wd !== 0 && d !== wd) throw new Error(`optimizer: layer ${id} has two different weight decays (${wd}, ${d})`);
      if (d !== 0) wd = d;
    }
    const noDecay = (n: string): boolean => (decay[n as ParamName] ?? 0) === 0;
    const opt = c.kind === 'SGD'
      ? new SGD(named, { lr: 0, momentum: c.momentum, dampening: c.dampening, nesterov: c.nesterov, weightDecay: wd, noDecay })
      : new (c.kind === 'Adam' ? Adam : AdamW)(named, { lr: 0, betas: c.betas, eps: c.eps, weightDecay: wd, noDecay });
    const entry = { msg: lay.msg, opt, grads };
    this.opts.set(id, entry);
    return entry;
  }
}
