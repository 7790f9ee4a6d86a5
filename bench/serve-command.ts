// `moe bench serve`: the serving benchmark's flags and output (the runner is bench/serve.ts).

import { basename } from 'node:path';
import { rejectUnknown, type ParsedArgs } from '../src/cli/args.js';
import { loadLM } from '../src/models/load-lm.js';
import { loadTokenizer } from '../src/formats/hf/tokenizer.js';
import { dtypeFlag, DTYPE_HELP } from '../src/cli/generate-command.js';
import { benchServe, formatServeReport } from './serve.js';

export const BENCH_SERVE_HELP = `moe bench serve --model DIR|FILE.gguf [--clients 1,4,16] [--requests 32] [--max-new-tokens 32]
                [--prompt-tokens 32] [--rounds 3] [--prompts udhr|random] [--prefill-chunk 64] [--dtype T] [--json]

Starts the real server (moe serve) in this process on a free loopback port and drives it with
streaming HTTP clients: for each client count, --requests completions of exactly --max-new-tokens
tokens (greedy, end-of-sequence ignored), the clients sending their next request when the last
ends. Client counts are interleaved over --rounds rounds; tokens/s is the median over rounds.
Prompts are windows of --prompt-tokens ids of the UDHR's English text through the model's
tokenizer (or seeded random ids). Reports per client count: generated tokens/s, the speedup over
1 client, time to first token and time per output token (p50, p99), mean batch per step,
distinct experts per MoE layer per step, weight bytes read per generated token and the speedup
they allow, peak RSS, 429s and errors (anything but a complete 200 stream).
${DTYPE_HELP}
--json prints the report as one JSON object.`;

const OPTIONS = ['model', 'clients', 'requests', 'max-new-tokens', 'prompt-tokens', 'rounds', 'prompts', 'prefill-chunk', 'dtype', 'kv-dtype', 'json', 'help'];

export async function benchServeCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, OPTIONS, 'bench serve');
  const path = args.flags.get('model')?.[0];
  if (!path) throw new Error('bench serve: --model DIR|FILE.gguf is required');
  const int = (key: string): number | undefined => {
    const raw = args.flags.get(key)?.[0];
    if (raw === undefined) return undefined;
    const v = Number(raw);
    if (raw.trim() === '' || !Number.isInteger(v) || v < 1) throw new Error(`bench serve: --${key} ${raw}: expected an integer >= 1`);
    return v;
  };
  const rawClients = args.flags.get('clients')?.[0];
  const clients = rawClients?.split(',').map((v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < 1) throw new Error(`bench serve: --clients ${rawClients}: '${v}' is not a positive integer`);
    return n;
  });
  const prompts = args.flags.get('prompts')?.[0];
  if (prompts !== undefined && prompts !== 'udhr' && prompts !== 'random') throw new Error(`bench serve: --prompts ${prompts}: expected udhr or random`);
  const log = (l: string): void => { process.stderr.write(`${l}\n`); };
  const t0 = performance.now();
  const lm = await loadLM(path, dtypeFlag(args, 'bench serve'));
  if (!lm.tokenizerJson) throw new Error(`bench serve: ${path} has no tokenizer.json; the server needs one`);
  const tokenizer = loadTokenizer(lm.tokenizerJson, lm.tokenizerConfig ?? {});
  log(`loaded ${path} (${lm.model.config.family}, ${lm.dtype}) in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  const opt = <K extends string, V>(k: K, v: V | undefined): { [P in K]?: V } => (v === undefined ? {} : ({ [k]: v } as { [P in K]?: V }));
  const report = await benchServe(lm.model, tokenizer, basename(path.replace(/\/+$/, '')), {
    ...opt('clients', clients), ...opt('requests', int('requests')), ...opt('maxNewTokens', int('max-new-tokens')),
    ...opt('promptTokens', int('prompt-tokens')), ...opt('rounds', int('rounds')), ...opt('prompts', prompts as 'udhr' | 'random' | undefined),
    ...opt('prefillChunk', int('prefill-chunk')), log,
  });
  console.log(args.flags.has('json') ? JSON.stringify({ ...report, dtype: lm.dtype }) : formatServeReport(report));
  const errors = report.rows.reduce((s, r) => s + r.errors, 0);
  return errors > 0 ? 1 : 0;
}
