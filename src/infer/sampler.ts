// Next-token sampling from logits: greedy, temperature, top-k, top-p (nucleus), seeded.

import { Rng } from '../tensor/rng.js';

export interface SamplerOptions {
  /** Softmax temperature; 0 (the default) is greedy arg-max. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 or absent = all. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability mass reaches p; 1 or absent = all. */
  topP?: number;
  /** Seed of the draw; the same seed and logits give the same ids. Default 0. */
  seed?: number;
}

/**
 * The tokens a draw chooses among and their renormalised probabilities: most likely first when
 * top-k or top-p cut the set, in id order otherwise (a plain temperature draw needs no sort).
 */
export interface Candidates { ids: Int32Array; probs: Float64Array }

export class Sampler {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  private readonly rng: Rng;

  constructor(opts: SamplerOptions = {}) {
    const t = opts.temperature ?? 0;
    const k = opts.topK ?? 0;
    const p = opts.topP ?? 1;
    if (!(Number.isFinite(t) && t >= 0)) throw new Error(`sampler: temperature must be a finite number >= 0, got ${t}`);
    if (!(Number.isInteger(k) && k >= 0)) throw new Error(`sampler: topK must be a non-negative integer (0 = off), got ${k}`);
    if (!(p > 0 && p <= 1)) throw new Error(`sampler: topP must be in (0, 1], got ${p}`);
    const seed = opts.seed ?? 0;
    if (!Number.isInteger(seed)) throw new Error(`sampler: seed must be an integer, got ${seed}`);
    this.temperature = t;
    this.topK = k;
    this.topP = p;
    this.rng = new Rng(seed);
  }

  get greedy(): boolean {
    return this.temperature === 0 || this.topK === 1;
  }

  /** The next id from V = logits.length (or the row of length V at offset off). */
  sample(logits: ArrayLike<number>, off = 0, V = logits.length - off): number {
    checkRow(logits, off, V);
    if (this.greedy) return argmax(logits, off, V);
    const c = this.draw(logits, off, V);
    // inverse CDF over the candidates, most likely first; the last one absorbs rounding
    let u = this.rng.next();
    for (let i = 0; i < c.ids.length - 1; i++) {
      u -= c.probs[i]!;
      if (u < 0) return c.ids[i]!;
    }
    return c.ids[c.ids.length - 1]!;
  }

  /**
   * The distribution sample() draws from (temperature, then top-k, then top-p, renormalised).
   * Greedy settings give the arg-max with probability 1.
   */
  candidates(logits: ArrayLike<number>, off = 0, V = logits.length - off): Candidates {
    checkRow(logits, off, V);
    if (this.greedy) return { ids: Int32Array.of(argmax(logits, off, V)), probs: Float64Array.of(1) };
    return this.draw(logits, off, V);
  }

  /** candidates() of a non-greedy sampler on a row already checked (sample() checks it once per token). */
  private draw(logits: ArrayLike<number>, off: number, V: number): Candidates {
    const maxL = logits[off + argmax(logits, off, V)]!;
    const invT = 1 / this.temperature;
    // unnormalised weights exp((l - max) / T); -Infinity logits get weight 0 and are dropped
    let order: number[];
    if (this.topK > 0 && this.topK <= 64 && this.topK < V) {
      order = topKIndices(logits, off, V, this.topK);
    } else {
      order = [];
      for (let v = 0; v < V; v++) if (logits[off + v]! !== -Infinity) order.push(v);
      if (this.topP < 1 || (this.topK > 0 && this.topK < order.length)) {
        order.sort((a, b) => logits[off + b]! - logits[off + a]! || a - b);
        if (this.topK > 0) order.length = Math.min(order.length, this.topK);
      }
    }
    const w = new Float64Array(order.length);
    let total = 0;
    for (let i = 0; i < order.length; i++) {
      w[i] = Math.exp((logits[off + order[i]!]! - maxL) * invT);
      total += w[i]!;
    }
    let n = order.length;
    if (this.topP < 1) {
      // order is sorted most likely first: keep the shortest prefix whose mass reaches p
      let acc = 0;
      for (let i = 0; i < order.length; i++) {
        acc += w[i]! / total;
        if (acc >= this.topP) { n = i + 1; break; }
      }
      let kept = 0;
      for (let i = 0; i < n; i++) kept += w[i]!;
      total = kept;
    }
    const ids = new Int32Array(n);
    const probs = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      ids[i] = order[i]!;
      probs[i] = w[i]! / total;
    }
    return { ids, probs };
  }
}

function checkRow(logits: ArrayLike<number>, off: number, V: number): void {
  if (!(Number.isInteger(V) && V >= 1 && off >= 0 && off + V <= logits.length)) {
    throw new Error(`sampler: logits row [${off}, ${off + V}) does not fit in ${logits.length} values`);
  }
  let finite = false;
  for (let v = 0; v < V; v++) {
    const x = logits[off + v]!;
    if (Number.isNaN(x) || x === Infinity) throw new Error(`sampler: logit ${v} is ${x} (the model produced a non-finite value)`);
    if (x !== -Infinity) finite = true;
  }
  if (!finite) throw new Error('sampler: every logit is -Infinity, nothing can be sampled');
}

/** First index of the largest value (ties go to the lower id, so greedy runs are reproducible). */
export function argmax(logits: ArrayLike<number>, off = 0, V = logits.length - off): number {
  let best = 0;
  let bestV = logits[off]!;
  for (let v = 1; v < V; v++) {
    const x = logits[off + v]!;
    if (x > bestV) { bestV = x; best = v; }
  }
  return best;
}

/** Indices of the k largest finite values, largest first, ties by lower id (a sorted insertion buffer: k is small). */
function topKIndices(logits: ArrayLike<number>, off: number, V: number, k: number): number[] {
  const idx: number[] = [];
  for (let v = 0; v < V; v++) {
    const x = logits[off + v]!;
    if (x === -Infinity) continue;
    if (idx.length === k && x <= logits[off + idx[k - 1]!]!) continue;
    let i = idx.length === k ? k - 1 : idx.length;
    if (idx.length < k) idx.push(v);
    while (i > 0 && logits[off + idx[i - 1]!]! < x) { idx[i] = idx[i - 1]!; i--; }
    idx[i] = v;
  }
  return idx;
}
