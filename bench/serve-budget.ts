// `moe bench serve --expert-memory ...`: the real server under an expert budget: hit rate, tokens/s and time to first token per budget, policy and client count.

import { loadavg } from 'node:os';
import { basename, join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { loadLM, type LoadedLM } from '../src/models/load-lm.js';
import { loadTokenizer } from '../src/formats/hf/tokenizer.js';
import type { ExpertPolicy } from '../src/infer/expert-slots.js';
import { lineChart, writePlot } from '../src/report/plot.js';
import { benchServe, type ServeBenchOptions, type ServeBenchRow } from './serve.js';
import { formatTable, median } from './timing.js';

export interface ServeBudgetOptions extends Omit<ServeBenchOptions, 'rounds' | 'expertCache' | 'log'> {
  /** Fractions of all routed-expert bytes (1 = every expert in a slot, still through the cache). */
  budgets: number[];
  policies: ExpertPolicy[];
  /** Rounds over all configurations, all resident first and then in reverse order, alternately, so a shared machine's drift hits them alike (default 2). */
  rounds?: number;
  log?: (line: string) => void;
}

/** One configuration x client count; tokens/s and latencies pooled as in `moe bench serve`. */
export interface ServeBudgetRow {
  /** null: every expert resident, no cache (the reference). */
  budget: number | null;
  policy: ExpertPolicy | null;
  slotsPerLayer: number;
  clients: number;
  /** Median over rounds of this configuration's tokens/s. */
  tokensPerSec: number;
  roundTokensPerSec: number[];
  /** tokensPerSec over the all-resident figure of the same client count (median over rounds), null for the reference itself. */
  ofResident: number | null;
  ttftMs: { p50: number; p99: number };
  tpotMs: { p50: number; p99: number };
  hitRate: number | null;
  mbReadPerToken: number | null;
  peakRssMiB: number;
  errors: number;
  rejected429: number;
  firstError: string | null;
}

export interface ServeBudgetReport {
  model: string;
  rows: ServeBudgetRow[];
  /** Budgets the cache refused (below top-k experts per layer, ...), with its reason. */
  refused: Array<{ budget: number; policy: ExpertPolicy; reason: string }>;
  rounds: number;
  requests: number;
  promptTokens: number;
  maxNewTokens: number;
  clients: number[];
  loadBefore: number[];
  loadAfter: number[];
  wallSec: number;
}

interface Config { budget: number | null; policy: ExpertPolicy | null; lm: LoadedLM; rows: ServeBenchRow[][] }

/**
 * Loads the model once all resident and once per budget x policy (experts beyond the budget stay in
 * the file), then for each round runs `moe bench serve`'s client loop (benchServe: the real fastify
 * server on loopback, streaming clients) on every configuration in turn. Hit rates and bytes read
 * come from the cache's counters over each client count's requests.
 */
export async function benchServeBudgets(path: string, opts: ServeBudgetOptions): Promise<ServeBudgetReport> {
  const rounds = opts.rounds ?? 2;
  const log = opts.log ?? (() => {});
  if (opts.budgets.length === 0 || opts.policies.length === 0) throw new Error('bench serve: --expert-memory and --expert-policy need at least one value each');
  for (const b of opts.budgets) if (!(b > 0 && b <= 1)) throw new Error(`bench serve: --expert-memory ${b}: the sweep takes fractions in (0, 1] of the experts' bytes`);
  if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error(`bench serve: --rounds must be a positive integer, got ${rounds}`);
  const t0 = performance.now();
  const base = await loadLM(path);
  if (!base.tokenizerJson) throw new Error(`bench serve: ${path} has no tokenizer.json; the server needs one`);
  const tokenizer = loadTokenizer(base.tokenizerJson, base.tokenizerConfig ?? {});
  const configs: Config[] = [{ budget: null, policy: null, lm: base, rows: [] }];
  const refused: ServeBudgetReport['refused'] = [];
  for (const budget of opts.budgets) {
    for (const policy of opts.policies) {
      try {
        configs.push({ budget, policy, lm: await loadLM(path, { expertMemory: budget, expertPolicy: policy }), rows: [] });
      } catch (e) {
        refused.push({ budget, policy, reason: (e as Error).message });
        log(`budget ${budget} ${policy}: refused: ${(e as Error).message}`);
      }
    }
  }
  const name = basename(path.replace(/\/+$/, ''));
  const loadBefore = loadavg();
  const { budgets: _b, policies: _p, rounds: _r, log: _l, ...serveOpts } = opts;
  try {
    for (let round = 0; round < rounds; round++) {
      // odd rounds run the configurations in reverse (A B C, C B A, ...): a machine whose load drifts during the run then tilts no configuration's median
      for (const c of round % 2 === 0 ? configs : [...configs].reverse()) {
        const r = await benchServe(c.lm.model, tokenizer, name, { ...serveOpts, rounds: 1, expertCache: c.lm.expertCache });
        c.rows.push(r.rows);
        const what = c.budget === null ? 'all resident' : `budget ${c.budget} ${c.policy}`;
        log(`round ${round + 1}/${rounds}, ${what}: ${r.rows.map((x) => `${x.clients} client(s) ${x.tokensPerSec.toFixed(1)} tokens/s, TTFT p50 ${x.ttftMs.p50.toFixed(0)} ms${x.cache ? `, hit rate ${(100 * x.cache.hitRate).toFixed(1)}%` : ''}`).join('; ')} (load ${loadavg()[0]!.toFixed(2)})`);
      }
    }
  } finally {
    for (const c of configs) c.lm.expertCache?.close();
  }
  const clients = configs[0]!.rows[0]!.map((r) => r.clients);
  const pooled = (xs: ServeBenchRow[]): Omit<ServeBudgetRow, 'budget' | 'policy' | 'slotsPerLayer' | 'clients' | 'ofResident'> => {
    const sum = (f: (r: ServeBenchRow) => number): number => xs.reduce((s, r) => s + f(r), 0);
    const hits = sum((r) => r.cache?.hits ?? 0);
    const misses = sum((r) => r.cache?.misses ?? 0);
    const tokens = sum((r) => r.generatedTokens);
    const withCache = xs[0]!.cache !== null;
    // latencies: the median of the rounds' quantiles (each round's p50/p99 is over its own requests)
    return {
      tokensPerSec: median(xs.map((r) => r.tokensPerSec)), roundTokensPerSec: xs.map((r) => r.tokensPerSec),
      ttftMs: { p50: median(xs.map((r) => r.ttftMs.p50)), p99: median(xs.map((r) => r.ttftMs.p99)) },
      tpotMs: { p50: median(xs.map((r) => r.tpotMs.p50)), p99: median(xs.map((r) => r.tpotMs.p99)) },
      hitRate: withCache && hits + misses > 0 ? hits / (hits + misses) : null,
      mbReadPerToken: withCache && tokens > 0 ? sum((r) => (r.cache?.mbReadPerToken ?? 0) * r.generatedTokens) / tokens : null,
      peakRssMiB: Math.max(...xs.map((r) => r.peakRssMiB)), errors: sum((r) => r.errors), rejected429: sum((r) => r.rejected429),
      firstError: xs.find((r) => r.firstError)?.firstError ?? null,
    };
  };
  const E = base.model.config.numExperts;
  const rows: ServeBudgetRow[] = [];
  for (const c of configs) {
    clients.forEach((n, j) => {
      const p = pooled(c.rows.map((round) => round[j]!));
      const ref = rows.find((r) => r.budget === null && r.clients === n);
      rows.push({
        budget: c.budget, policy: c.policy, slotsPerLayer: c.lm.expertCache?.layers[0]?.pool.numSlots ?? E, clients: n, ...p,
        ofResident: ref ? p.tokensPerSec / ref.tokensPerSec : null,
      });
    });
  }
  return {
    model: name, rows, refused, rounds, requests: opts.requests ?? 32, promptTokens: opts.promptTokens ?? 32, maxNewTokens: opts.maxNewTokens ?? 32,
    clients, loadBefore, loadAfter: loadavg(), wallSec: (performance.now() - t0) / 1000,
  };
}

export function formatServeBudgetReport(r: ServeBudgetReport): string {
  const f = (x: number | null, d = 1): string => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(d));
  const pct = (x: number | null): string => (x === null || !Number.isFinite(x) ? '-' : `${(100 * x).toFixed(1)}%`);
  const table = formatTable(
    ['budget', 'policy', 'slots/layer', 'clients', 'tokens/s', 'per round', 'of all-resident', 'TTFT p50 ms', 'p99', 'TPOT p50 ms', 'p99', 'hit rate', 'MB read/token', '429', 'errors'],
    r.rows.map((x) => [
      x.budget === null ? 'all resident' : `${(100 * x.budget).toFixed(1)}%`, x.policy ?? '-', String(x.slotsPerLayer), String(x.clients),
      f(x.tokensPerSec), x.roundTokensPerSec.map((v) => v.toFixed(1)).join('/'), pct(x.ofResident), f(x.ttftMs.p50, 0), f(x.ttftMs.p99, 0),
      f(x.tpotMs.p50, 1), f(x.tpotMs.p99, 1), pct(x.hitRate), f(x.mbReadPerToken, 1), String(x.rejected429), String(x.errors),
    ]),
  );
  return [
    `moe bench serve (expert budget sweep): ${r.model}, ${r.requests} streamed requests per client count, configuration and round, ${r.rounds} round(s) over every configuration in turn (odd rounds in reverse order), prompts ${r.promptTokens} tokens, ${r.maxNewTokens} new tokens each (greedy, EOS ignored)`,
    '',
    table,
    '',
    'tokens/s: median of rounds; of all-resident: over the all-resident server\'s median at the same client count; TTFT/TPOT: median of the rounds\' p50 and p99.',
    'hit rate and MB read/token: the cache\'s counters over the requests (prefill included); budgets are fractions of all routed-expert bytes.',
    'Every configuration is loaded in this one process, so its resident set says nothing per budget (see moe bench expert-cache, or moe serve --expert-memory alone).',
    ...r.refused.map((x) => `refused: budget ${x.budget} ${x.policy}: ${x.reason}`),
    ...r.rows.filter((x) => x.firstError).map((x) => `first error (budget ${x.budget ?? 'all'}, ${x.policy ?? '-'}, ${x.clients} clients): ${x.firstError}`),
    `load average before ${r.loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${r.loadAfter.map((x) => x.toFixed(2)).join(' ')}; ${r.wallSec.toFixed(0)} s`,
  ].join('\n');
}

/** Three plots against the budget, one line per policy, dashed by client count: hit rate, tokens/s as % of all-resident, TTFT p50. */
export async function plotServeBudgets(dir: string, rows: ReadonlyArray<ServeBudgetRow>): Promise<string[]> {
  const data = rows.filter((r) => r.budget !== null).map((r) => ({
    budget: 100 * r.budget!, policy: r.policy!, clients: `${r.clients} client${r.clients === 1 ? '' : 's'}`,
    hit: r.hitRate === null ? null : 100 * r.hitRate, of: r.ofResident === null ? null : 100 * r.ofResident, ttft: Number.isFinite(r.ttftMs.p50) ? r.ttftMs.p50 : null,
  }));
  if (data.length === 0) throw new Error('bench serve --plot: no budget ran (all refused?)');
  mkdirSync(dir, { recursive: true });
  const x = { field: 'budget', title: 'expert budget (% of expert bytes)' };
  const out: string[] = [];
  for (const [file, title, field, y] of [
    ['serve-budget-hit-rate', 'moe serve: expert-cache hit rate against the budget', 'hit', 'hit rate (%)'],
    ['serve-budget-tokens', 'moe serve: tokens/s under a budget, % of all-resident', 'of', 'tokens/s, % of all experts resident'],
    ['serve-budget-ttft', 'moe serve: time to first token (p50) against the budget', 'ttft', 'TTFT p50 (ms)'],
  ] as const) {
    const p = await writePlot(join(dir, file), lineChart({ title, data, series: 'policy', dash: 'clients', x, y: { field, title: y } }));
    out.push(p.png);
  }
  return out;
}
