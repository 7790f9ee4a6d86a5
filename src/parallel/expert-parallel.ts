// Expert parallelism on one host: every MoELayer of a model runs its routed experts on N worker
// threads (ranks), each holding a token shard and E/N experts, with dispatch and combine as an
// all-to-all over shared memory (layout.ts, protocol.ts). The router, aux losses, metrics and
// shared experts stay on the main thread; the expert computation is one recorded op whose backward
// runs the same exchange for the gradients. Results equal the single-process layer bit for bit
// (same kernels, same rows, same summation order per token); see docs/results/expert-parallel.md.
//
// The expert weights live in shared memory: attaching moves each expert parameter's storage into a
// shared region (the tensor keeps its identity), so the workers read the weights the model shows
// with no copy per step, and a worker that steps its experts' optimizer (sharded-optimizer.ts)
// writes them in place. Weight gradients come back as views of the shared gradient region.

import { Module } from '../nn/module.js';
import { Tensor } from '../tensor/tensor.js';
import { isGradEnabled, record } from '../tensor/autograd.js';
import { getBackend } from '../kernels/registry.js';
import { MoELayer, type RoutedExperts } from '../moe/layer.js';
import type { ExpertBank } from '../moe/experts/bank.js';
import type { DispatchPlan } from '../moe/permute/bins.js';
import { resizeLeafInPlace } from '../moe/grow.js';
import type { TypedArray } from '../tensor/dtype.js';
import { ExpertGroup, type ExpertGroupOptions } from './group.js';
import { ExpertStacks } from './expert-stacks.js';
import { exchangeLayout, rowMatrix } from './layout.js';
import { BACKENDS, FLAG, MAX_OVERLAP, OP, PARAMS, f32, type ParamName } from './protocol.js';

export interface ExpertParallelOptions extends ExpertGroupOptions {
  /**
   * Tutel's overlap degree (default 1): each exchange runs in this many chunks of every rank's
   * experts, and a rank computes chunk c while the others still pack chunk c + 1 (protocol.ts
   * OP.forwardOverlap). Chunks are whole experts, so results stay bit-identical; a degree above a
   * rank's expert count leaves that rank's extra chunks empty. 1 runs the three barrier phases.
   */
  overlapDegree?: number;
}

/**
 * What the workers can serve: an expert bank (trainable; MoELayer) or the MoE decoder's stored
 * stacks (inference only; decoder-experts.ts), and the hook through which its owner runs it.
 */
export interface ExpertHost {
  readonly experts: ExpertBank | ExpertStacks;
  routedExperts: RoutedExperts | null;
}

interface Registered {
  id: number;
  layer: ExpertHost;
  bank: ExpertBank | ExpertStacks;
  params: Partial<Record<ParamName, SharedArrayBuffer>>;
  grads: Partial<Record<ParamName, SharedArrayBuffer>>;
  shapes: string;
  /** Recorded forwards whose backward has not run: while > 0, a backward hands out copies, not views. */
  pendingBackwards: number;
}

/** A layer's expert parameters as the workers hold them (for the sharded optimizer). */
export interface ExpertLayerInfo {
  id: number;
  bank: ExpertBank;
  params: Readonly<Partial<Record<ParamName, SharedArrayBuffer>>>;
  grads: Readonly<Partial<Record<ParamName, SharedArrayBuffer>>>;
}

/** Bytes that crossed between ranks (off the diagonal) and stayed on a rank, summed over exchanges. */
export interface ExchangeBytes {
  crossRank: number;
  local: number;
  exchanges: number;
}

export class ExpertParallel {
  readonly group: ExpertGroup;
  readonly layers: ExpertHost[];
  readonly overlapDegree: number;
  readonly bytes: ExchangeBytes = { crossRank: 0, local: 0, exchanges: 0 };
  /** Called with each exchange's [N][N] row matrix (a routing trace for the simulator). */
  onExchange: ((layer: number, rows: number[][], tokens: number) => void) | null = null;
  private readonly registered: Registered[] = [];
  private callId = 0;
  /** Set when the workers own the experts' optimizer state: a replaced expert bank would lose it. */
  private banksLocked: string | null = null;

  constructor(layers: ExpertHost[], opts: ExpertParallelOptions) {
    if (layers.length === 0) throw new Error('expert-parallel: the model has no MoELayer to distribute');
    for (const l of layers) {
      if (l.experts.numExperts < opts.workers) {
        throw new Error(`expert-parallel: ${opts.workers} workers for a layer of ${l.experts.numExperts} experts (parallel.experts must not exceed numExperts)`);
      }
    }
    this.layers = layers;
    const degree = opts.overlapDegree ?? 1;
    if (!Number.isInteger(degree) || degree < 1 || degree > MAX_OVERLAP) {
      throw new Error(`expert-parallel: overlapDegree = ${degree} must be an integer in [1, ${MAX_OVERLAP}] (parallel.overlap)`);
    }
    this.overlapDegree = degree;
    this.group = new ExpertGroup(opts);
    layers.forEach((layer, id) => {
      const reg: Registered = { id, layer, bank: layer.experts, params: {}, grads: {}, shapes: '', pendingBackwards: 0 };
      this.registered.push(reg);
      this.register(reg);
      layer.routedExperts = (x, plan, gates) => this.forward(reg, x, plan, gates);
    });
  }

  /**
   * Restores the layers' own expert computation and stops the workers; the expert weights (and
   * gradients that were views of shared memory) get ordinary storage again.
   */
  async close(): Promise<void> {
    for (const l of this.layers) l.routedExperts = null;
    for (const reg of this.registered) {
      const bank = reg.bank;
      if (bank instanceof ExpertStacks) continue; // the owner takes its stacks back (decoder-experts.ts)
      for (const name of PARAMS) {
        const p = bank[name];
        if (!p) continue;
        const g = p.grad;
        if (p.data.buffer === reg.params[name]) adoptStorage(p, p.data.slice());
        if (g && g.data.buffer === reg.grads[name]) adoptStorage(g, g.data.slice());
        p.grad = g;
      }
    }
    await this.group.close();
  }

  /** The layers' expert parameters and their shared regions, in registration order. */
  expertLayers(): ExpertLayerInfo[] {
    for (const reg of this.registered) this.checkCurrent(reg);
    return this.registered.map((r) => {
      if (r.bank instanceof ExpertStacks) throw new Error(`expert-parallel: layer ${r.id} holds a decoder's stored expert stacks (inference only); they have no optimizer`);
      return { id: r.id, bank: r.bank, params: r.params, grads: r.grads };
    });
  }

  /**
   * From now on the workers own the experts' optimizer state (`why` says so in errors): a layer
   * whose expert bank is replaced, resized or cast fails instead of getting new regions.
   */
  lockBanks(why: string): void {
    this.banksLocked = why;
  }

  /**
   * Re-registers every layer whose bank grew or changed, even when the workers own the optimizer
   * state: for the sharded optimizer's loadState, which is about to replace that state with one of
   * the new shapes (model growth: state() read before, extended, loaded after).
   */
  adoptChangedBanks(): void {
    const locked = this.banksLocked;
    this.banksLocked = null;
    try {
      for (const reg of this.registered) this.checkCurrent(reg);
    } finally {
      this.banksLocked = locked;
    }
  }

  /** Re-registers a layer whose bank changed (grown, replaced, cast back); throws when that would lose state. */
  private checkCurrent(reg: Registered): void {
    const bank = reg.layer.experts;
    if (bank instanceof ExpertStacks) {
      if (bank !== reg.bank) throw new Error(`expert-parallel: layer ${reg.id}'s expert stacks were replaced; attach the model again`);
      return;
    }
    const current = bank === reg.bank && shapesKey(bank) === reg.shapes && PARAMS.every((n) => !bank[n] || bank[n]!.data.buffer === reg.params[n]);
    if (current) return;
    if (this.banksLocked !== null) {
      throw new Error(`expert-parallel: layer ${reg.id}'s experts were replaced, resized or cast after ${this.banksLocked}; that is not supported (their optimizer state is on the workers)`);
    }
    this.register(reg);
  }

  /**
   * (Re-)allocates a layer's shared parameter and gradient regions for the bank's current shapes,
   * and moves the parameters' storage into the parameter region (the tensors keep their identity).
   */
  private register(reg: Registered): void {
    const bank = reg.layer.experts;
    if (bank instanceof ExpertStacks) {
      reg.bank = bank;
      this.group.registerLayer({
        type: 'layer', id: reg.id, numExperts: bank.numExperts, dModel: bank.dModel, dHidden: bank.dHidden,
        activation: 'swiglu', params: {}, grads: {}, stacks: bank.message,
      });
      return;
    }
    for (const name of PARAMS) {
      const p = bank[name];
      if (p && p.dtype !== 'float32') throw new Error(`expert-parallel: float32 tensors only, got ${p.dtype} (expert weights)`);
    }
    reg.bank = bank;
    reg.shapes = shapesKey(bank);
    reg.params = {};
    reg.grads = {};
    reg.pendingBackwards = 0;
    for (const name of PARAMS) {
      const p = bank[name];
      if (!p) continue;
      const sab = new SharedArrayBuffer(p.size * 4);
      f32(sab, p.size).set(p.data as Float32Array);
      const g = p.grad;
      adoptStorage(p, f32(sab, p.size));
      p.grad = g;
      reg.params[name] = sab;
      reg.grads[name] = new SharedArrayBuffer(p.size * 4);
    }
    this.group.registerLayer({
      type: 'layer', id: reg.id, numExperts: bank.numExperts, dModel: bank.dModel, dHidden: bank.dHidden,
      activation: bank.activation, params: reg.params, grads: reg.grads,
    });
  }

  private forward(reg: Registered, x: Tensor, plan: DispatchPlan, gates: Tensor): Tensor {
    const current = reg.layer.experts;
    const weights = current instanceof ExpertStacks ? [] : PARAMS.map((n) => current[n]).filter((p): p is Tensor => p !== null);
    for (const t of [x, gates, ...weights]) {
      if (t.dtype !== 'float32') throw new Error(`expert-parallel: float32 tensors only, got ${t.dtype} (${t === x ? 'input' : t === gates ? 'gates' : 'expert weights'})`);
    }
    // a grown, replaced or re-cast expert bank gets new regions (its weights move into them)
    this.checkCurrent(reg);
    const bank = reg.bank;
    const params = bank instanceof ExpertStacks ? [] : PARAMS.map((n) => bank[n]).filter((p): p is Tensor => p !== null);
    if (bank instanceof ExpertStacks && isGradEnabled() && (x.requiresGrad || gates.requiresGrad)) {
      throw new Error(`expert-parallel: layer ${reg.id} runs a decoder's stored expert stacks, for inference only; run it under noGrad`);
    }
    const T = x.shape[0]!;
    const d = bank.dModel;
    const rows = plan.tokenOfRow.length;
    const E = bank.numExperts;
    const g = this.group;
    // validates the plan and gives the bytes per link
    const layout = exchangeLayout(plan.tokenOfRow, plan.groupSizes, T, g.ranks);
    this.account(reg.id, rowMatrix(layout), T, d);
    g.ensure('input', T * d * 4);
    g.ensure('output', T * d * 4);
    g.ensure('send', rows * d * 4);
    g.ensure('ret', rows * d * 4);
    g.ensure('gates', rows * 4);
    g.ensure('gateGrads', rows * 4);
    g.ensure('meta', (rows + E) * 4);
    const tokenOfRow = Int32Array.from(plan.tokenOfRow);
    const groupSizes = Int32Array.from(plan.groupSizes);
    writeMeta(g, tokenOfRow, groupSizes);
    f32(g.regions.input, T * d).set(x.data as Float32Array);
    f32(g.regions.gates, rows).set(gates.data as Float32Array);
    const needGrad = isGradEnabled() && [x, gates, ...params].some((t) => t.requiresGrad);
    let flags = needGrad ? FLAG.needGrad : 0;
    if (x.requiresGrad) flags |= FLAG.xGrad;
    if (gates.requiresGrad) flags |= FLAG.gateGrad;
    if (!(bank instanceof ExpertStacks)) PARAMS.forEach((n, i) => { if (bank[n]?.requiresGrad) flags |= 1 << (FLAG.paramGrad0 + i); });
    const callId = ++this.callId;
    const degree = this.overlapDegree;
    const args = { layer: reg.id, callId, tokens: T, rows, flags, backend: backendCode(), degree };
    const what = `layer ${reg.id} forward`;
    if (degree > 1) {
      g.run(OP.forwardOverlap, args, what);
    } else {
      g.run(OP.pack, args, what);
      g.run(OP.expertForward, args, what);
      g.run(OP.combine, args, what);
    }
    const out = new Tensor(f32(g.regions.output, T * d).slice(), [T, d]);
    if (!needGrad || bank instanceof ExpertStacks) return out;

    const inputs: Tensor[] = [x, ...params, gates];
    reg.pendingBackwards++;
    return record(out, 'expertParallel', inputs, (gOut) => {
      if (reg.bank !== bank) throw new Error(`expert-parallel: layer ${reg.id}'s experts changed between forward and backward`);
      reg.pendingBackwards = Math.max(0, reg.pendingBackwards - 1);
      // A weight gradient handed out as a view of the gradient region must not be overwritten
      // before autograd has taken it into the leaf's .grad; with another backward of this layer
      // still to come in the graph (a layer used twice), hand out copies instead.
      const views = reg.pendingBackwards === 0;
      writeMeta(g, tokenOfRow, groupSizes);
      f32(g.regions.input, T * d).set(gOut.data as Float32Array);
      let bflags = flags;
      PARAMS.forEach((n, i) => {
        const p = bank[n];
        // the single-process op adds into an existing gradient in place (ops/expert-mlp.ts weightGrad): so do the workers
        if (p?.requiresGrad && accumulatesInPlace(p)) {
          // a gradient that is already the region's view accumulates there with no copy
          if (p.grad!.data.buffer !== reg.grads[n]) f32(reg.grads[n]!, p.size).set(p.grad!.data as Float32Array);
          bflags |= 1 << (FLAG.accumulate0 + i);
        }
      });
      const bargs = { ...args, flags: bflags };
      const bwhat = `layer ${reg.id} backward`;
      if (degree > 1) {
        g.run(OP.backwardOverlap, bargs, bwhat);
      } else {
        g.run(OP.pack, bargs, bwhat);
        g.run(OP.expertBackward, bargs, bwhat);
        if (x.requiresGrad) g.run(OP.combine, bargs, bwhat);
      }
      this.account(reg.id, rowMatrix(layout), T, d);
      const grads: Array<Tensor | null> = [x.requiresGrad ? new Tensor(f32(g.regions.output, T * d).slice(), [T, d]) : null];
      PARAMS.forEach((n, i) => {
        const p = bank[n];
        if (!p) return;
        if (!p.requiresGrad) { grads.push(null); return; }
        const data = f32(reg.grads[n]!, p.size);
        if (bflags & (1 << (FLAG.accumulate0 + i))) {
          if (p.grad!.data.buffer !== reg.grads[n]) (p.grad!.data as Float32Array).set(data);
          grads.push(null);
        } else {
          // a view: the gradient stays in the region the workers' optimizer steps from (valid until the layer's next backward)
          grads.push(new Tensor(views ? data : data.slice(), p.shape));
        }
      });
      grads.push(gates.requiresGrad ? new Tensor(f32(g.regions.gateGrads, rows).slice(), [rows]) : null);
      return grads;
    }, [tokenOfRow, groupSizes]);
  }

  private account(layer: number, m: number[][], tokens: number, d: number): void {
    const rowBytes = d * 4;
    for (let r = 0; r < m.length; r++) {
      for (let j = 0; j < m.length; j++) {
        // dispatch r -> j and combine j -> r
        if (r === j) this.bytes.local += 2 * m[r]![j]! * rowBytes;
        else this.bytes.crossRank += 2 * m[r]![j]! * rowBytes;
      }
    }
    this.bytes.exchanges++;
    this.onExchange?.(layer, m, tokens);
  }
}

/** Every MoELayer of the model (in module order) runs its experts on `workers` threads. */
export function attachExpertParallel(model: Module, opts: ExpertParallelOptions): ExpertParallel {
  const layers = model.namedModules().map(([, m]) => m).filter((m): m is MoELayer => m instanceof MoELayer);
  return new ExpertParallel(layers, opts);
}

/** Gives a leaf tensor new storage of the same shape, keeping its identity and gradient (moe/grow.ts's helper). */
function adoptStorage(t: Tensor, data: TypedArray): void {
  const g = t.grad;
  resizeLeafInPlace(t, t.shape, data);
  t.grad = g;
}

function shapesKey(bank: ExpertBank): string {
  return PARAMS.map((n) => bank[n]?.shape.join('x') ?? '-').join(',');
}

/** The condition under which ops/expert-mlp.ts adds a weight gradient into the existing buffer. */
function accumulatesInPlace(w: Tensor): boolean {
  const g = w.grad;
  return !w.node && g !== null && g.dtype === w.dtype && g.size === w.size && g.data.buffer !== w.data.buffer;
}

function writeMeta(g: ExpertGroup, tokenOfRow: Int32Array, groupSizes: Int32Array): void {
  const meta = new Int32Array(g.regions.meta, 0, tokenOfRow.length + groupSizes.length);
  meta.set(tokenOfRow);
  meta.set(groupSizes, tokenOfRow.length);
}

function backendCode(): number {
  const name = getBackend().name;
  const i = (BACKENDS as readonly string[]).indexOf(name);
  if (i < 0) throw new Error(`expert-parallel: backend '${name}' is not supported by the workers (supported: ${BACKENDS.join(', ')})`);
  return i;
}
