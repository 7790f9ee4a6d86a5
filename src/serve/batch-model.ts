// The scheduler's model interface over MoEDecoder: a fixed pool of KV caches, one batched forward per step.

import type { MoEDecoder } from '../models/moe-decoder.js';
import type { KVCache } from '../nn/kv-cache.js';
import type { BatchEntry, BatchModel } from './scheduler.js';

/**
 * The KV slots of the server and the step over them. By default a step is one
 * MoEDecoder.forwardBatch over every sequence of the batch: embedding, dense products, router and
 * one grouped GEMM per expert projection run over all their rows together, so tokens of different
 * requests routed to the same expert share that expert's weight reads (the MoE gain of batching);
 * attention runs per sequence on its own cache. perSequence: true runs one forward per sequence
 * instead (the reference the batched step is compared with, and a baseline for benchmarks).
 */
export class DecoderBatchModel implements BatchModel {
  readonly vocabSize: number;
  readonly numSlots: number;
  readonly contextLength: number;
  readonly perSequence: boolean;
  private readonly caches: KVCache[];

  constructor(private readonly model: MoEDecoder, opts: { slots: number; contextLength?: number; perSequence?: boolean }) {
    const limit = model.config.maxPositionEmbeddings;
    const ctx = opts.contextLength ?? Math.min(limit, 4096);
    if (!(Number.isInteger(opts.slots) && opts.slots >= 1)) throw new Error(`serve: the number of KV slots (--max-batch) must be a positive integer, got ${opts.slots}`);
    if (!(Number.isInteger(ctx) && ctx >= 2)) throw new Error(`serve: the context (--ctx) must be an integer >= 2, got ${ctx}`);
    if (ctx > limit) throw new Error(`serve: --ctx ${ctx} exceeds the model's max_position_embeddings = ${limit}`);
    this.vocabSize = model.config.vocabSize;
    this.numSlots = opts.slots;
    this.contextLength = ctx;
    this.perSequence = opts.perSequence ?? false;
    // allocated once, here: memory does not grow with load
    this.caches = Array.from({ length: opts.slots }, () => model.newCache(ctx));
  }

  /** Bytes of all KV caches together (fixed at construction). */
  cacheBytes(): number {
    return this.caches.reduce((s, c) => s + c.bytes(), 0);
  }

  decodeStep(batch: BatchEntry[]): Float32Array[] {
    const V = this.vocabSize;
    const seqs = batch.map(({ slot, ids }) => ({ ids, cache: this.cache(slot) }));
    // only the last position's logits predict the next token: the batched step computes no others
    if (!this.perSequence) return this.model.forwardBatch(seqs, undefined, { lastOnly: true }).map((l) => l.data as Float32Array);
    const logits = seqs.map(({ ids, cache }) => this.model.forward(ids, cache));
    return logits.map((l, i) => {
      const T = batch[i]!.ids.length;
      return (l.data as Float32Array).slice((T - 1) * V, T * V);
    });
  }

  private cache(slot: number): KVCache {
    const cache = this.caches[slot];
    if (!cache) throw new Error(`serve: slot ${slot} out of range [0, ${this.numSlots})`);
    return cache;
  }

  resetSlot(slot: number): void {
    this.cache(slot).reset();
  }
}
