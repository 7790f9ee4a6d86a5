// The optimizer of an expert-parallel run: each worker owns the optimizer state (Adam/AdamW
// moments, SGD momentum) of its E/N experts and steps their weights itself (worker-optim.ts); the
// main thread keeps the state of the other parameters (router, attention, embeddings, shared
// experts). To the trainer it is one Optimizer: state() gathers the workers' slices into the same
// full-size entries a one-process optimizer writes, loadState() scatters them, so a checkpoint
// written with N workers resumes with any other N (or none). A model that grows (continual MoE)
// re-shards at the growth's loadState: the workers own the grown experts' state too.

import { Tensor } from '../tensor/tensor.js';
import { Adam, AdamW, SGD, Optimizer } from '../train/optim.js';
import { OP, OPTIM, PARAMS, f32, type ParamName } from './protocol.js';
import { evenSplit } from './layout.js';
import type { ExpertLayerInfo, ExpertParallel } from './expert-parallel.js';
import type { PendingPhase } from './group.js';
import type { OptimConfig, OptimKind, OptimMessage, OptimStateReply, WireState } from './worker-optim.js';

interface ExpertParam {
  name: string;
  layer: ExpertLayerInfo;
  param: ParamName;
  tensor: Tensor;
}

/** Bytes of the buffers in an optimizer state (the step counters left out). */
export function optimizerStateBytes(state: Readonly<Record<string, Tensor>>): number {
  let bytes = 0;
  for (const [k, t] of Object.entries(state)) if (k !== 'step' && !k.startsWith('step.')) bytes += t.data.byteLength;
  return bytes;
}

export class ExpertShardedOptimizer extends Optimizer {
  /** The state bytes each worker held at the last state() call (gathered with it). */
  workerStateBytes: number[] = [];
  private readonly inner: Optimizer | null;
  private readonly experts: ExpertParam[];
  private readonly expertByName = new Map<string, ExpertParam>();
  private count = 0;
  private seq = 0;

  /**
   * @param full the optimizer the run would use in one process, over every parameter: its class,
   *   hyperparameters and per-parameter weight decay are copied; it validates loadState().
   */
  constructor(private readonly full: Optimizer, private readonly ep: ExpertParallel) {
    const kind = kindOf(full);
    const decayOf = (n: string): number => full.weightDecayOf(n);
    const wd = Math.max(0, ...full.params.map(([n]) => decayOf(n)));
    super(`${kind} (experts on ${ep.group.ranks} workers)`, full.params, full.lr, wd, (n) => decayOf(n) === 0, [], false);
    const layers = ep.expertLayers();
    const owner = new Map<Tensor, { layer: ExpertLayerInfo; param: ParamName }>();
    for (const layer of layers) for (const param of PARAMS) if (layer.bank[param]) owner.set(layer.bank[param]!, { layer, param });
    this.experts = [];
    const rest: Array<[string, Tensor]> = [];
    for (const [name, p] of full.params) {
      const o = owner.get(p);
      if (o) this.experts.push({ name, tensor: p, ...o });
      else rest.push([name, p]);
    }
    if (this.experts.length !== owner.size) {
      throw new Error(`${this.kind}: the optimizer has ${this.experts.length} of the ${owner.size} expert parameters of the distributed layers (build it over model.namedParameters())`);
    }
    for (const e of this.experts) this.expertByName.set(e.name, e);
    const noDecay = (n: string): boolean => decayOf(n) === 0;
    this.inner = rest.length === 0 ? null
      : full instanceof SGD ? new SGD(rest, { lr: full.lr, momentum: full.momentum, dampening: full.dampening, nesterov: full.nesterov, weightDecay: wd, noDecay })
        : new (full instanceof AdamW ? AdamW : Adam)(rest, { lr: full.lr, betas: [(full as Adam).beta1, (full as Adam).beta2], eps: (full as Adam).eps, weightDecay: wd, noDecay });
    const decay: OptimConfig['decay'] = {};
    for (const e of this.experts) (decay[e.layer.id] ??= {})[e.param] = decayOf(e.name);
    const a = full instanceof SGD ? null : full as Adam;
    const s = full instanceof SGD ? full : null;
    const config: OptimConfig = {
      kind, betas: a ? [a.beta1, a.beta2] : [0.9, 0.999], eps: a?.eps ?? 1e-8,
      momentum: s?.momentum ?? 0, dampening: s?.dampening ?? 0, nesterov: s?.nesterov ?? false, decay,
    };
    ep.lockBanks('the workers took over the experts\' optimizer state');
    this.request({ type: 'optim', seq: 0, op: OPTIM.configure, config }, 'optimizer set-up');
  }

  override get steps(): number {
    return this.count;
  }

  /** Bytes of optimizer state the main thread holds (the non-expert parameters'). */
  mainStateBytes(): number {
    return this.inner ? optimizerStateBytes(this.inner.state()) : 0;
  }

  override step(): void {
    const grads: Record<number, ParamName[]> = {};
    for (const e of this.experts) {
      const g = e.tensor.grad;
      if (g === null) continue;
      if (g.dtype !== 'float32' || g.size !== e.tensor.size) throw new Error(`${this.kind}: gradient of '${e.name}' is ${g.dtype} of ${g.size} elements, the parameter float32 of ${e.tensor.size}`);
      // a gradient that is not the region's view (copied by autograd, clipped into new storage) goes there
      const region = e.layer.grads[e.param]!;
      if (g.data.buffer !== region) f32(region, g.size).set(g.data as Float32Array);
      (grads[e.layer.id] ??= []).push(e.param);
    }
    // the workers step their experts while the main thread steps the other parameters (disjoint memory)
    const phase = Object.keys(grads).length > 0 ? this.startRequest({ type: 'optim', seq: 0, op: OPTIM.step, lr: this.lr, grads }, 'optimizer step') : null;
    try {
      if (this.inner) {
        this.inner.lr = this.lr;
        this.inner.step();
      }
    } finally {
      if (phase) this.ep.group.finish(phase);
    }
    this.count++;
  }

  protected update(): void {
    throw new Error(`${this.kind}: update() is not used (step() is overridden)`);
  }

  /** The full state, as a one-process optimizer's state() would give it (same keys, shapes and order). */
  override state(): Record<string, Tensor> {
    const seq = this.request({ type: 'optim', seq: 0, op: OPTIM.gather }, 'optimizer state gather');
    const replies: OptimStateReply[] = [];
    for (let r = 0; r < this.ep.group.ranks; r++) replies.push(this.ep.group.receive<OptimStateReply>(r, 'optimState', seq, 'the optimizer state gather'));
    this.workerStateBytes = replies.map((m) => m.bytes);
    const gathered = new Map<number, Record<string, Tensor>>();
    for (const layer of this.ep.expertLayers()) gathered.set(layer.id, this.concat(layer, replies.map((m) => m.layers[layer.id] ?? {})));
    const inner = this.inner?.state() ?? {};
    const out: Record<string, Tensor> = { step: new Tensor(Float64Array.of(this.count), [1]) };
    for (const [name] of this.params) {
      const e = this.expertByName.get(name);
      const from = e ? gathered.get(e.layer.id)! : inner;
      const local = e ? e.param : name;
      for (const [k, t] of Object.entries(from)) {
        const dot = k.indexOf('.');
        if (dot > 0 && k.slice(dot + 1) === local) out[`${k.slice(0, dot)}.${name}`] = t;
      }
    }
    return out;
  }

  /**
   * Validated as a one-process optimizer would (same messages); then split: workers get their
   * experts' rows. Expert banks that grew since (model growth: state() read before, extended to the
   * new shapes, loaded here) get new shared regions first, and the workers new optimizers over them.
   */
  override loadState(state: Readonly<Record<string, Tensor>>): void {
    this.full.loadState(state);
    // the full optimizer only checked it: drop its copy
    this.full.loadState({ step: state['step']! });
    this.ep.adoptChangedBanks();
    const current = new Map(this.ep.expertLayers().map((l) => [l.id, l] as const));
    for (const e of this.experts) {
      const l = current.get(e.layer.id)!;
      if (l.bank[e.param] !== e.tensor) throw new Error(`${this.kind}: '${e.name}' is no longer layer ${l.id}'s ${e.param} (the bank was replaced, not grown)`);
      e.layer = l;
    }
    const steps = state['step']!.data[0]!;
    const innerState: Record<string, Tensor> = { step: state['step']! };
    const perLayer = new Map<number, Record<string, Tensor>>();
    for (const [k, t] of Object.entries(state)) {
      if (k === 'step') continue;
      const dot = k.indexOf('.');
      const e = this.expertByName.get(k.slice(dot + 1));
      if (e) {
        const m = perLayer.get(e.layer.id) ?? {};
        m[`${k.slice(0, dot)}.${e.param}`] = t;
        perLayer.set(e.layer.id, m);
      } else {
        innerState[k] = t;
      }
    }
    this.inner?.loadState(innerState);
    const layers = this.ep.expertLayers();
    const N = this.ep.group.ranks;
    for (let r = 0; r < N; r++) {
      const msg: Record<number, WireState> = {};
      for (const layer of layers) {
        const [e0, e1] = this.range(layer, r);
        const wire: WireState = { step: { data: Float64Array.of(steps), shape: [1] } };
        for (const [k, t] of Object.entries(perLayer.get(layer.id) ?? {})) {
          if (k.startsWith('step.')) {
            wire[k] = { data: Float64Array.from(t.data), shape: [1] };
          } else {
            const per = t.size / t.shape[0]!;
            wire[k] = { data: Float32Array.from(t.data.subarray(e0 * per, e1 * per)), shape: [e1 - e0, ...t.shape.slice(1)] };
          }
        }
        msg[layer.id] = wire;
      }
      this.ep.group.post({ type: 'optim', seq: this.seq + 1, op: OPTIM.load, layers: msg } satisfies OptimMessage, r);
    }
    this.issue(OPTIM.load, 'optimizer state load');
    this.count = steps;
  }

  /** Posts a request to every worker and runs it (OP.optim); returns its seq. */
  private request(m: OptimMessage, what: string): number {
    this.ep.group.post({ ...m, seq: this.seq + 1 });
    return this.issue(m.op, what);
  }

  private startRequest(m: OptimMessage, what: string): PendingPhase {
    this.ep.group.post({ ...m, seq: this.seq + 1 });
    const seq = ++this.seq;
    return this.ep.group.start(OP.optim, { layer: 0, callId: seq, tokens: 0, rows: 0, flags: 0, backend: 0, arg: m.op }, what);
  }

  private issue(op: number, what: string): number {
    const seq = ++this.seq;
    this.ep.group.run(OP.optim, { layer: 0, callId: seq, tokens: 0, rows: 0, flags: 0, backend: 0, arg: op }, what);
    return seq;
  }

  private range(layer: ExpertLayerInfo, rank: number): [number, number] {
    const b = evenSplit(layer.bank.numExperts, this.ep.group.ranks);
    return [b[rank]!, b[rank + 1]!];
  }

  /** A layer's state from every rank's slice: step counters must agree, buffers are stacked in rank (expert) order. */
  private concat(layer: ExpertLayerInfo, slices: WireState[]): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    const keys = Object.keys(slices[0]!).filter((k) => k !== 'step');
    for (let r = 1; r < slices.length; r++) {
      const other = Object.keys(slices[r]!).filter((k) => k !== 'step');
      if (other.join() !== keys.join()) throw new Error(`${this.kind}: worker ${r} holds state [${other.join(', ')}] for layer ${layer.id}, worker 0 [${keys.join(', ')}]`);
    }
    for (const k of keys) {
      if (k.startsWith('step.')) {
        const v = slices[0]![k]!.data[0]!;
        const bad = slices.findIndex((s) => s[k]!.data[0] !== v);
        if (bad >= 0) throw new Error(`${this.kind}: worker ${bad} counts ${slices[bad]![k]!.data[0]} steps for layer ${layer.id}'s ${k.slice(5)}, worker 0 ${v}`);
        out[k] = new Tensor(Float64Array.of(v), [1]);
        continue;
      }
      const p = layer.bank[k.slice(k.indexOf('.') + 1) as ParamName]!;
      const data = new Float32Array(p.size);
      const per = p.size / p.shape[0]!;
      slices.forEach((s, r) => data.set(s[k]!.data, this.range(layer, r)[0] * per));
      out[k] = new Tensor(data, p.shape);
    }
    return out;
  }
}

function kindOf(o: Optimizer): OptimKind {
  if (o instanceof AdamW) return 'AdamW';
  if (o instanceof Adam) return 'Adam';
  if (o instanceof SGD) return 'SGD';
  throw new Error(`expert-parallel optimizer: ${o.constructor.name} is not supported (Adam, AdamW or SGD)`);
}
