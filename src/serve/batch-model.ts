// The scheduler's model interface over MoEDecoder: a fixed pool of KV caches, one forward per sequence.

import type { MoEDecoder } from '../models/moe-decoder.js';
import type { KVCache } from '../nn/kv-cache.js';
import type { BatchEntry, BatchModel } from './scheduler.js';

/**
 * Runs each sequence of a step with its own forward and its own cache. Correct and bounded, but
 * not yet the MoE gain of batching: tokens of different requests routed to the same expert
 * should share one grouped GEMM, which needs a forward over several caches at once in MoEDecoder
 * (not there yet). decodeStep is the one place that changes when it is.
 */
export class PerSequenceBatchModel implements BatchModel {
  readonly vocabSize: number;
  readonly numSlots: number;
  readonly contextLength: number;
  private readonly caches: KVCache[];

  constructor(private readonly model: MoEDecoder, opts: { slots: number; contextLength?: number }) {
    const limit = model.config.maxPositionEmbeddings;
    const ctx = opts.contextLength ?? Math.min(limit, 4096);
    if (!(Number.isInteger(opts.slots) && opts.slots >= 1)) throw new Error(`serve: the number of KV slots (--max-batch) must be a positive integer, got ${opts.slots}`);
    if (!(Number.isInteger(ctx) && ctx >= 2)) throw new Error(`serve: the context (--ctx) must be an integer >= 2, got ${ctx}`);
    if (ctx > limit) throw new Error(`serve: --ctx ${ctx} exceeds the model's max_position_embeddings = ${limit}`);
    this.vocabSize = model.config.vocabSize;
    this.numSlots = opts.slots;
    this.contextLength = ctx;
    // allocated once, here: memory does not grow with load
    this.caches = Array.from({ length: opts.slots }, () => model.newCache(ctx));
  }

  /** Bytes of all KV caches together (fixed at construction). */
  cacheBytes(): number {
    return this.caches.reduce((s, c) => s + c.bytes(), 0);
  }

  decodeStep(batch: BatchEntry[]): Float32Array[] {
    const V = this.vocabSize;
    return batch.map(({ slot, ids }) => {
      const cache = this.caches[slot];
      if (!cache) throw new Error(`serve: slot ${slot} out of range [0, ${this.numSlots})`);
      const logits = this.model.forward(ids, cache);
      const T = ids.length;
      return (logits.data as Float32Array).slice((T - 1) * V, T * V);
    });
  }

  resetSlot(slot: number): void {
    const cache = this.caches[slot];
    if (!cache) throw new Error(`serve: slot ${slot} out of range [0, ${this.numSlots})`);
    cache.reset();
  }
}
