// Prometheus metrics of the server (prom-client, one registry per server): requests, tokens, queue, batch, TTFT, expert load.

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Scheduler, StepInfo } from './scheduler.js';

export type Outcome = 'stop' | 'length' | 'cancelled' | 'timeout' | 'error' | 'shutdown' | 'rejected_queue_full' | 'rejected_invalid';

export class ServeMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'endpoint' | 'outcome'>;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly batchSize: Histogram;
  readonly timeToFirstToken: Histogram;
  readonly expertTokens: Counter<'layer' | 'expert'>;

  constructor(scheduler: Scheduler) {
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
  }

  observeStep(info: StepInfo): void {
    if (info.batchSize > 0) this.batchSize.observe(info.batchSize);
  }

  /** A routing hook for MoEDecoder.onRouting: counts tokens per (layer, expert). */
  routingHook(): (layer: number, expertIndices: Int32Array) => void {
    const counts = new Map<number, number>();
    return (layer, expertIndices) => {
      counts.clear();
      for (const e of expertIndices) counts.set(e, (counts.get(e) ?? 0) + 1);
      const l = String(layer);
      for (const [e, n] of counts) this.expertTokens.inc({ layer: l, expert: String(e) }, n);
    };
  }
}
