// `moe bench serve`: the serving benchmark's flags and output (the runner is bench/serve.ts).

import { basename } from 'node:path';
import { rejectUnknown, type ParsedArgs } from '../src/cli/args.js';
import { loadLM } from '../src/models/load-lm.js';
import { loadTokenizer } from '../src/formats/hf/tokenizer.js';
import { dtypeFlag, DTYPE_HELP } from '../src/cli/generate-command.js';
import { benchServe, formatServeReport } from './serve.js';
import { readFileSync } from 'node:fs';
import { benchServeBudgets, formatServeBudgetReport, plotServeBudgets, type ServeBudgetReport } from './serve-budget.js';
import { EXPERT_POLICIES, type ExpertPolicy } from '../src/infer/expert-slots.js';

export const BENCH_SERVE_HELP = `moe bench serve --model DIR|FILE.gguf [--clients 1,4,16] [--requests 32] [--max-new-tokens 32]
                [--prompt-tokens 32] [--rounds 3] [--prompts udhr|random] [--prefill-chunk 64] [--dtype T] [--json]
       moe bench serve --model M --expert-memory 1,0.5,0.25,0.125 [--expert-policy lru,lfu,pregate] [--clients 1,8]
                [--rounds 2] [--plot DIR] ...

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
--json prints the report as one JSON object.

With --expert-memory (a list of fractions of all routed-expert bytes), the same client loop runs on
the model all resident and on one server per budget x --expert-policy (default lru,lfu,pregate;
experts beyond the budget stay in the model file), every configuration in turn in each of --rounds
rounds (default 2; every other round in reverse order). Per configuration and client count:
tokens/s and its share of all-resident, TTFT and TPOT p50/p99, the cache's hit rate and MB read
from the file per generated token.
Budgets the cache refuses (fewer slots than top-k) are listed. --plot DIR writes hit rate, tokens/s
and TTFT against the budget (SVG and PNG). --rows A.json,B.json prints (and plots) the rows of
sweeps saved with --json instead of measuring (each row keeps the all-resident ratio of its own run).`;

const OPTIONS = ['model', 'clients', 'requests', 'max-new-tokens', 'prompt-tokens', 'rounds', 'prompts', 'prefill-chunk', 'dtype', 'kv-dtype', 'json', 'help', 'expert-memory', 'expert-policy', 'plot', 'rows'];

export async function benchServeCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, OPTIONS, 'bench serve');
  const path = args.flags.get('model')?.[0];
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
  const opt = <K extends string, V>(k: K, v: V | undefined): { [P in K]?: V } => (v === undefined ? {} : ({ [k]: v } as { [P in K]?: V }));
  const saved = args.flags.get('rows')?.[0];
  if (saved !== undefined) {
    const reports = saved.split(',').map((f) => JSON.parse(readFileSync(f, 'utf8')) as ServeBudgetReport);
    const merged: ServeBudgetReport = {
      ...reports[0]!, rows: reports.flatMap((r) => r.rows), refused: reports.flatMap((r) => r.refused),
      loadBefore: reports[0]!.loadBefore, loadAfter: reports.at(-1)!.loadAfter, wallSec: reports.reduce((s, r) => s + r.wallSec, 0),
    };
    const plotDir = args.flags.get('plot')?.[0];
    if (plotDir) log(`plots: ${(await plotServeBudgets(plotDir, merged.rows)).join(', ')}`);
    console.log(args.flags.has('json') ? JSON.stringify(merged) : formatServeBudgetReport(merged));
    return 0;
  }
  if (!path) throw new Error('bench serve: --model DIR|FILE.gguf is required');
  const rawBudgets = args.flags.get('expert-memory')?.[0];
  for (const k of ['expert-policy', 'plot']) {
    if (rawBudgets === undefined && args.flags.has(k) && !args.flags.has('rows')) throw new Error(`bench serve: --${k} needs --expert-memory (the budgets to sweep)`);
  }
  if (rawBudgets !== undefined) {
    if (args.flags.has('dtype')) throw new Error('bench serve: --dtype does not combine with --expert-memory (offloaded experts are read as stored)');
    const budgets = rawBudgets.split(',').map((v) => {
      const x = v.trim().endsWith('%') ? Number(v.trim().slice(0, -1)) / 100 : Number(v);
      if (v.trim() === '' || !(x > 0 && x <= 1)) throw new Error(`bench serve: --expert-memory ${rawBudgets}: '${v}' is not a fraction in (0, 1] of the expert bytes (0.25 or 25%)`);
      return x;
    });
    const rawPolicies = args.flags.get('expert-policy')?.[0];
    const policies = (rawPolicies ?? EXPERT_POLICIES.join(',')).split(',').map((p) => {
      if (!(EXPERT_POLICIES as readonly string[]).includes(p)) throw new Error(`bench serve: --expert-policy ${rawPolicies}: unknown policy '${p}' (have ${EXPERT_POLICIES.join(', ')})`);
      return p as ExpertPolicy;
    });
    const report = await benchServeBudgets(path, {
      budgets, policies, ...opt('clients', clients ?? [1, 8]), ...opt('requests', int('requests')), ...opt('maxNewTokens', int('max-new-tokens')),
      ...opt('promptTokens', int('prompt-tokens')), ...opt('rounds', int('rounds')), ...opt('prompts', prompts as 'udhr' | 'random' | undefined),
      ...opt('prefillChunk', int('prefill-chunk')), log,
    });
    const plotDir = args.flags.get('plot')?.[0];
    if (plotDir) log(`plots: ${(await plotServeBudgets(plotDir, report.rows)).join(', ')}`);
    console.log(args.flags.has('json') ? JSON.stringify(report) : formatServeBudgetReport(report));
    return report.rows.some((r) => r.errors > 0) ? 1 : 0;
  }
  const t0 = performance.now();
  const lm = await loadLM(path, dtypeFlag(args, 'bench serve'));
  if (!lm.tokenizerJson) throw new Error(`bench serve: ${path} has no tokenizer.json; the server needs one`);
  const tokenizer = loadTokenizer(lm.tokenizerJson, lm.tokenizerConfig ?? {});
  log(`loaded ${path} (${lm.model.config.family}, ${lm.dtype}) in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  const report = await benchServe(lm.model, tokenizer, basename(path.replace(/\/+$/, '')), {
    ...opt('clients', clients), ...opt('requests', int('requests')), ...opt('maxNewTokens', int('max-new-tokens')),
    ...opt('promptTokens', int('prompt-tokens')), ...opt('rounds', int('rounds')), ...opt('prompts', prompts as 'udhr' | 'random' | undefined),
    ...opt('prefillChunk', int('prefill-chunk')), log,
  });
  console.log(args.flags.has('json') ? JSON.stringify({ ...report, dtype: lm.dtype }) : formatServeReport(report));
  const errors = report.rows.reduce((s, r) => s + r.errors, 0);
  return errors > 0 ? 1 : 0;
}
