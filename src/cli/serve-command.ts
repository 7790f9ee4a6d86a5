// `moe serve`: an OpenAI-compatible HTTP server for a MoE LM (continuous batching; see docs/serving.md).

import { basename } from 'node:path';
import { rejectUnknown, type ParsedArgs } from './args.js';
import { loadLM } from '../models/load-lm.js';
import { dtypeFlag, DTYPE_HELP, expertFlags, EXPERT_HELP } from './generate-command.js';
import { loadTokenizer } from '../formats/hf/tokenizer.js';
import { ModelServer } from '../serve/http.js';
import { DecoderExpertParallel } from '../parallel/decoder-experts.js';

export const SERVE_HELP = `moe serve --model DIR|FILE.gguf [--port 8000] [--host 127.0.0.1] [--max-batch 8] [--max-queue 64]
          [--ctx N] [--prefill-chunk 64] [--timeout SECONDS] [--grace SECONDS] [--name NAME] [--dtype T]
          [--expert-memory BYTES|FRACTION] [--expert-policy lru|lfu|pregate] [--expert-low-precision q4_0]
          [--expert-low-below F] [--expert-low-load background] [--expert-reader sync|thread] [--rare-threshold F] [--parallel-experts N]

Serves the model over HTTP with OpenAI's API: POST /v1/completions and /v1/chat/completions
(streaming with "stream": true), GET /v1/models, /health and /metrics (Prometheus).
  --max-batch N      sequences decoded together; N KV caches of --ctx positions are allocated
                     at start, so memory does not grow with load (default 8)
  --max-queue N      requests waiting for a free slot; beyond, 429 with Retry-After (default 64)
  --ctx N            positions per sequence, prompt + new tokens (default: the model's
                     max_position_embeddings, at most 4096)
  --prefill-chunk N  prompt tokens prefilled per step, so a long prompt does not stall the
                     others' decoding (default 64)
  --timeout S        a request still running after S seconds ends with a 504 (default 600)
  --grace S          on SIGTERM/SIGINT: refuse new requests, let running ones finish for S
                     seconds, end the rest, exit 0 (default 10)
  --name NAME        the model id clients name (default: the model's file or directory name)
  --rare-threshold F an expert is "rarely trained" when its share of its layer's training tokens
                     (config.json moe_ts.expert_token_counts) is below F / E (default 0.25);
                     /metrics counts tokens routed to such experts, and a request with
                     "moe_rare_experts": true gets usage.moe_rare_experts (docs/serving.md)
  --parallel-experts N  run each MoE layer's routed experts on N worker threads, E/N each, over
                     shared memory (docs/results/expert-parallel.md); f32/f16/bf16, q8_0 or q4_0
                     experts (not with --expert-memory); default 1 (no workers)
${DTYPE_HELP}
${EXPERT_HELP}
The URL is printed on stdout once the server listens (--port 0 picks a free port).`;

const OPTIONS = ['model', 'port', 'host', 'max-batch', 'max-queue', 'ctx', 'prefill-chunk', 'timeout', 'grace', 'name', 'dtype', 'kv-dtype', 'expert-memory', 'expert-policy', 'expert-low-precision', 'expert-low-below', 'expert-low-load', 'expert-reader', 'rare-threshold', 'parallel-experts', 'help'];

function intFlag(args: ParsedArgs, key: string, min: number): number | undefined {
  const raw = args.flags.get(key)?.[0];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isInteger(v) || v < min) throw new Error(`serve: --${key} ${raw}: expected an integer >= ${min}`);
  return v;
}

export async function serveCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, OPTIONS, 'serve');
  const path = args.flags.get('model')?.[0];
  if (!path) throw new Error('serve: --model DIR|FILE.gguf is required');
  const port = intFlag(args, 'port', 0) ?? 8000;
  if (port > 65535) throw new Error(`serve: --port ${port}: expected 0..65535`);
  const host = args.flags.get('host')?.[0] ?? '127.0.0.1';
  const maxBatch = intFlag(args, 'max-batch', 1) ?? 8;
  const maxQueue = intFlag(args, 'max-queue', 0) ?? 64;
  const ctx = intFlag(args, 'ctx', 2);
  const prefillChunk = intFlag(args, 'prefill-chunk', 1);
  const timeoutS = intFlag(args, 'timeout', 1) ?? 600;
  const graceS = intFlag(args, 'grace', 0) ?? 10;
  const rareRaw = args.flags.get('rare-threshold')?.[0];
  const rareThreshold = rareRaw === undefined ? undefined : Number(rareRaw);
  if (rareThreshold !== undefined && !(rareRaw!.trim() !== '' && rareThreshold > 0 && rareThreshold <= 1)) throw new Error(`serve: --rare-threshold ${rareRaw}: expected a number in (0, 1]`);

  const parallelExperts = intFlag(args, 'parallel-experts', 1) ?? 1;
  const lm = await loadLM(path, { ...dtypeFlag(args, 'serve'), ...expertFlags(args, 'serve') });
  for (const w of lm.warnings) process.stderr.write(`moe: ${w}\n`);
  // the routed experts move to worker threads (the workers are stopped after the server drains)
  const workers = parallelExperts > 1 ? DecoderExpertParallel.attach(lm.model, { workers: parallelExperts }) : null;
  if (workers) process.stderr.write(`moe serve: the routed experts of ${workers.ep.layers.length} MoE layers run on ${parallelExperts} worker threads\n`);
  if (!lm.tokenizerJson) throw new Error(`serve: ${path} has no tokenizer.json; the server needs one to turn text into ids`);
  const tokenizer = loadTokenizer(lm.tokenizerJson, lm.tokenizerConfig ?? {});
  const modelName = args.flags.get('name')?.[0] ?? basename(path.replace(/\/+$/, ''));
  const server = new ModelServer({
    model: lm.model, tokenizer, modelName, maxBatch, maxQueue, requestTimeoutMs: timeoutS * 1000,
    ...(ctx !== undefined ? { contextLength: ctx } : {}), ...(prefillChunk !== undefined ? { prefillChunk } : {}),
    ...(rareThreshold !== undefined ? { rareThreshold } : {}), expertCache: lm.expertCache,
  });
  if (server.rareNote) process.stderr.write(`moe serve: note: ${server.rareNote}\n`);
  const url = await server.listen(port, host);
  const kv = server.kvCacheBytes === null ? '' : `, KV caches ${(server.kvCacheBytes / 2 ** 20).toFixed(1)} MiB`;
  console.log(`moe serve: ${modelName} on ${url} (max batch ${maxBatch}, queue ${maxQueue}, context ${server.contextLength}${kv})`);

  // resolves when a signal has shut the server down
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`moe serve: ${sig}: no new requests; finishing in-flight ones (up to ${graceS} s)\n`);
      server.shutdown(graceS * 1000).then(() => workers?.close()).then(() => resolve(0), (e: Error) => { process.stderr.write(`moe serve: shutdown: ${e.message}\n`); resolve(1); });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
