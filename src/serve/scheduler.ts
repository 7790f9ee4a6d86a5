// Continuous-batching scheduler: bounded queue, fixed KV slot pool, chunked prefill, token-level join/leave. No HTTP.

import { Sampler, type SamplerOptions } from '../infer/sampler.js';
import { StopMatcher } from './stop.js';

/** One sequence's new ids for this step, run against the KV cache of its slot. */
export interface BatchEntry { slot: number; ids: Int32Array }

/**
 * What the scheduler needs of a model. Slots are KV caches preallocated once (numSlots of them,
 * each holding contextLength positions): memory is fixed whatever the load.
 */
export interface BatchModel {
  readonly vocabSize: number;
  readonly numSlots: number;
  /** Positions one slot holds (prompt + generated tokens). */
  readonly contextLength: number;
  /** Logits [vocabSize] after the last id of each entry, in the order of the batch. */
  decodeStep(batch: BatchEntry[]): Float32Array[];
  /** Empties a slot's cache for its next sequence. */
  resetSlot(slot: number): void;
}

/** Turns generated ids into text as they come (LoadedTokenizer.streamDecoder fits). */
export interface TextDecoder { push(id: number): string; flush(): string }

export interface SchedulerOptions {
  /** Sequences in the running batch at most (default: the model's slots; never more). */
  maxBatch?: number;
  /** Requests waiting for a slot at most; one more is refused as queue-full. */
  maxQueue: number;
  /** Prompt tokens prefilled per step, all prefilling sequences together (default 64). */
  prefillChunk?: number;
  /** Seconds a refused client is told to wait (Retry-After); default 1. */
  retryAfterSec?: number;
  /** Clock in ms (tests inject one); default performance.now. */
  now?: () => number;
}

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'timeout' | 'error' | 'shutdown';

export interface SequenceResult {
  reason: FinishReason;
  /** Which stop ended it when reason is 'stop': an end-of-sequence id or a stop string. */
  stoppedBy?: { eosId: number } | { stop: string };
  promptTokens: number;
  completionTokens: number;
  ids: number[];
  text: string;
  error?: string;
  /** ms from submission to the first generated token (null when none came). */
  timeToFirstTokenMs: number | null;
}

export interface SubmitRequest {
  promptIds: ArrayLike<number>;
  /** New tokens at most; prompt + maxTokens must fit the slot's context. */
  maxTokens: number;
  sampler?: SamplerOptions;
  /** Ids that end generation (not part of the output). */
  eosIds?: readonly number[];
  /** Strings that end generation (cut from the output); needs a text decoder. */
  stop?: readonly string[];
  /** Makes text from ids; without one the result's text stays ''. */
  textDecoder?: TextDecoder;
  /**
   * Called with each piece of output: the id just generated and the text now safe to show ('' while
   * held back); id -1 with the held-back text when the sequence ends. A throw ends the sequence.
   */
  onToken?: (id: number, text: string) => void;
  onFinish?: (result: SequenceResult) => void;
  /** Absolute time (scheduler clock, ms) after which the sequence ends with 'timeout'. */
  deadline?: number;
}

export type SubmitResult =
  | { ok: true; handle: SequenceHandle }
  | { ok: false; kind: 'queue-full'; retryAfterSec: number; message: string }
  | { ok: false; kind: 'invalid'; field: 'prompt' | 'max_tokens'; message: string }
  | { ok: false; kind: 'closed'; message: string };

export interface SequenceHandle {
  readonly id: number;
  /** Ends the sequence now ('cancelled'): leaves the queue or frees its slot. No-op once finished. */
  cancel(reason?: 'cancelled' | 'timeout' | 'shutdown'): void;
  readonly finished: boolean;
}

/** What one step did (for metrics and tests). */
export interface StepInfo {
  /** Sequences run in this step. */
  batchSize: number;
  prefillTokens: number;
  decodeTokens: number;
  /** Ids of the sequences that took part, and which of them were prefilling. */
  sequences: number[];
  prefilling: number[];
}

interface Seq {
  id: number;
  req: SubmitRequest;
  prompt: Int32Array;
  sampler: Sampler;
  eos: Set<number>;
  stop: StopMatcher;
  slot: number;
  /** Prompt tokens already in the cache. */
  prefilled: number;
  out: number[];
  submittedAt: number;
  firstTokenAt: number | null;
  done: boolean;
}

export class Scheduler {
  readonly maxBatch: number;
  readonly maxQueue: number;
  readonly prefillChunk: number;
  private readonly retryAfterSec: number;
  private readonly now: () => number;
  private readonly queue: Seq[] = [];
  private readonly running: Seq[] = [];
  private readonly freeSlots: number[];
  private nextId = 1;
  /** Errors thrown by onFinish callbacks (nothing else to end): kept for the engine to log. */
  readonly callbackErrors: string[] = [];
  private closed = false;

  constructor(readonly model: BatchModel, opts: SchedulerOptions) {
    const maxBatch = opts.maxBatch ?? model.numSlots;
    if (!(Number.isInteger(maxBatch) && maxBatch >= 1)) throw new Error(`scheduler: maxBatch must be a positive integer, got ${maxBatch}`);
    if (maxBatch > model.numSlots) throw new Error(`scheduler: maxBatch ${maxBatch} exceeds the model's ${model.numSlots} KV slots`);
    if (!(Number.isInteger(opts.maxQueue) && opts.maxQueue >= 0)) throw new Error(`scheduler: maxQueue must be a non-negative integer, got ${opts.maxQueue}`);
    const chunk = opts.prefillChunk ?? 64;
    if (!(Number.isInteger(chunk) && chunk >= 1)) throw new Error(`scheduler: prefillChunk must be a positive integer, got ${chunk}`);
    this.maxBatch = maxBatch;
    this.maxQueue = opts.maxQueue;
    this.prefillChunk = chunk;
    this.retryAfterSec = opts.retryAfterSec ?? 1;
    this.now = opts.now ?? (() => performance.now());
    // popped from the end: slot 0 is handed out first
    this.freeSlots = Array.from({ length: maxBatch }, (_, i) => maxBatch - 1 - i);
  }

  get queueDepth(): number { return this.queue.length; }
  get runningCount(): number { return this.running.length; }
  get freeSlotCount(): number { return this.freeSlots.length; }
  hasWork(): boolean { return this.running.length > 0 || this.queue.length > 0; }

  /** Refuses new submissions from now on (graceful shutdown); queued and running ones go on. */
  close(): void { this.closed = true; }

  /** Ends every queued and running sequence with the given reason. */
  cancelAll(reason: 'cancelled' | 'shutdown' = 'cancelled'): void {
    for (const s of [...this.queue, ...this.running]) this.finish(s, reason);
  }

  /** Ends every queued and running sequence with an error (the engine's last resort on a scheduler bug). */
  failAll(message: string): void {
    for (const s of [...this.queue, ...this.running]) this.finish(s, 'error', message);
  }

  /** Validates and queues a request; refuses it, typed, when the queue is full or it cannot fit. */
  submit(req: SubmitRequest): SubmitResult {
    if (this.closed) return { ok: false, kind: 'closed', message: 'the server is shutting down and takes no new requests' };
    const V = this.model.vocabSize;
    const ctx = this.model.contextLength;
    const prompt = Int32Array.from(req.promptIds);
    if (prompt.length === 0) return { ok: false, kind: 'invalid', field: 'prompt', message: 'the prompt is empty (give at least one token)' };
    for (let i = 0; i < prompt.length; i++) {
      const id = prompt[i]!;
      if (!(id >= 0 && id < V) || id !== req.promptIds[i]) return { ok: false, kind: 'invalid', field: 'prompt', message: `prompt token ${req.promptIds[i]} at position ${i} is outside the vocabulary [0, ${V})` };
    }
    if (prompt.length >= ctx) {
      return { ok: false, kind: 'invalid', field: 'prompt', message: `the prompt has ${prompt.length} tokens; this server's context is ${ctx} tokens, which must hold the prompt and at least one new token` };
    }
    if (!(Number.isInteger(req.maxTokens) && req.maxTokens >= 1)) return { ok: false, kind: 'invalid', field: 'max_tokens', message: `max_tokens must be a positive integer, got ${req.maxTokens}` };
    if (prompt.length + req.maxTokens > ctx) {
      return { ok: false, kind: 'invalid', field: 'max_tokens', message: `the prompt (${prompt.length} tokens) plus max_tokens (${req.maxTokens}) exceeds this server's context of ${ctx} tokens; ask for at most ${ctx - prompt.length}` };
    }
    if (req.stop?.length && !req.textDecoder) throw new Error('scheduler: stop strings need a textDecoder');
    const sampler = new Sampler(req.sampler ?? {}); // throws on bad options: the protocol layer validated them
    if (this.queue.length >= this.maxQueue && !(this.queue.length === 0 && this.freeSlots.length > 0)) {
      return { ok: false, kind: 'queue-full', retryAfterSec: this.retryAfterSec, message: `the queue is full (${this.maxQueue} waiting, ${this.running.length} running); retry after ${this.retryAfterSec} s` };
    }
    const s: Seq = {
      id: this.nextId++, req, prompt, sampler, eos: new Set(req.eosIds ?? []), stop: new StopMatcher(req.stop ?? []),
      slot: -1, prefilled: 0, out: [], submittedAt: this.now(), firstTokenAt: null, done: false,
    };
    this.queue.push(s);
    this.admit();
    const handle: SequenceHandle = {
      id: s.id,
      cancel: (reason = 'cancelled') => this.finish(s, reason),
      get finished() { return s.done; },
    };
    return { ok: true, handle };
  }

  /** Moves queued sequences into free slots, first come first served. */
  private admit(): void {
    while (this.queue.length > 0 && this.freeSlots.length > 0 && this.running.length < this.maxBatch) {
      const s = this.queue.shift()!;
      s.slot = this.freeSlots.pop()!;
      this.model.resetSlot(s.slot);
      this.running.push(s);
    }
  }

  /**
   * One engine step: every decoding sequence feeds its last token, prefilling ones feed their
   * next prompt chunk (prefillChunk tokens per step in total, first come first served), all in
   * one decodeStep. Finished sequences leave and queued ones take their slots before the next.
   */
  step(): StepInfo {
    const t = this.now();
    for (const s of [...this.running]) if (s.req.deadline !== undefined && t >= s.req.deadline) this.finish(s, 'timeout');
    for (const s of [...this.queue]) if (s.req.deadline !== undefined && t >= s.req.deadline) this.finish(s, 'timeout');
    this.admit();
    const batch: BatchEntry[] = [];
    const members: Seq[] = [];
    const info: StepInfo = { batchSize: 0, prefillTokens: 0, decodeTokens: 0, sequences: [], prefilling: [] };
    let budget = this.prefillChunk;
    for (const s of this.running) {
      if (s.prefilled < s.prompt.length) {
        if (budget === 0) continue;
        const n = Math.min(budget, s.prompt.length - s.prefilled);
        batch.push({ slot: s.slot, ids: s.prompt.subarray(s.prefilled, s.prefilled + n) });
        budget -= n;
        info.prefillTokens += n;
        info.prefilling.push(s.id);
      } else {
        batch.push({ slot: s.slot, ids: Int32Array.of(s.out[s.out.length - 1]!) });
        info.decodeTokens++;
      }
      members.push(s);
      info.sequences.push(s.id);
    }
    info.batchSize = batch.length;
    if (batch.length === 0) return info;
    let logits: Float32Array[];
    try {
      logits = this.model.decodeStep(batch);
      if (logits.length !== batch.length) throw new Error(`decodeStep returned ${logits.length} rows for ${batch.length} sequences`);
    } catch (e) {
      for (const s of members) this.finish(s, 'error', (e as Error).message);
      return info;
    }
    for (let i = 0; i < members.length; i++) {
      const s = members[i]!;
      if (s.done) continue; // a callback of an earlier member cancelled it
      if (s.prefilled < s.prompt.length) {
        s.prefilled += batch[i]!.ids.length;
        if (s.prefilled < s.prompt.length) continue; // mid-prompt chunk: its logits predict nothing wanted
      }
      this.emit(s, logits[i]!);
    }
    this.admit();
    return info;
  }

  private emit(s: Seq, logits: Float32Array): void {
    let id: number;
    try {
      if (logits.length !== this.model.vocabSize) throw new Error(`the model returned ${logits.length} logits, expected ${this.model.vocabSize}`);
      id = s.sampler.sample(logits);
    } catch (e) {
      this.finish(s, 'error', (e as Error).message);
      return;
    }
    if (s.firstTokenAt === null) s.firstTokenAt = this.now();
    if (s.eos.has(id)) {
      this.finish(s, 'stop', undefined, { eosId: id });
      return;
    }
    s.out.push(id);
    const piece = s.req.textDecoder ? s.req.textDecoder.push(id) : '';
    const { emit, stopped } = s.stop.push(piece);
    try {
      s.req.onToken?.(id, emit);
    } catch (e) {
      // a consumer that fails (e.g. a write to a dead socket) ends its own sequence, not the engine
      this.finish(s, 'error', `onToken: ${(e as Error).message}`);
      return;
    }
    if (s.done) return;
    if (stopped !== null) this.finish(s, 'stop', undefined, { stop: stopped });
    else if (s.out.length >= s.req.maxTokens) this.finish(s, 'length');
  }

  /** Ends a sequence once: out of the queue or the batch, slot back to the pool, onFinish told. */
  private finish(s: Seq, reason: FinishReason, error?: string, stoppedBy?: SequenceResult['stoppedBy']): void {
    if (s.done) return;
    s.done = true;
    const q = this.queue.indexOf(s);
    if (q >= 0) this.queue.splice(q, 1);
    const r = this.running.indexOf(s);
    if (r >= 0) {
      this.running.splice(r, 1);
      this.model.resetSlot(s.slot);
      this.freeSlots.push(s.slot);
      s.slot = -1;
    }
    // text held back as a possible stop-string prefix is output after all, unless a stop matched
    if (reason !== 'stop' || !stoppedBy || 'eosId' in stoppedBy) {
      const tail = s.stop.flush(s.req.textDecoder?.flush() ?? '');
      if (tail && reason !== 'error') {
        try { s.req.onToken?.(-1, tail); } catch { /* the sequence is ending anyway */ }
      }
    }
    const result: SequenceResult = {
      reason, promptTokens: s.prompt.length, completionTokens: s.out.length, ids: [...s.out], text: s.stop.text,
      timeToFirstTokenMs: s.firstTokenAt === null ? null : s.firstTokenAt - s.submittedAt,
    };
    if (stoppedBy) result.stoppedBy = stoppedBy;
    if (error !== undefined) result.error = error;
    try {
      s.req.onFinish?.(result);
    } catch (e) {
      this.callbackErrors.push(`onFinish of sequence ${s.id}: ${(e as Error).message}`);
    }
  }
}
