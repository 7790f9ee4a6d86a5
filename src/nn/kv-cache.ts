// Key/value cache for autoregressive decoding: per layer K and V buffers [nKV, maxLen, headDim], allocated once.

import { kernel } from '../kernels/registry.js';
import { floatToHalf } from '../tensor/half.js';

/** Element type of a KV cache: float32, or IEEE half (f16, llama.cpp's default: half the bytes and memory). */
export type KVCacheDtype = 'float32' | 'float16';

export const KV_CACHE_DTYPES: readonly KVCacheDtype[] = ['float32', 'float16'];

export interface KVCacheOptions {
  numLayers: number;
  /** Positions the cache holds (prompt + generated tokens). */
  maxLen: number;
  /** Key/value heads per layer (grouped-query attention: fewer than the query heads). */
  numKVHeads: number;
  headDim: number;
  /**
   * float32 (default) or float16: keys and values rounded to f16 as they are written (round to
   * nearest even) and widened exactly as attention reads them. Half the memory and the bytes
   * attention reads per token; results then differ from a float32 cache by f16 rounding.
   */
  dtype?: KVCacheDtype;
}

/**
 * Preallocated from a fixed capacity (no growth per token). A forward writes the new tokens' K and V
 * of every layer at positions length .. length + T - 1, then calls advance(T): positions continue
 * from `length`. Keys are stored after rotary embedding, as attention consumes them.
 *
 * Head-major ([nKV, maxLen, hd], not the [maxLen, nKV, hd] first agreed): each head's keys for
 * positions 0 .. L-1 are then one contiguous [L, hd] block that attention multiplies in place.
 * Position-major needed a transpose of the whole cache per layer and token, which at 900
 * positions took more time than the expert products (measured on the small preset).
 */
export class KVCache {
  readonly numLayers: number;
  readonly maxLen: number;
  readonly numKVHeads: number;
  readonly headDim: number;
  readonly dtype: KVCacheDtype;
  private readonly ks: Float32Array[] | Uint16Array[];
  private readonly vs: Float32Array[] | Uint16Array[];
  private len = 0;

  constructor(opts: KVCacheOptions) {
    for (const k of ['numLayers', 'maxLen', 'numKVHeads', 'headDim'] as const) {
      const v = opts[k];
      if (!Number.isInteger(v) || v <= 0) throw new Error(`KVCache: ${k} must be a positive integer, got ${v}`);
    }
    this.numLayers = opts.numLayers;
    this.maxLen = opts.maxLen;
    this.numKVHeads = opts.numKVHeads;
    this.headDim = opts.headDim;
    const dtype = opts.dtype ?? 'float32';
    if (!KV_CACHE_DTYPES.includes(dtype)) throw new Error(`KVCache: dtype must be one of ${KV_CACHE_DTYPES.join(', ')}, got ${String(dtype)}`);
    this.dtype = dtype;
    const n = this.maxLen * this.numKVHeads * this.headDim;
    const make = () => (dtype === 'float16' ? new Uint16Array(n) : new Float32Array(n));
    this.ks = Array.from({ length: this.numLayers }, make) as Float32Array[] | Uint16Array[];
    this.vs = Array.from({ length: this.numLayers }, make) as Float32Array[] | Uint16Array[];
  }

  /** Positions filled so far (the position of the next token). */
  get length(): number {
    return this.len;
  }

  /** Room left, in positions. */
  get remaining(): number {
    return this.maxLen - this.len;
  }

  /** Forgets every position (buffers are kept). */
  reset(): void {
    this.len = 0;
  }

  /** Bytes held by the K and V buffers. */
  bytes(): number {
    return 2 * this.numLayers * this.maxLen * this.numKVHeads * this.headDim * (this.dtype === 'float16' ? 2 : 4);
  }

  /** Layer's whole K buffer [nKV, maxLen, hd] (positions >= length hold stale values); f16 bit patterns when dtype is float16. */
  keys(layer: number): Float32Array | Uint16Array {
    return this.ks[this.checkLayer(layer)]!;
  }

  /** Layer's whole V buffer [nKV, maxLen, hd]. */
  values(layer: number): Float32Array | Uint16Array {
    return this.vs[this.checkLayer(layer)]!;
  }

  /** Keys of one head at positions 0 .. L-1: a [L, hd] view, no copy. */
  headKeys(layer: number, head: number, L: number): Float32Array | Uint16Array {
    return this.headView(this.keys(layer), head, L);
  }

  /** Values of one head at positions 0 .. L-1: a [L, hd] view, no copy. */
  headValues(layer: number, head: number, L: number): Float32Array | Uint16Array {
    return this.headView(this.values(layer), head, L);
  }

  private headView<B extends Float32Array | Uint16Array>(buf: B, head: number, L: number): B {
    if (!Number.isInteger(head) || head < 0 || head >= this.numKVHeads) throw new Error(`KVCache: head ${head} out of range [0, ${this.numKVHeads})`);
    if (!Number.isInteger(L) || L < 0 || L > this.maxLen) throw new Error(`KVCache: ${L} positions exceed maxLen = ${this.maxLen}`);
    const at = head * this.maxLen * this.headDim;
    return buf.subarray(at, at + L * this.headDim) as B;
  }

  /** Throws unless T more positions fit; call before writing. */
  checkRoom(T: number): void {
    if (!Number.isInteger(T) || T < 0) throw new Error(`KVCache: token count must be a non-negative integer, got ${T}`);
    if (this.len + T > this.maxLen) {
      throw new Error(`KVCache: full: ${this.len} positions held, ${T} more do not fit in maxLen = ${this.maxLen} (reset it or create a larger cache)`);
    }
  }

  /** Stores T new tokens' k and v ([T, nKV, hd] each, row-major) of one layer at rows length .. length + T - 1. */
  write(layer: number, k: ArrayLike<number>, v: ArrayLike<number>, T: number): void {
    this.checkRoom(T);
    const row = this.numKVHeads * this.headDim;
    if (k.length !== T * row || v.length !== T * row) {
      throw new Error(`KVCache: layer ${layer}: k and v must hold T * nKV * headDim = ${T} * ${this.numKVHeads} * ${this.headDim} values, got ${k.length} and ${v.length}`);
    }
    const kb = this.keys(layer);
    const vb = this.values(layer);
    const hd = this.headDim;
    if (k instanceof Float32Array && v instanceof Float32Array) {
      // one kernel call per buffer (an element loop over ArrayLike cost ~25 us per layer and sequence)
      const write = kernel('kvWrite');
      write(k, kb, T, this.numKVHeads, hd, this.maxLen, this.len);
      write(v, vb, T, this.numKVHeads, hd, this.maxLen, this.len);
      return;
    }
    const half = this.dtype === 'float16';
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < this.numKVHeads; h++) {
        const src = t * row + h * hd;
        const dst = (h * this.maxLen + this.len + t) * hd;
        for (let i = 0; i < hd; i++) {
          kb[dst + i] = half ? floatToHalf(k[src + i]!) : k[src + i]!;
          vb[dst + i] = half ? floatToHalf(v[src + i]!) : v[src + i]!;
        }
      }
    }
  }

  /** Marks T written positions as filled (after every layer wrote them). */
  advance(T: number): void {
    this.checkRoom(T);
    this.len += T;
  }

  private checkLayer(layer: number): number {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.numLayers) throw new Error(`KVCache: layer ${layer} out of range [0, ${this.numLayers})`);
    return layer;
  }
}
