// `moe bench serve`: throughput and latency of `moe serve` under N concurrent streaming clients, over real HTTP.

import { loadavg } from 'node:os';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import type { LoadedTokenizer } from '../src/formats/hf/tokenizer.js';
import { weightBytes } from '../src/models/moe-decoder-weights.js';
import { ModelServer } from '../src/serve/http.js';
import type { ExpertCache } from '../src/infer/expert-cache.js';
import { Rng } from '../src/index.js';
import { formatTable, median } from './timing.js';

export interface ServeBenchOptions {
  /** Concurrent clients per configuration (default 1, 4, 16); the server's --max-batch is the largest. */
  clients?: number[];
  /** Requests per configuration and round, shared by its clients (default 32). */
  requests?: number;
  /** New tokens per request, exact: end-of-sequence is ignored (default 32). */
  maxNewTokens?: number;
  /** Prompt tokens per request (default 32). */
  promptTokens?: number;
  /** Rounds; each runs every client count once, in order (interleaved), and medians are over rounds (default 3). */
  rounds?: number;
  /** Prompt ids: windows of the UDHR's English text through the model's tokenizer, or random ids (default udhr). */
  prompts?: 'udhr' | 'random';
  prefillChunk?: number;
  /** The cache of a model loaded with an expert budget: each row then carries its hits, misses and bytes read (and the server's /metrics counts them). */
  expertCache?: ExpertCache | null;
  log?: (line: string) => void;
}

/** Expert-cache counters over one client count's requests (every round, warm-up excluded). */
export interface ServeCacheRow {
  hits: number;
  misses: number;
  hitRate: number;
  /** Expert bytes read from the model file per generated token (prefill reads included). */
  mbReadPerToken: number;
  /** Misses computed on the resident low-precision copies (HOBBIT), included in misses. */
  lowPrecision: number;
}

/** One client count, medians over rounds (latencies pooled over every request of every round). */
export interface ServeBenchRow {
  clients: number;
  tokensPerSec: number;
  /** tokensPerSec over the 1-client figure of the same run (null when 1 is not among the client counts). */
  speedup: number | null;
  /** Per round, to show the spread. */
  roundTokensPerSec: number[];
  /** The best round, and its ratio to 1 client's best: on a shared machine, others' load only ever slows a round down. */
  bestTokensPerSec: number;
  bestSpeedup: number | null;
  ttftMs: { p50: number; p99: number };
  /** Time per output token after the first: (last token - first token) / (tokens - 1), per request. */
  tpotMs: { p50: number; p99: number };
  requests: number;
  generatedTokens: number;
  /** Refused with 429 (retried after Retry-After): not errors. */
  rejected429: number;
  /** Anything else: a non-200 status, a stream error event, a missing [DONE] or usage, a short completion. */
  errors: number;
  firstError: string | null;
  /** Largest resident set sampled while this client count ran (MiB; server and clients share the process). */
  peakRssMiB: number;
  /** Mean sequences per model step, and distinct experts per MoE layer per step. */
  meanBatch: number;
  meanExpertsPerLayer: number;
  /** Weight bytes the steps read per generated token (every non-expert weight once per step, the distinct experts' bytes). */
  weightMBPerToken: number;
  /** weightMBPerToken of 1 client over this one: the speedup if every step were bound by reading weights. */
  bytesCeiling: number | null;
  /** Under an expert budget (opts.expertCache): the cache's counters over this client count; null all resident. */
  cache: ServeCacheRow | null;
}

export interface ServeBenchReport {
  model: string;
  prompts: 'udhr' | 'random';
  promptTokens: number;
  maxNewTokens: number;
  requests: number;
  rounds: number;
  prefillChunk: number;
  rows: ServeBenchRow[];
  /** 1-, 5- and 15-minute load averages before and after. */
  loadBefore: number[];
  loadAfter: number[];
  wallSec: number;
}

interface RequestResult { ok: boolean; status: number; tokens: number; ttftMs: number | null; tpotMs: number | null; error: string | null }

const quantile = (xs: number[], q: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
};

/** Prompt ids: consecutive windows of a text's ids (each request a different window), or seeded random ids. */
async function makePrompts(tok: LoadedTokenizer, vocab: number, kind: 'udhr' | 'random', n: number, len: number): Promise<number[][]> {
  if (kind === 'random') {
    const rng = new Rng(1234);
    // below 256: byte tokenizers' specials (BOS/EOS) sit above the bytes
    const hi = Math.min(vocab, 256);
    return Array.from({ length: n }, () => Array.from({ length: len }, () => rng.int(hi)));
  }
  const { loadUdhr } = await import('../src/data/text.js');
  const [eng] = await loadUdhr({ languages: ['eng'] });
  const ids = Array.from(tok.encode(eng!.text));
  if (ids.length < len + n) throw new Error(`bench serve: the UDHR text has ${ids.length} tokens, too few for ${n} prompts of ${len}`);
  const stride = Math.max(1, Math.floor((ids.length - len) / n));
  return Array.from({ length: n }, (_, i) => ids.slice(i * stride, i * stride + len));
}

/** One streamed completion: status, tokens (from the usage chunk), time to first text, time per later token. */
async function streamOne(url: string, prompt: number[], maxTokens: number): Promise<RequestResult> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, stream: true, ignore_eos: true, stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) return { ok: false, status: res.status, tokens: 0, ttftMs: null, tpotMs: null, error: `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}` };
  let first: number | null = null;
  let lastAt = t0;
  let tokens = -1;
  let done = false;
  let error: string | null = null;
  let buf = '';
  const dec = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    const now = performance.now();
    buf += dec.decode(chunk, { stream: true });
    for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = ev.startsWith('data: ') ? ev.slice(6) : null;
      if (data === '[DONE]') { done = true; continue; }
      if (data === null) { error = `not an SSE data event: ${ev.slice(0, 80)}`; continue; }
      const body = JSON.parse(data) as { error?: { message: string }; choices?: Array<{ text?: string }>; usage?: { completion_tokens: number } };
      if (body.error) error = body.error.message;
      if (body.usage) tokens = body.usage.completion_tokens;
      // the server sends one chunk per token, text '' while held back (a partial UTF-8 character)
      if (body.choices?.length) {
        if (first === null) first = now;
        lastAt = now;
      }
    }
  }
  if (!error && !done) error = 'the stream ended without [DONE]';
  if (!error && tokens !== maxTokens) error = `completion_tokens ${tokens}, asked for ${maxTokens}`;
  const ttftMs = first === null ? null : first - t0;
  const tpotMs = first !== null && tokens > 1 ? (lastAt - first) / (tokens - 1) : null;
  return { ok: error === null, status: 200, tokens: Math.max(tokens, 0), ttftMs, tpotMs, error };
}

/** Weight bytes of one step: every non-expert weight once, plus each distinct expert chosen in each MoE layer. */
function expertByteModel(model: MoEDecoder): { perStep: number; perExpert: number } {
  const experts = new Set<unknown>();
  let perExpert = 0;
  for (const layer of model.layers) {
    if (!layer.moe) continue;
    const ws = [layer.moe.w1, layer.moe.w3, layer.moe.w2];
    ws.forEach((w) => experts.add(w));
    perExpert = ws.reduce((s, w) => s + weightBytes(w), 0) / layer.moe.numExperts; // the same in every layer
  }
  let perStep = 0;
  for (const [, w] of model.namedWeights()) if (!experts.has(w) && w !== model.embed) perStep += weightBytes(w);
  if (model.lmHead === null) perStep += weightBytes(model.embed); // tied: the head reads the table
  return { perStep, perExpert };
}

/**
 * Starts the real server (ModelServer, fastify) in this process on a free loopback port and drives
 * it with fetch clients: for each client count, `requests` streamed completions of exactly
 * maxNewTokens tokens (greedy, end-of-sequence ignored), each client sending its next request when
 * the last one ends (closed loop). Client counts are interleaved over rounds, so slow drift of a
 * shared machine hits them alike; throughput is the median over rounds.
 */
export async function benchServe(model: MoEDecoder, tokenizer: LoadedTokenizer, name: string, opts: ServeBenchOptions = {}): Promise<ServeBenchReport> {
  const clients = opts.clients ?? [1, 4, 16];
  const requests = opts.requests ?? 32;
  const maxNewTokens = opts.maxNewTokens ?? 32;
  const promptTokens = opts.promptTokens ?? 32;
  const rounds = opts.rounds ?? 3;
  const kind = opts.prompts ?? 'udhr';
  const log = opts.log ?? (() => {});
  for (const c of clients) if (!(Number.isInteger(c) && c >= 1)) throw new Error(`bench serve: --clients: ${c} is not a positive integer`);
  for (const [k, v] of [['requests', requests], ['max-new-tokens', maxNewTokens], ['prompt-tokens', promptTokens], ['rounds', rounds]] as const) {
    if (!(Number.isInteger(v) && v >= 1)) throw new Error(`bench serve: --${k} must be a positive integer, got ${v}`);
  }
  const maxClients = Math.max(...clients);
  const prompts = await makePrompts(tokenizer, model.config.vocabSize, kind, Math.max(requests, maxClients), promptTokens);
  const ctx = promptTokens + maxNewTokens + 1;
  if (ctx > model.config.maxPositionEmbeddings) throw new Error(`bench serve: prompt + new tokens = ${ctx} exceed the model's ${model.config.maxPositionEmbeddings} positions`);
  const server = new ModelServer({
    model, tokenizer, modelName: name, maxBatch: maxClients, maxQueue: 2 * maxClients, contextLength: ctx,
    ...(opts.prefillChunk !== undefined ? { prefillChunk: opts.prefillChunk } : {}),
    ...(opts.expertCache ? { expertCache: opts.expertCache } : {}),
  });
  const cache = opts.expertCache ?? null;
  // count steps, their sequences and each MoE layer's distinct experts (beside the server's own routing metrics)
  let steps = 0;
  let stepSeqs = 0;
  let layerCalls = 0;
  let distinct = 0;
  const seen = new Uint8Array(model.config.numExperts);
  const serverHook = model.onRouting;
  model.onRouting = (layer, idx, w) => {
    serverHook?.(layer, idx, w);
    seen.fill(0);
    for (const e of idx) if (!seen[e]) { seen[e] = 1; distinct++; }
    layerCalls++;
  };
  const origStep = server.scheduler.step.bind(server.scheduler);
  server.scheduler.step = () => {
    const info = origStep();
    if (info.batchSize > 0) { steps++; stepSeqs += info.batchSize; }
    return info;
  };
  const bytes = expertByteModel(model);
  const url = await server.listen(0, '127.0.0.1');
  const loadBefore = loadavg();
  const t0 = performance.now();
  type Acc = { tps: number[]; ttft: number[]; tpot: number[]; n: number; tokens: number; r429: number; errors: number; firstError: string | null; rss: number; steps: number; seqs: number; layerCalls: number; distinct: number; sec: number; hits: number; misses: number; bytesRead: number; low: number };
  const acc = new Map<number, Acc>(clients.map((c) => [c, { tps: [], ttft: [], tpot: [], n: 0, tokens: 0, r429: 0, errors: 0, firstError: null, rss: 0, steps: 0, seqs: 0, layerCalls: 0, distinct: 0, sec: 0, hits: 0, misses: 0, bytesRead: 0, low: 0 }]));
  try {
    // warm-up: one request alone (first-call costs: code paths, page faults, huge pages)
    await streamOne(url, prompts[0]!, Math.min(maxNewTokens, 4));
    for (let round = 0; round < rounds; round++) {
      for (const c of clients) {
        const a = acc.get(c)!;
        let next = 0;
        let tokens = 0;
        let rss = process.memoryUsage.rss();
        const sampler = setInterval(() => { rss = Math.max(rss, process.memoryUsage.rss()); }, 50);
        const [s0, q0, l0, d0] = [steps, stepSeqs, layerCalls, distinct];
        const c0 = cache?.stats();
        const start = performance.now();
        await Promise.all(Array.from({ length: c }, async () => {
          for (let i = next++; i < requests; i = next++) {
            for (;;) {
              const r = await streamOne(url, prompts[i % prompts.length]!, maxNewTokens);
              if (r.status === 429) { a.r429++; await new Promise((res) => setTimeout(res, 50)); continue; }
              a.n++;
              tokens += r.tokens;
              if (r.ttftMs !== null) a.ttft.push(r.ttftMs);
              if (r.tpotMs !== null) a.tpot.push(r.tpotMs);
              if (!r.ok) { a.errors++; a.firstError ??= r.error; }
              break;
            }
          }
        }));
        const sec = (performance.now() - start) / 1000;
        clearInterval(sampler);
        rss = Math.max(rss, process.memoryUsage.rss());
        a.tps.push(tokens / sec);
        a.tokens += tokens;
        a.sec += sec;
        a.rss = Math.max(a.rss, rss);
        a.steps += steps - s0;
        a.seqs += stepSeqs - q0;
        a.layerCalls += layerCalls - l0;
        a.distinct += distinct - d0;
        if (cache && c0) {
          const c1 = cache.stats();
          a.hits += c1.hits - c0.hits;
          a.misses += c1.misses - c0.misses;
          a.bytesRead += c1.bytesLoaded - c0.bytesLoaded;
          a.low += c1.lowPrecision - c0.lowPrecision;
        }
        log(`round ${round + 1}/${rounds}, ${c} client(s): ${tokens} tokens in ${sec.toFixed(2)} s = ${(tokens / sec).toFixed(1)} tokens/s`);
      }
    }
  } finally {
    model.onRouting = serverHook;
    await server.shutdown(0);
  }
  const loadAfter = loadavg();
  const moeLayers = model.layers.filter((l) => l.moe).length;
  const rows: ServeBenchRow[] = clients.map((c) => {
    const a = acc.get(c)!;
    const meanExperts = a.layerCalls > 0 ? a.distinct / a.layerCalls : 0;
    const stepBytes = a.steps * bytes.perStep + (a.layerCalls > 0 ? (a.distinct / a.layerCalls) * moeLayers * a.steps * bytes.perExpert : 0);
    return {
      clients: c, tokensPerSec: median(a.tps), speedup: null, roundTokensPerSec: a.tps, bestTokensPerSec: Math.max(...a.tps), bestSpeedup: null,
      ttftMs: { p50: quantile(a.ttft, 0.5), p99: quantile(a.ttft, 0.99) }, tpotMs: { p50: quantile(a.tpot, 0.5), p99: quantile(a.tpot, 0.99) },
      requests: a.n, generatedTokens: a.tokens, rejected429: a.r429, errors: a.errors, firstError: a.firstError,
      peakRssMiB: a.rss / 2 ** 20, meanBatch: a.steps > 0 ? a.seqs / a.steps : 0, meanExpertsPerLayer: meanExperts,
      weightMBPerToken: a.tokens > 0 ? stepBytes / a.tokens / 1e6 : NaN, bytesCeiling: null,
      cache: cache === null ? null : {
        hits: a.hits, misses: a.misses, hitRate: a.hits + a.misses > 0 ? a.hits / (a.hits + a.misses) : NaN,
        mbReadPerToken: a.tokens > 0 ? a.bytesRead / a.tokens / 1e6 : NaN, lowPrecision: a.low,
      },
    };
  });
  const one = rows.find((r) => r.clients === 1);
  if (one) {
    for (const r of rows) {
      r.speedup = r.tokensPerSec / one.tokensPerSec;
      r.bestSpeedup = r.bestTokensPerSec / one.bestTokensPerSec;
      r.bytesCeiling = one.weightMBPerToken / r.weightMBPerToken;
    }
  }
  return {
    model: name, prompts: kind, promptTokens, maxNewTokens, requests, rounds, prefillChunk: server.scheduler.prefillChunk, rows,
    loadBefore, loadAfter, wallSec: (performance.now() - t0) / 1000,
  };
}

export function formatServeReport(r: ServeBenchReport): string {
  const f = (x: number | null, d = 1): string => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(d));
  const table = formatTable(
    ['clients', 'tokens/s', 'speedup', 'per round', 'best', 'speedup', 'TTFT p50 ms', 'p99', 'TPOT p50 ms', 'p99', 'batch', 'experts/layer', 'MB/token', 'bytes ceiling', 'peak RSS MiB', '429', 'errors'],
    r.rows.map((x) => [
      String(x.clients), f(x.tokensPerSec), x.speedup === null ? '-' : `${f(x.speedup, 2)}x`, x.roundTokensPerSec.map((v) => v.toFixed(0)).join('/'), f(x.bestTokensPerSec), x.bestSpeedup === null ? '-' : `${f(x.bestSpeedup, 2)}x`,
      f(x.ttftMs.p50, 0), f(x.ttftMs.p99, 0), f(x.tpotMs.p50, 1), f(x.tpotMs.p99, 1), f(x.meanBatch, 1), f(x.meanExpertsPerLayer, 1),
      f(x.weightMBPerToken, 1), x.bytesCeiling === null ? '-' : `${f(x.bytesCeiling, 2)}x`, f(x.peakRssMiB, 0), String(x.rejected429), String(x.errors),
    ]),
  );
  const errs = r.rows.filter((x) => x.firstError).map((x) => `  ${x.clients} clients, first error: ${x.firstError}`);
  return [
    `moe bench serve: ${r.model}, ${r.requests} streamed requests per client count and round, ${r.rounds} rounds interleaved, prompts ${r.promptTokens} tokens (${r.prompts}), ${r.maxNewTokens} new tokens each (greedy, EOS ignored), prefill chunk ${r.prefillChunk}`,
    '',
    table,
    '',
    'tokens/s: generated tokens over wall time, median of rounds (best: the fastest round); TTFT: request sent to its first token\'s chunk; TPOT: time per output token after the first.',
    'batch: sequences per model step; experts/layer: distinct experts one MoE layer reads per step; MB/token: weight bytes read per generated token;',
    'bytes ceiling: the speedup if every step were bound by reading weights (1 client\'s MB/token over this one\'s).',
    `load average before ${r.loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${r.loadAfter.map((x) => x.toFixed(2)).join(' ')}; ${r.wallSec.toFixed(0)} s`,
    ...errs,
  ].join('\n');
}
