// Prometheus metrics of the server (prom-client, one registry per server): requests, tokens, queue, batch, TTFT, expert load, rare experts, expert cache.

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Scheduler, StepInfo } from './scheduler.js';
import type { RoutingHook } from '../models/moe-decoder.js';
import { rareShare, type RareExperts, type RareTally } from '../infer/rare-experts.js';
import type { ExpertCache, LayerCacheStats } from '../infer/expert-cache.js';

export type Outcome = 'stop' | 'length' | 'cancelled' | 'timeout' | 'error' | 'shutdown' | 'rejected_queue_full' | 'rejected_invalid';

export interface MetricsOptions {
  /** The model's rarely trained experts; null when it has no recorded training counts (no rare-expert metrics then). */
  rare?: RareExperts | null;
  /** The routed experts' cache under --expert-memory; null when every expert is resident (no cache metrics then). */
  expertCache?: ExpertCache | null;
}

export class ServeMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'endpoint' | 'outcome'>;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly batchSize: Histogram;
  readonly timeToFirstToken: Histogram;
  readonly expertTokens: Counter<'layer' | 'expert'>;
  /** Present only when the model has recorded training counts. */
  readonly rareRouted: Counter<'layer'> | null = null;
  readonly rareTokens: Counter | null = null;
  readonly rareTrackedTokens: Counter | null = null;
  readonly requestRareShare: Histogram | null = null;
  private readonly rare: RareExperts | null;

  constructor(scheduler: Scheduler, opts: MetricsOptions = {}) {
    const registers = [this.registry];
    this.requests = new Counter({ name: 'moe_requests_total', help: 'Requests by endpoint and how they ended', labelNames: ['endpoint', 'outcome'], registers });
    this.promptTokens = new Counter({ name: 'moe_prompt_tokens_total', help: 'Prompt tokens of finished requests', registers });
    this.generationTokens = new Counter({ name: 'moe_generation_tokens_total', help: 'Tokens generated', registers });
    new Gauge({ name: 'moe_queue_depth', help: 'Requests waiting for a KV slot', registers, collect() { this.set(scheduler.queueDepth); } });
    new Gauge({ name: 'moe_running_sequences', help: 'Sequences in the running batch', registers, collect() { this.set(scheduler.runningCount); } });
    new Gauge({ name: 'moe_free_kv_slots', help: 'KV cache slots not in use', registers, collect() { this.set(scheduler.freeSlotCount); } });
    this.batchSize = new Histogram({ name: 'moe_batch_size', help: 'Sequences per engine step', buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers });
    this.timeToFirstToken = new Histogram({
      name: 'moe_time_to_first_token_seconds', help: 'From submission to the first generated token',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers,
    });
    this.expertTokens = new Counter({ name: 'moe_expert_tokens_total', help: 'Tokens routed to each expert of each MoE layer (prefill and decode)', labelNames: ['layer', 'expert'], registers });

    const rare = opts.rare ?? null;
    this.rare = rare;
    if (rare) {
      const def = `an expert whose share of its layer's training tokens is below ${rare.threshold} / E`;
      const g = new Gauge({ name: 'moe_rare_experts', help: `Rarely trained experts per MoE layer (${def})`, labelNames: ['layer'], registers });
      for (const l of rare.trackedLayers) g.set({ layer: String(l) }, rare.rareCount(l));
      this.rareRouted = new Counter({ name: 'moe_rare_expert_routed_tokens_total', help: `Routed tokens (token, layer, chosen expert) that went to a rarely trained expert (${def}); divide by moe_expert_tokens_total of the layer for the share`, labelNames: ['layer'], registers });
      this.rareTokens = new Counter({ name: 'moe_rare_expert_tokens_total', help: 'Tokens of finished requests routed to a rarely trained expert in at least one MoE layer', registers });
      this.rareTrackedTokens = new Counter({ name: 'moe_rare_expert_tracked_tokens_total', help: 'Tokens of finished requests run through the model (the denominator of moe_rare_expert_tokens_total)', registers });
      this.requestRareShare = new Histogram({
        name: 'moe_request_rare_expert_share', help: 'Per finished request: the share of its routed tokens that went to rarely trained experts',
        buckets: [0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1], registers,
      });
    }

    const cache = opts.expertCache ?? null;
    if (cache) {
      // the cache keeps its own cumulative counts (a benchmark may reset them): the counters add what is new since the last scrape
      const seen = new Map<string, number>();
      const follow = (name: string, help: string, key: keyof LayerCacheStats): void => {
        new Counter({
          name, help, labelNames: ['layer'], registers,
          collect() {
            for (const s of cache.stats().layers) {
              const id = `${key}:${s.layer}`;
              const v = s[key];
              const last = seen.get(id) ?? 0;
              const add = v >= last ? v - last : v; // went down: the stats were reset, all of v is new
              if (add > 0) this.inc({ layer: String(s.layer) }, add);
              else this.inc({ layer: String(s.layer) }, 0); // the series exists from the first scrape on
              seen.set(id, v);
            }
          },
        });
      };
      follow('moe_expert_cache_hits_total', 'Expert uses served from a resident slot, per MoE layer (--expert-memory)', 'hits');
      follow('moe_expert_cache_misses_total', 'Expert uses that read the expert from the model file, per MoE layer (--expert-memory)', 'misses');
      follow('moe_expert_cache_prefetched_total', 'Experts loaded ahead by pre-gating, per MoE layer', 'prefetched');
      follow('moe_expert_cache_loaded_bytes_total', 'Bytes read from the model file into expert slots, per MoE layer', 'bytesLoaded');
      new Gauge({ name: 'moe_expert_cache_resident_bytes', help: 'Bytes of the expert slots and low-precision copies (the budget in use)', registers, collect() { this.set(cache.residentBytes); } });
      if (cache.lowPrecision) {
        follow('moe_expert_cache_low_precision_total', 'Misses computed on the resident low-precision copy instead of loading the expert, per MoE layer (--expert-low-precision; included in misses)', 'lowPrecision');
        new Gauge({ name: 'moe_expert_cache_low_precision_bytes', help: 'Bytes of the resident low-precision copies of every expert (part of the resident bytes)', registers, collect() { this.set(cache.lowPrecisionBytes); } });
      }
    }
  }

  observeStep(info: StepInfo): void {
    if (info.batchSize > 0) this.batchSize.observe(info.batchSize);
  }

  /** A finished request's rare-expert tally (no-op without counts). */
  observeRare(t: RareTally): void {
    if (!this.rare || t.tokens === 0) return;
    this.rareTokens!.inc(t.rareTokens);
    this.rareTrackedTokens!.inc(t.tokens);
    this.requestRareShare!.observe(rareShare(t));
  }

  /** A routing hook for MoEDecoder.onRouting: counts tokens per (layer, expert) and, with counts, those that reach rare experts; then calls next. */
  routingHook(next?: RoutingHook): RoutingHook {
    const counts = new Map<number, number>();
    const rare = this.rare;
    return (layer, expertIndices, expertWeights) => {
      counts.clear();
      for (const e of expertIndices) counts.set(e, (counts.get(e) ?? 0) + 1);
      const l = String(layer);
      let rareN = 0;
      for (const [e, n] of counts) {
        this.expertTokens.inc({ layer: l, expert: String(e) }, n);
        if (rare?.isRare(layer, e)) rareN += n;
      }
      if (rare && rare.rare[layer]) this.rareRouted!.inc({ layer: l }, rareN);
      next?.(layer, expertIndices, expertWeights);
    };
  }
}
