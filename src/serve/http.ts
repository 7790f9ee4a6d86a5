// The HTTP layer (fastify): OpenAI endpoints translated to the scheduler, SSE streaming, metrics, graceful shutdown.

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import type { MoEDecoder } from '../models/moe-decoder.js';
import type { LoadedTokenizer } from '../formats/hf/tokenizer.js';
import { Scheduler, type BatchModel, type SequenceResult, type SubmitRequest } from './scheduler.js';
import { DecoderBatchModel } from './batch-model.js';
import { EngineLoop } from './engine.js';
import { ServeMetrics, type Outcome } from './metrics.js';
import { RareExpertTracker } from './rare-tracking.js';
import { RareExperts, checkThreshold, rareShare, type RareTally } from '../infer/rare-experts.js';
import { expertTokenCountsOf } from '../models/expert-token-counts.js';
import type { ExpertCache } from '../infer/expert-cache.js';
import {
  ChatRequest, CompletionRequest, ProtocolError, checkSupported, chatBody, chatChunk, completionBody, completionChunk,
  messageText, parseRequest, sse, stopList, usage, usageChunk, type OpenAIFinish,
} from './protocol.js';

export interface ServerOptions {
  model: MoEDecoder;
  tokenizer: LoadedTokenizer;
  /** The id /v1/models lists and responses carry; a request naming another model gets 404. */
  modelName: string;
  /** Sequences decoded together, and KV slots preallocated (default 8). */
  maxBatch?: number;
  /** Requests waiting for a slot before 429 (default 64). */
  maxQueue?: number;
  /** Positions per KV slot (default: the model's max_position_embeddings, at most 4096). */
  contextLength?: number;
  prefillChunk?: number;
  /** A request still generating after this long ends with a timeout error (default 10 minutes). */
  requestTimeoutMs?: number;
  /** Largest request body in bytes (default 1 MiB): 413 beyond. */
  bodyLimit?: number;
  /** One forward per sequence instead of one batched forward per step (a baseline for benchmarks). */
  perSequence?: boolean;
  /** Replaces the model's step (tests wrap it). */
  batchModel?: BatchModel;
  /** An expert is rarely trained when its share of its layer's training tokens is below rareThreshold / E (default 0.25; see src/infer/rare-experts.ts). */
  rareThreshold?: number;
  /** The routed experts' cache of a model loaded with an expert budget: its hits and misses go to /metrics. */
  expertCache?: ExpertCache | null;
}

type Endpoint = 'completions' | 'chat';
const OPENAI_FINISH: Partial<Record<SequenceResult['reason'], OpenAIFinish>> = { stop: 'stop', length: 'length' };

/** A failed sequence as an HTTP error (the stream form carries the same body). */
function failure(r: SequenceResult): ProtocolError {
  if (r.reason === 'timeout') return new ProtocolError(504, 'the request ran past the server\'s request timeout', null, 'timeout', 'timeout');
  if (r.reason === 'shutdown') return new ProtocolError(503, 'the server shut down before the request finished', null, 'server_shutdown', 'shutdown');
  return new ProtocolError(500, `generation failed: ${r.error ?? r.reason}`, null, 'server_error');
}

export class ModelServer {
  readonly app: FastifyInstance;
  readonly scheduler: Scheduler;
  readonly engine: EngineLoop;
  readonly metrics: ServeMetrics;
  readonly contextLength: number;
  /** Bytes of the preallocated KV caches (null when a custom batchModel does not say). */
  readonly kvCacheBytes: number | null;
  private draining = false;
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly requestTimeoutMs: number;
  /** The model's rarely trained experts, from the training counts in its config.json; null without counts (see rareNote). */
  readonly rareExperts: RareExperts | null;
  /** Why rare-expert accounting is off (null when on). */
  readonly rareNote: string | null;
  private readonly rareTracker: RareExpertTracker | null;

  constructor(private readonly opts: ServerOptions) {
    const maxBatch = opts.maxBatch ?? 8;
    const ctxOpt = opts.contextLength === undefined ? {} : { contextLength: opts.contextLength };
    const inner = opts.batchModel ?? new DecoderBatchModel(opts.model, { slots: maxBatch, ...ctxOpt, perSequence: opts.perSequence ?? false });
    const c = opts.model.config;
    if (opts.rareThreshold !== undefined) checkThreshold(opts.rareThreshold, 'serve'); // checked with or without counts
    const counts = expertTokenCountsOf(opts.model);
    const rare = counts ? new RareExperts(counts, { numExperts: c.numExperts, topK: c.topK, ...(opts.rareThreshold !== undefined ? { threshold: opts.rareThreshold } : {}) }) : null;
    this.rareExperts = rare && rare.trackedLayers.length > 0 ? rare : null;
    this.rareNote = !counts
      ? 'the model records no per-expert training token counts (config.json moe_ts.expert_token_counts); rare-expert accounting is off'
      : this.rareExperts ? null : 'the model\'s recorded training token counts are all zero; rare-expert accounting is off';
    this.rareTracker = this.rareExperts ? new RareExpertTracker(inner, this.rareExperts) : null;
    const batchModel = this.rareTracker ?? inner;
    this.contextLength = batchModel.contextLength;
    this.kvCacheBytes = inner instanceof DecoderBatchModel ? inner.cacheBytes() : null;
    this.scheduler = new Scheduler(batchModel, { maxBatch, maxQueue: opts.maxQueue ?? 64, ...(opts.prefillChunk ? { prefillChunk: opts.prefillChunk } : {}) });
    this.metrics = new ServeMetrics(this.scheduler, { rare: this.rareExperts, expertCache: opts.expertCache ?? null });
    this.engine = new EngineLoop(this.scheduler, (info) => {
      this.rareTracker?.attribute(info.sequences);
      this.metrics.observeStep(info);
    });
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 600_000;
    opts.model.onRouting = this.metrics.routingHook(this.rareTracker?.hook);
    this.app = Fastify({ bodyLimit: opts.bodyLimit ?? 1 << 20, logger: false });
    this.routes();
  }

  /** Listens (port 0 = any free port); resolves to the base URL. */
  async listen(port = 8000, host = '127.0.0.1'): Promise<string> {
    await this.app.listen({ port, host });
    const addr = this.app.server.address();
    if (!addr || typeof addr === 'string') throw new Error('serve: the server has no TCP address');
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return `http://${h}:${addr.port}`;
  }

  /**
   * Stops taking requests (503), lets in-flight ones finish for up to graceMs, ends the rest
   * ('shutdown': streams get an error event, others a 503), then closes the listener.
   */
  async shutdown(graceMs = 10_000): Promise<void> {
    this.draining = true;
    this.scheduler.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.engine.idle(), new Promise<void>((r) => { timer = setTimeout(r, graceMs); })]);
    clearTimeout(timer);
    this.scheduler.cancelAll('shutdown');
    await this.app.close();
  }

  private routes(): void {
    const app = this.app;
    app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
      if (err instanceof ProtocolError) return reply.code(err.status).send(err.body());
      const status = err.statusCode ?? 500;
      let e: ProtocolError;
      if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_INVALID_JSON' || (status === 400 && err instanceof SyntaxError)) e = new ProtocolError(400, `the body is not valid JSON: ${err.message}`);
      else if (err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') e = new ProtocolError(400, 'the body is empty; send a JSON object');
      else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = new ProtocolError(413, `the body is larger than this server's limit of ${this.app.initialConfig.bodyLimit} bytes`);
      else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') e = new ProtocolError(415, 'send the body as Content-Type: application/json');
      else if (status < 500) e = new ProtocolError(status, err.message);
      else e = new ProtocolError(500, `internal error: ${err.message}`, null, 'server_error');
      return reply.code(e.status).send(e.body());
    });
    app.setNotFoundHandler((req, reply) => {
      reply.code(404).send(new ProtocolError(404, `no route ${req.method} ${req.url}`, null, 'not_found_error').body());
    });
    app.addHook('onRequest', async (req, reply) => {
      if (this.draining && req.url.startsWith('/v1/')) {
        reply.code(503).header('connection', 'close').send(new ProtocolError(503, 'the server is shutting down', null, 'server_shutdown').body());
      }
    });
    app.get('/health', async (_req, reply) => reply.code(this.draining ? 503 : 200).send({ status: this.draining ? 'draining' : 'ok' }));
    app.get('/metrics', async (_req, reply) => reply.type(this.metrics.registry.contentType).send(await this.metrics.registry.metrics()));
    app.get('/v1/models', async () => ({
      object: 'list',
      data: [{ id: this.opts.modelName, object: 'model', created: this.created, owned_by: 'moe-ts', max_model_len: this.contextLength }],
    }));
    app.post('/v1/completions', (req, reply) => this.handle('completions', req, reply));
    app.post('/v1/chat/completions', (req, reply) => this.handle('chat', req, reply));
  }

  /** Request -> prompt ids and scheduler options; throws ProtocolError naming the field. */
  private prepare(kind: Endpoint, body: unknown): { stream: boolean; includeUsage: boolean; rareExperts: boolean; promptIds: ArrayLike<number>; req: Omit<SubmitRequest, 'promptIds'>; maxField: string } {
    const tok = this.opts.tokenizer;
    const r = kind === 'chat' ? parseRequest(ChatRequest, body) : parseRequest(CompletionRequest, body);
    checkSupported(r);
    // OpenAI refuses stream_options on a request that does not stream
    if (r.stream_options && !r.stream) throw new ProtocolError(400, 'stream_options: only allowed when stream is true', 'stream_options');
    if (r.model !== undefined && r.model !== this.opts.modelName) {
      throw new ProtocolError(404, `model '${r.model}' is not served here (this server serves '${this.opts.modelName}')`, 'model', 'invalid_request_error', 'model_not_found');
    }
    let promptIds: ArrayLike<number>;
    let maxTokens: number | null | undefined = r.max_tokens;
    let maxField = 'max_tokens';
    if (kind === 'chat') {
      const c = r as ChatRequest;
      if (!tok.hasChatTemplate) throw new ProtocolError(400, 'this model\'s tokenizer_config.json has no chat_template; use /v1/completions', 'messages');
      let text: string;
      try {
        text = tok.applyChatTemplate(c.messages.map((m) => ({ role: m.role, content: messageText(m.content) })), { addGenerationPrompt: true });
      } catch (e) {
        throw new ProtocolError(400, `the chat template failed on these messages: ${(e as Error).message}`, 'messages');
      }
      promptIds = tok.encode(text);
      if (c.max_completion_tokens !== undefined && c.max_completion_tokens !== null) { maxTokens = c.max_completion_tokens; maxField = 'max_completion_tokens'; }
    } else {
      const p = (r as CompletionRequest).prompt;
      promptIds = typeof p === 'string' ? tok.encode(p, { addSpecialTokens: true }) : p;
      if (promptIds.length === 0 && tok.bosId !== null) promptIds = [tok.bosId];
    }
    const room = this.contextLength - promptIds.length;
    // OpenAI's defaults: 16 new tokens for completions, up to the context for chat
    const max = maxTokens ?? (kind === 'chat' ? Math.max(room, 1) : Math.max(Math.min(16, room), 1));
    const stop = stopList(r.stop);
    const sampler = {
      temperature: r.temperature ?? 1,
      topP: r.top_p ?? 1,
      topK: r.top_k !== undefined && r.top_k !== null && r.top_k > 0 ? r.top_k : 0,
      seed: r.seed ?? Math.floor(Math.random() * 2 ** 31),
    };
    return {
      stream: r.stream ?? false, includeUsage: r.stream_options?.include_usage ?? false, rareExperts: r.moe_rare_experts ?? false, promptIds, maxField,
      req: { maxTokens: max, sampler, eosIds: r.ignore_eos ? [] : tok.eosIds, stop, textDecoder: tok.streamDecoder({ skipSpecialTokens: true }), deadline: performance.now() + this.requestTimeoutMs },
    };
  }

  private async handle(kind: Endpoint, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const count = (outcome: Outcome) => this.metrics.requests.inc({ endpoint: kind, outcome });
    let prep: ReturnType<ModelServer['prepare']>;
    try {
      prep = this.prepare(kind, request.body);
    } catch (e) {
      if (e instanceof ProtocolError) count('rejected_invalid');
      throw e;
    }
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.opts.modelName;
    const raw = reply.raw;
    let onToken: ((id: number, text: string) => void) | undefined;
    let finished!: Promise<SequenceResult>;
    let resolveFinish!: (r: SequenceResult) => void;
    finished = new Promise((r) => { resolveFinish = r; });
    const onFinish = (r: SequenceResult) => {
      count(r.reason);
      this.metrics.promptTokens.inc(r.promptTokens);
      this.metrics.generationTokens.inc(r.completionTokens);
      if (r.timeToFirstTokenMs !== null) this.metrics.timeToFirstToken.observe(r.timeToFirstTokenMs / 1000);
      resolveFinish(r);
    };
    if (prep.stream) {
      // one chunk per generated token, its text '' while held back (a partial UTF-8 character, a
      // possible stop prefix), as vLLM does: clients see progress and time to first token
      onToken = (tokenId, text) => {
        if ((tokenId < 0 && text.length === 0) || raw.writableEnded) return;
        raw.write(sse(kind === 'chat' ? chatChunk(id, created, model, { content: text }, null) : completionChunk(id, created, model, text, null)));
      };
    }
    const sub = this.scheduler.submit({ ...prep.req, promptIds: prep.promptIds, ...(onToken ? { onToken } : {}), onFinish });
    if (!sub.ok) {
      if (sub.kind === 'queue-full') {
        count('rejected_queue_full');
        reply.header('retry-after', String(sub.retryAfterSec));
        throw new ProtocolError(429, sub.message, null, 'rate_limit_error', 'queue_full');
      }
      if (sub.kind === 'closed') throw new ProtocolError(503, sub.message, null, 'server_shutdown');
      count('rejected_invalid');
      throw new ProtocolError(400, sub.message, sub.field === 'max_tokens' ? prep.maxField : (kind === 'chat' ? 'messages' : 'prompt'));
    }
    this.engine.kick();
    // the client went away: free its slot now rather than generate for nobody
    raw.on('close', () => { if (!raw.writableFinished) sub.handle.cancel(); });

    if (prep.stream) {
      reply.hijack();
      raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      if (kind === 'chat') raw.write(sse(chatChunk(id, created, model, { role: 'assistant', content: '' }, null)));
      const r = await finished;
      const rare = this.rareField(sub.handle.id, prep.rareExperts);
      if (raw.writableEnded || raw.destroyed) return;
      const finish = OPENAI_FINISH[r.reason];
      if (finish) {
        raw.write(sse(kind === 'chat' ? chatChunk(id, created, model, {}, finish) : completionChunk(id, created, model, '', finish)));
      } else {
        raw.write(sse(failure(r).body()));
      }
      // asking for moe_rare_experts brings the usage chunk that carries it
      if (prep.includeUsage || rare) raw.write(sse(usageChunk(kind, id, created, model, { ...usage(r.promptTokens, r.completionTokens), ...rare })));
      raw.end(sse('[DONE]'));
      return;
    }
    const r = await finished;
    const rare = this.rareField(sub.handle.id, prep.rareExperts);
    const finish = OPENAI_FINISH[r.reason];
    if (!finish) {
      if (r.reason === 'cancelled') { reply.hijack(); return; } // nobody is listening
      throw failure(r);
    }
    const u = { ...usage(r.promptTokens, r.completionTokens), ...rare };
    reply.send(kind === 'chat' ? chatBody(id, created, model, r.text, finish, u) : completionBody(id, created, model, r.text, finish, u));
  }

  /**
   * A finished sequence's rare-expert tally: observed in /metrics, and returned as the usage
   * extension { moe_rare_experts } when the request asked for it (else undefined, so a plain
   * OpenAI response stays plain).
   */
  private rareField(sequenceId: number, asked: boolean): { moe_rare_experts: object } | undefined {
    const t: RareTally | null = this.rareTracker ? this.rareTracker.take(sequenceId) : null;
    if (t) this.metrics.observeRare(t);
    if (!asked) return undefined;
    if (!t || !this.rareExperts) return { moe_rare_experts: { available: false, reason: this.rareNote } };
    return {
      moe_rare_experts: {
        available: true, threshold: this.rareExperts.threshold, tokens: t.tokens, rare_tokens: t.rareTokens,
        routed_tokens: t.routed, rare_routed_tokens: t.rareRouted, rare_share: rareShare(t),
      },
    };
  }
}
