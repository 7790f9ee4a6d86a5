// Optimizers (SGD, Adam, AdamW) with PyTorch 1.13 semantics, checkpointable state, and gradient clipping.

import { Tensor } from '../tensor/tensor.js';
import { allocArray, type FloatArray, type TypedArray } from '../tensor/dtype.js';
import { shapeStr } from '../tensor/shape.js';

export type NamedParams = ReadonlyArray<readonly [string, Tensor]>;

/** Returns true for parameters that must not get weight decay; asked once per parameter, when the optimizer is built. */
export type NoDecay = (name: string, p: Tensor) => boolean;

/**
 * AdamW's default exclusion: rank <= 1 parameters (biases, norm gains and scales) get no weight
 * decay. Shrinking a norm's gain or a bias toward zero is not a regulariser of model capacity, only
 * a bias on the output scale, which is why GPT-style recipes exclude them; the rank test catches
 * them without depending on how a model names its parameters.
 */
export const rankAtMostOne: NoDecay = (_name, p) => p.rank <= 1;

const neverExcluded: NoDecay = () => false;

/** Per-parameter state: its own step count (Adam's bias correction) and one buffer per slot. */
interface ParamState {
  step: number;
  buffers: FloatArray[];
}

function fail(where: string, msg: string): never {
  throw new Error(`${where}: ${msg}`);
}

function checkNumber(where: string, field: string, v: unknown, lo: number, hi = Infinity, hiOpen = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || (hiOpen ? v >= hi : v > hi)) {
    const range = hi === Infinity ? `>= ${lo}` : `in [${lo}, ${hi}${hiOpen ? ')' : ']'}`;
    fail(where, `${field} must be a finite number ${range}, got ${String(v)}`);
  }
  return v;
}

function copyOf(src: TypedArray, like: TypedArray): FloatArray {
  const out = allocArray(like instanceof Float64Array ? 'float64' : 'float32', src.length) as FloatArray;
  out.set(src);
  return out;
}

/**
 * Base class: a fixed list of named parameters, a learning rate that schedules set between steps
 * (`opt.lr = schedule(opt.steps)`), and state that round-trips through a flat name -> tensor record.
 *
 * step() skips parameters whose .grad is null (no state is created for them, as in PyTorch) and
 * updates the others in place on p.data, so tensors keep their identity. Each element's update is
 * computed in JS doubles and stored once into the parameter's own dtype.
 */
export abstract class Optimizer {
  readonly params: NamedParams;
  /** Weight decay per parameter, after the noDecay rule (index-aligned with params). */
  protected readonly decay: Float64Array;
  protected readonly stateByName = new Map<string, ParamState>();
  private readonly byName = new Map<string, Tensor>();
  private _lr = 0;
  private _steps = 0;

  /**
   * @param slots state buffer names, each saved as '<slot>.<param name>'
   * @param perParamStep whether each parameter's own step count is saved ('step.<param name>')
   */
  protected constructor(
    protected readonly kind: string,
    params: NamedParams,
    lr: number,
    weightDecay: number,
    noDecay: NoDecay,
    private readonly slots: readonly string[],
    private readonly perParamStep: boolean,
  ) {
    if (!Array.isArray(params)) fail(kind, 'params must be an array of [name, Tensor] pairs (module.namedParameters())');
    if (params.length === 0) fail(kind, 'got an empty parameter list');
    const seen = new Set<Tensor>();
    for (const entry of params) {
      const [name, p] = (Array.isArray(entry) ? entry : []) as unknown as [unknown, unknown];
      if (typeof name !== 'string' || !(p instanceof Tensor)) fail(kind, 'params must be an array of [name, Tensor] pairs (module.namedParameters())');
      if (this.byName.has(name)) fail(kind, `parameter name '${name}' appears twice`);
      if (seen.has(p)) fail(kind, `parameter '${name}' is the same tensor as an earlier parameter`);
      if (p.dtype === 'int32') fail(kind, `parameter '${name}' is int32; only float tensors can be optimized`);
      this.byName.set(name, p);
      seen.add(p);
    }
    this.params = params.map(([n, p]) => [n, p] as const);
    this.lr = lr;
    checkNumber(kind, 'weightDecay', weightDecay, 0);
    this.decay = Float64Array.from(this.params, ([n, p]) => (noDecay(n, p) ? 0 : weightDecay));
  }

  get lr(): number {
    return this._lr;
  }

  set lr(v: number) {
    this._lr = checkNumber(this.kind, 'lr', v, 0);
  }

  /** How many times step() has run (the index a schedule takes for the next step). */
  get steps(): number {
    return this._steps;
  }

  /** Weight decay that parameter `name` gets (0 where the noDecay rule excludes it). */
  weightDecayOf(name: string): number {
    const i = this.params.findIndex(([n]) => n === name);
    if (i < 0) fail(this.kind, `no parameter named '${name}'`);
    return this.decay[i]!;
  }

  step(): void {
    for (let i = 0; i < this.params.length; i++) {
      const [name, p] = this.params[i]!;
      const g = p.grad;
      if (g === null) continue;
      if (g.rank !== p.rank || g.shape.some((d, k) => d !== p.shape[k])) fail(this.kind, `gradient of '${name}' has shape ${shapeStr(g.shape)}, parameter has shape ${shapeStr(p.shape)}`);
      let st = this.stateByName.get(name);
      if (st === undefined) {
        st = { step: 0, buffers: [] };
        this.stateByName.set(name, st);
      }
      st.step++;
      this.update(p.data as FloatArray, g.data as FloatArray, st, this.decay[i]!);
    }
    this._steps++;
  }

  /** Updates one parameter in place; st.step already counts this step. */
  protected abstract update(p: FloatArray, g: FloatArray, st: ParamState, weightDecay: number): void;

  /** Sets every parameter's gradient to null (the next backward starts fresh). */
  zeroGrad(): void {
    for (const [, p] of this.params) p.grad = null;
  }

  /**
   * Copies of the state: 'step' (a 1-element float64 tensor, the number of step() calls) and, for
   * every parameter that has state, '<slot>.<name>' buffers shaped like the parameter, plus
   * 'step.<name>' where the optimizer counts steps per parameter (Adam, AdamW).
   */
  state(): Record<string, Tensor> {
    const out: Record<string, Tensor> = { step: new Tensor(Float64Array.of(this._steps), [1]) };
    for (const [name, p] of this.params) {
      const st = this.stateByName.get(name);
      if (st === undefined) continue;
      if (this.perParamStep) out[`step.${name}`] = new Tensor(Float64Array.of(st.step), [1]);
      this.slots.forEach((slot, j) => {
        const buf = st.buffers[j];
        if (buf !== undefined) out[`${slot}.${name}`] = new Tensor(copyOf(buf, buf), p.shape);
      });
    }
    return out;
  }

  /**
   * Replaces the state with a copy of `state` (as written by state()). Every problem is collected
   * and reported together: unknown entries, entries for unknown parameters, wrong shapes, and
   * parameters whose state is incomplete. Nothing changes unless all of it is valid.
   */
  loadState(state: Readonly<Record<string, Tensor>>): void {
    const where = `${this.kind}.loadState`;
    const problems: string[] = [];
    const isCount = (t: Tensor): boolean => t.size === 1 && Number.isInteger(t.data[0]) && t.data[0]! >= 0;
    let steps = 0;
    const stepT = state['step'];
    if (!(stepT instanceof Tensor)) problems.push(`missing 'step'`);
    else if (!isCount(stepT)) problems.push(`'step' must be one non-negative integer, got shape ${shapeStr(stepT.shape)} [${Array.from(stepT.data.slice(0, 4)).join(', ')}]`);
    else steps = stepT.data[0]!;

    const next = new Map<string, { step: number | undefined; buffers: Array<FloatArray | undefined> }>();
    const reported = new Set<string>(); // parameters already named in a problem: not also 'incomplete'
    const slotOf = (s: string): number => this.slots.indexOf(s);
    for (const key of Object.keys(state)) {
      if (key === 'step') continue;
      const t = state[key];
      const dot = key.indexOf('.');
      const prefix = dot < 0 ? key : key.slice(0, dot);
      const name = key.slice(dot + 1);
      const isStep = this.perParamStep && prefix === 'step';
      const slot = slotOf(prefix);
      if (dot < 0 || (!isStep && slot < 0)) {
        const known = [...this.slots, ...(this.perParamStep ? ['step'] : [])].map((s) => `'${s}.<param>'`).join(', ');
        problems.push(`unknown entry '${key}' (${this.kind} state has 'step'${known ? ` and ${known}` : ''})`);
        continue;
      }
      const p = this.byName.get(name);
      if (p === undefined) {
        problems.push(`entry '${key}' names no parameter of this optimizer ('${name}')`);
        continue;
      }
      if (!(t instanceof Tensor)) {
        problems.push(`entry '${key}' is not a Tensor`);
        reported.add(name);
        continue;
      }
      if (t.dtype === 'int32' && !isStep) {
        problems.push(`entry '${key}' is int32; state buffers are float`);
        reported.add(name);
        continue;
      }
      let e = next.get(name);
      if (e === undefined) {
        e = { step: undefined, buffers: this.slots.map(() => undefined) };
        next.set(name, e);
      }
      if (isStep) {
        if (!isCount(t)) {
          problems.push(`'${key}' must be one non-negative integer, got shape ${shapeStr(t.shape)}`);
          reported.add(name);
        } else e.step = t.data[0]!;
      } else if (t.rank !== p.rank || t.shape.some((d, k) => d !== p.shape[k])) {
        problems.push(`'${key}' has shape ${shapeStr(t.shape)}, parameter '${name}' has shape ${shapeStr(p.shape)}`);
        reported.add(name);
      } else {
        e.buffers[slot] = copyOf(t.data, p.data);
      }
    }
    for (const [name, e] of next) {
      const missing = this.slots.filter((_, j) => e.buffers[j] === undefined).map((s) => `'${s}.${name}'`);
      if (this.perParamStep && e.step === undefined) missing.unshift(`'step.${name}'`);
      if (missing.length > 0 && !reported.has(name)) {
        problems.push(`state of parameter '${name}' is incomplete: missing ${missing.join(', ')}`);
      }
    }
    if (problems.length > 0) fail(where, problems.length === 1 ? problems[0]! : `${problems.length} problems:\n  ${problems.join('\n  ')}`);

    this.stateByName.clear();
    for (const [name, e] of next) this.stateByName.set(name, { step: e.step ?? steps, buffers: e.buffers as FloatArray[] });
    this._steps = steps;
  }
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
  /** Parameters that get no weight decay; by default every parameter is decayed (torch.optim.SGD). */
  noDecay?: NoDecay;
}

/**
 * torch.optim.SGD: d = g + wd*p; with momentum, buf = d on a parameter's first step and
 * buf = momentum*buf + (1 - dampening)*d after; d = nesterov ? d + momentum*buf : buf; p -= lr*d.
 */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;

  constructor(params: NamedParams, opts: SGDOptions) {
    const o = opts ?? fail('SGD', 'options with at least lr are required');
    super('SGD', params, o.lr, o.weightDecay ?? 0, o.noDecay ?? neverExcluded, (o.momentum ?? 0) !== 0 ? ['momentum_buffer'] : [], false);
    this.momentum = checkNumber('SGD', 'momentum', o.momentum ?? 0, 0);
    this.dampening = checkNumber('SGD', 'dampening', o.dampening ?? 0, 0, 1);
    this.nesterov = o.nesterov ?? false;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) fail('SGD', 'nesterov needs momentum > 0 and dampening 0');
  }

  protected update(p: FloatArray, g: FloatArray, st: ParamState, wd: number): void {
    const lr = this.lr;
    const n = p.length;
    const mu = this.momentum;
    if (mu === 0) {
      for (let i = 0; i < n; i++) {
        const pi = p[i]!;
        const d = wd !== 0 ? g[i]! + wd * pi : g[i]!;
        p[i] = pi - lr * d;
      }
      return;
    }
    let buf = st.buffers[0];
    const first = buf === undefined;
    if (buf === undefined) {
      buf = allocArray(p instanceof Float64Array ? 'float64' : 'float32', n) as FloatArray;
      st.buffers[0] = buf;
    }
    const keep = 1 - this.dampening;
    const nesterov = this.nesterov;
    for (let i = 0; i < n; i++) {
      const pi = p[i]!;
      const d = wd !== 0 ? g[i]! + wd * pi : g[i]!;
      const b = first ? d : mu * buf[i]! + keep * d;
      buf[i] = b;
      p[i] = pi - lr * (nesterov ? d + mu * b : b);
    }
  }
}

export interface AdamOptions {
  /** Default 1e-3. */
  lr?: number;
  /** Default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Default 0 for Adam, 0.01 for AdamW (PyTorch's defaults). */
  weightDecay?: number;
  /** Parameters that get no weight decay; default: none for Adam, rankAtMostOne for AdamW. */
  noDecay?: NoDecay;
}

/**
 * Adam and AdamW, as PyTorch 1.13's single-tensor path computes them, per parameter at its own step t:
 *   Adam:  g += wd*p                         (L2 folded into the gradient)
 *   AdamW: p *= 1 - lr*wd                     (decoupled decay)
 *   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 */
abstract class AdamBase extends Optimizer {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;

  protected constructor(kind: string, params: NamedParams, opts: AdamOptions, defaultDecay: number, defaultNoDecay: NoDecay, private readonly decoupled: boolean) {
    const o = opts ?? {};
    super(kind, params, o.lr ?? 1e-3, o.weightDecay ?? defaultDecay, o.noDecay ?? defaultNoDecay, ['exp_avg', 'exp_avg_sq'], true);
    const betas = o.betas ?? [0.9, 0.999];
    if (!Array.isArray(betas) || betas.length !== 2) fail(kind, `betas must be a pair [beta1, beta2], got ${String(betas)}`);
    this.beta1 = checkNumber(kind, 'betas[0]', betas[0], 0, 1, true);
    this.beta2 = checkNumber(kind, 'betas[1]', betas[1], 0, 1, true);
    this.eps = checkNumber(kind, 'eps', o.eps ?? 1e-8, 0);
  }

  protected update(p: FloatArray, g: FloatArray, st: ParamState, wd: number): void {
    const n = p.length;
    if (st.buffers.length === 0) {
      const dt = p instanceof Float64Array ? 'float64' : 'float32';
      st.buffers.push(allocArray(dt, n) as FloatArray, allocArray(dt, n) as FloatArray);
    }
    const m = st.buffers[0]!;
    const v = st.buffers[1]!;
    const lr = this.lr;
    const b1 = this.beta1;
    const b2 = this.beta2;
    const c1 = 1 - b1;
    const c2 = 1 - b2;
    const eps = this.eps;
    const stepSize = lr / (1 - b1 ** st.step);
    const bc2Sqrt = Math.sqrt(1 - b2 ** st.step);
    // Adam folds decay into the gradient, AdamW shrinks the parameter; at most one is nonzero.
    const l2 = this.decoupled ? 0 : wd;
    const shrink = this.decoupled ? 1 - lr * wd : 1;
    for (let i = 0; i < n; i++) {
      const pi = p[i]! * shrink;
      const gi = l2 !== 0 ? g[i]! + l2 * p[i]! : g[i]!;
      const mi = b1 * m[i]! + c1 * gi;
      const vi = b2 * v[i]! + c2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = pi - stepSize * (mi / (Math.sqrt(vi) / bc2Sqrt + eps));
    }
  }
}

/** torch.optim.Adam (L2 weight decay added to the gradient; every parameter decayed unless noDecay says otherwise). */
export class Adam extends AdamBase {
  constructor(params: NamedParams, opts: AdamOptions = {}) {
    super('Adam', params, opts, 0, neverExcluded, false);
  }
}

/**
 * torch.optim.AdamW (decoupled weight decay). Unlike PyTorch, which decays whatever it is given,
 * rank <= 1 parameters (biases, norm gains, scales) get no decay by default (rankAtMostOne); pass
 * noDecay to choose otherwise (`() => false` decays everything, as torch.optim.AdamW does).
 */
export class AdamW extends AdamBase {
  constructor(params: NamedParams, opts: AdamOptions = {}) {
    super('AdamW', params, opts, 1e-2, rankAtMostOne, true);
  }
}

/**
 * torch.nn.utils.clip_grad_norm_ (L2): returns the global norm of all gradients before clipping and,
 * when maxNorm / (norm + 1e-6) < 1, multiplies every gradient in place by that factor. A NaN or
 * infinite norm is returned without touching the gradients, so the caller can report it and skip
 * the step instead of writing NaN into every gradient. Parameters without a gradient are ignored.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  checkNumber('clipGradNorm', 'maxNorm', maxNorm, 0);
  let sumSq = 0;
  for (const p of params) {
    const g = p.grad;
    if (g === null) continue;
    const d = g.data;
    for (let i = 0; i < d.length; i++) sumSq += d[i]! * d[i]!;
  }
  const total = Math.sqrt(sumSq);
  if (!Number.isFinite(total)) return total;
  const coef = maxNorm / (total + 1e-6);
  if (coef < 1) {
    // Autograd can hand the same gradient tensor (or storage) to several leaves, e.g. both inputs of
    // an add; scaling such storage once per leaf would clip it twice.
    const done = new Set<TypedArray>();
    for (const p of params) {
      const g = p.grad;
      if (g === null || done.has(g.data)) continue;
      done.add(g.data);
      const d = g.data;
      for (let i = 0; i < d.length; i++) d[i] = d[i]! * coef;
    }
  }
  return total;
}
