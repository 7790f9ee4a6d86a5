// Continual MoE: growing a trained MoE layer by new experts in place, so that the routing of the
// tokens it already serves is undisturbed at the moment of growth, plus the `grow` schedule's
// validation and the rule for loading checkpoints whose expert count differs from the model's.
//
// Parameters are resized in place (the Tensor objects keep their identity), so an optimizer and a
// trainer holding them stay valid; only the optimizer's state must be extended (train/growth.ts).

import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { allocArray, type TypedArray } from '../tensor/dtype.js';
import { shapeStr, shapeSize } from '../tensor/shape.js';
import { add } from '../ops/index.js';
import { MoELayer } from './layer.js';
import type { Module } from '../nn/module.js';

/** Router types whose scores are a linear map of x (logits), to which a per-expert offset can be added. */
export const GROWABLE_ROUTERS = ['topk', 'switch', 'noisy-topk', 'dynamic', 'differentiable-topk', 'straight-through'] as const;

export interface GrowOptions {
  /** Experts to add (>= 1). */
  add: number;
  /**
   * Logit offset of the new experts at the moment of growth (default -30: e^-30 ~ 1e-13, so their
   * probability is negligible and they lose every top-k comparison against trained logits).
   */
  offset?: number;
  /** New router rows are uniform in +-initScale/sqrt(d) (default 0.01): near zero, but not tied. */
  initScale?: number;
  /** Seed of the new experts' and router rows' initialisation. */
  seed?: number;
}

export interface GrowResult {
  oldExperts: number;
  newExperts: number;
  /** The tensors resized (expert dimension first), by their names inside the layer. */
  resized: string[];
}

/** What growth needs of a linear router (the fields are readonly in the router classes' types). */
interface LinearRouterLike extends Module {
  kind: string;
  weight: Tensor;
  numExperts: number;
  dModel: number;
  k?: number;
  noise?: { weight: Tensor };
  logits(x: Tensor): Tensor;
}

/** Per-expert logit offsets of a grown router: a buffer 'growBias' [E], added to its logits. */
const growBias = new WeakMap<Module, Tensor>();

/** The logit offset buffer of a grown router (null when it never grew). */
export function growBiasOf(router: Module): Tensor | null {
  return growBias.get(router) ?? null;
}

/**
 * Resizes a leaf tensor in place (parameters keep their identity, as Tensor.castInPlace does for
 * dtypes). Tensor has no public resize, so this writes its storage and shape fields directly.
 */
export function resizeLeafInPlace(t: Tensor, shape: readonly number[], data: TypedArray): void {
  if (t.node) throw new Error('resizeLeafInPlace: only leaf tensors can be resized');
  if (data.length !== shapeSize(shape)) throw new Error(`resizeLeafInPlace: ${data.length} values for shape ${shapeStr(shape)}`);
  const w = t as unknown as { _data: TypedArray; shape: readonly number[] };
  if (!('_data' in w)) throw new Error('resizeLeafInPlace: Tensor storage layout changed (no _data field)');
  w._data = data;
  w.shape = Object.freeze([...shape]);
  t.grad = null;
}

/** t [E, ...] -> [E + add, ...]: the old rows kept, the new ones from fill (or zeros). */
function growRows(t: Tensor, addRows: number, fill?: (out: TypedArray, from: number) => void): void {
  const shape = [t.shape[0]! + addRows, ...t.shape.slice(1)];
  const out = allocArray(t.dtype, shapeSize(shape));
  out.set(t.data);
  fill?.(out, t.size);
  resizeLeafInPlace(t, shape, out);
}

function fillUniform(rng: Rng, bound: number): (out: TypedArray, from: number) => void {
  return (out, from) => {
    for (let i = from; i < out.length; i++) out[i] = (rng.next() * 2 - 1) * bound;
  };
}

function asLinearRouter(layer: MoELayer): LinearRouterLike {
  const r = layer.router as unknown as LinearRouterLike;
  if (!(GROWABLE_ROUTERS as readonly string[]).includes(r.kind)) {
    throw new Error(`growMoELayer: router '${r.kind}' cannot grow (growable: ${GROWABLE_ROUTERS.join(', ')}); hash, expert-choice, sigmoid-group and hierarchical routing change for every token when E changes`);
  }
  return r;
}

/**
 * Adds `add` experts to a layer. New experts get fresh weights (the bank's initialisation, seeded);
 * new router rows start near zero and a logit offset (`growBias`, a buffer saved with the model)
 * starts them at `offset`, so right after growth every token keeps its top-k choices as long as
 * offset + x.w_new < the token's k-th largest old logit (true for the default -30 unless trained
 * logits are of that size). setGrowBias moves the offset (train/growth.ts ramps it to 0).
 */
export function growMoELayer(layer: MoELayer, opts: GrowOptions): GrowResult {
  const K = opts.add;
  if (!(Number.isInteger(K) && K >= 1)) throw new Error(`growMoELayer: add = ${K} must be an integer >= 1`);
  const offset = opts.offset ?? -30;
  if (!(Number.isFinite(offset) && offset <= 0)) throw new Error(`growMoELayer: offset = ${offset} must be a finite number <= 0`);
  const initScale = opts.initScale ?? 0.01;
  if (!(Number.isFinite(initScale) && initScale >= 0)) throw new Error(`growMoELayer: initScale = ${initScale} must be a finite number >= 0`);
  const router = asLinearRouter(layer);
  const E = layer.config.numExperts;
  if (router.kind === 'differentiable-topk' && router.k === E) {
    throw new Error(`growMoELayer: differentiable-topk with k = E = ${E} opens every expert; with more experts its threshold moves for every token`);
  }
  const rng = new Rng(opts.seed ?? 0);
  const d = layer.config.dModel;
  const h = layer.experts.dHidden;
  const resized: string[] = [];
  growRows(router.weight, K, fillUniform(rng, initScale / Math.sqrt(d)));
  resized.push('router.weight');
  // noisy top-k: zero noise-scale rows give the new experts the minimum noise std (softplus(0))
  if (router.noise) { growRows(router.noise.weight, K); resized.push('router.noise.weight'); }
  const bank = layer.experts;
  const b1 = 1 / Math.sqrt(d);
  const b2 = 1 / Math.sqrt(h);
  for (const [name, t, bound] of [['w1', bank.w1, b1], ['w2', bank.w2, b2], ['w3', bank.w3, b1], ['b1', bank.b1, b1], ['b2', bank.b2, b2]] as const) {
    if (t === null) continue;
    growRows(t, K, fillUniform(rng, bound));
    resized.push(`experts.${name}`);
  }

  let bias = growBias.get(router);
  if (bias === undefined) {
    bias = new Tensor(allocArray(router.weight.dtype, E + K), [E + K]);
    // a registered buffer, so checkpoints carry it as '<layer>.router.growBias'
    (router as unknown as { buffer(name: string, t: Tensor): Tensor }).buffer('growBias', bias);
    growBias.set(router, bias);
    const base = router.logits.bind(router);
    router.logits = (x: Tensor): Tensor => add(base(x), bias!);
  } else {
    growRows(bias, K);
  }
  bias.data.fill(offset, E);
  resized.push('router.growBias');

  // the element counts everywhere else read these (capacity, metrics, activeParameters)
  for (const obj of [router, bank] as object[]) (obj as { numExperts: number }).numExperts = E + K;
  (layer.config as { numExperts: number }).numExperts = E + K;
  return { oldExperts: E, newExperts: E + K, resized };
}

/** Sets the logit offset of experts [from, to) of a grown layer. */
export function setGrowBias(layer: MoELayer, from: number, to: number, value: number): void {
  const bias = growBias.get(layer.router);
  if (!bias) throw new Error('setGrowBias: this layer has not grown');
  if (!(Number.isInteger(from) && Number.isInteger(to) && 0 <= from && from <= to && to <= bias.size)) throw new Error(`setGrowBias: [${from}, ${to}) is not a range of the ${bias.size} experts`);
  bias.data.fill(value, from, to);
}

/** The MoE layers of a model with their dotted names, in model order. */
export function moeLayersOf(model: Module): Array<[string, MoELayer]> {
  return model.namedModules().filter((e): e is [string, MoELayer] => e[1] instanceof MoELayer);
}

export interface GrowEntry {
  /** Grow before this optimizer step (after `step` steps have run; 0 = before the first). */
  step: number;
  /** Experts added to every MoE layer. */
  add: number;
  /** Freeze the experts (and their router rows) that existed before this growth. */
  freezeOld: boolean;
  /** Logit offset of the new experts at growth (<= 0). */
  offset: number;
  /** Steps over which the offset rises linearly to 0 (0: at once, after the growth step's routing). */
  rampSteps: number;
}

const GROW_KEYS = ['step', 'add', 'freezeOld', 'offset', 'rampSteps'];

/** Validates a `grow` schedule ([{ step, add, freezeOld?, offset?, rampSteps? }]), filling defaults; errors name the field. */
export function validateGrowSchedule(v: unknown, path: string): GrowEntry[] {
  if (!Array.isArray(v)) throw new Error(`${path}: expected a list like [{ "step": 100, "add": 4, "freezeOld": false }], got ${JSON.stringify(v)}`);
  let prev = -1;
  return v.map((e: unknown, i) => {
    const at = `${path}[${i}]`;
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new Error(`${at}: expected an object { step, add, freezeOld?, offset?, rampSteps? }, got ${JSON.stringify(e)}`);
    const o = e as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!GROW_KEYS.includes(k)) throw new Error(`${at}.${k}: unknown key (known: ${GROW_KEYS.join(', ')})`);
    const int = (k: string, min: number, def?: number): number => {
      const x = o[k] ?? def;
      if (x === undefined) throw new Error(`${at}.${k}: required`);
      if (typeof x !== 'number' || !Number.isInteger(x) || x < min) throw new Error(`${at}.${k}: expected an integer >= ${min}, got ${JSON.stringify(x)}`);
      return x;
    };
    const step = int('step', 0);
    if (step <= prev) throw new Error(`${at}.step: ${step} must be greater than the previous entry's step ${prev}`);
    prev = step;
    const freezeOld = o['freezeOld'] ?? false;
    if (typeof freezeOld !== 'boolean') throw new Error(`${at}.freezeOld: expected true or false, got ${JSON.stringify(freezeOld)}`);
    const offset = o['offset'] ?? -30;
    if (typeof offset !== 'number' || !Number.isFinite(offset) || offset > 0) throw new Error(`${at}.offset: expected a finite number <= 0, got ${JSON.stringify(offset)}`);
    return { step, add: int('add', 1), freezeOld, offset, rampSteps: int('rampSteps', 0, 50) };
  });
}
