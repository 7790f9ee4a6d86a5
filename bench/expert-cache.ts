// Expert cache under a budget: batch-1 decode tokens/s, hit rate and bytes loaded per token, on real text (UDHR English) fed one token per step.
//
// Batch B > 1: B sequences over different stretches of the text, decoded together (one forwardBatch step
// feeds each its next token), as a server's decode step does.
//
// Run: moe bench expert-cache --model MODEL [options] (or node dist/bench/expert-cache.js MODEL [options]); options in BENCH_EXPERT_CACHE_HELP.
//
// --loads: misses read on the calling thread (sync) and/or by the cache's reader thread while resident experts compute
// (async; --places: experts the reader may read ahead); with both, the two caches run interleaved with the all-resident
// model in the same steps. --rows: print (and --plot) rows saved with --json by earlier runs instead of measuring.
// --low off,q4_0: each cache also with HOBBIT's resident Q4_0 copies (misses below --low-below on the copies).

import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadLM } from '../src/models/load-lm.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import type { ExpertCache } from '../src/infer/expert-cache.js';
import { EXPERT_POLICIES, type ExpertPolicy } from '../src/infer/expert-slots.js';
import { loadTokenizer } from '../src/formats/hf/tokenizer.js';
import { loadUdhr } from '../src/data/text.js';
import type { KVCache } from '../src/nn/kv-cache.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { lineChart, writePlot } from '../src/report/plot.js';
import { parseArgs, rejectUnknown, type ParsedArgs } from '../src/cli/args.js';
import { LOW_PRECISION_TYPES, type LowPrecisionType } from '../src/infer/expert-low-precision.js';

export interface TextDecodeResult {
  steps: number;
  /** Sequences decoded together per step. */
  batch: number;
  tokensPerSec: number;
  hitRate: number | null;
  bytesLoadedPerToken: number | null;
  prefetched: number | null;
  prefetchUsed: number | null;
  /** Bytes of every expert a step used, once per step, per token: what a cache that never hits reads (the per-step floor at hit rate 0). */
  neededBytesPerToken: number | null;
  /** Loads by a later projection of the same forward (0 with the per-expert schedule). */
  reloads: number | null;
  /** Share of the loaded experts read by the reader thread, and ms per token the forward waited for it. */
  staged: number | null;
  waitMsPerToken: number | null;
  /** Share of the expert uses computed on the low-precision copies (null without them). */
  lowPrecisionShare: number | null;
  /** Against the all-resident run (the first, when it has no cache): largest |logit change| over the timed steps, and the share of steps whose top token is the same. */
  maxLogitDiff: number | null;
  top1Agreement: number | null;
  /** Experts run on their copies and also read in full in the background (lowPrecision.background). */
  backgroundLoads: number | null;
  /** Mean over the timed steps: ms per step, distinct experts summed over the MoE layers, and the sequences' mean context length (for the cost model). */
  stepMs: number;
  distinctExpertsPerStep: number;
  meanContext: number;
}

/** Token ids of the UDHR's English text: the model's tokenizer when it has one, else UTF-8 bytes (mod the vocabulary). */
export async function udhrIds(tokenizerJson: object | null, tokenizerConfig: object | null, vocabSize: number): Promise<Int32Array> {
  const [eng] = await loadUdhr({ languages: ['eng'] });
  const text = eng!.text;
  if (tokenizerJson) {
    const tok = loadTokenizer(tokenizerJson, tokenizerConfig ?? {});
    return Int32Array.from(tok.encode(text, { addSpecialTokens: true }), (id) => id % vocabSize);
  }
  return Int32Array.from(Buffer.from(text, 'utf8'), (b) => b % vocabSize);
}

/**
 * Prefill `prefix` ids, 8 untimed decode steps, then `steps` timed decode steps, each feeding the
 * next id of the text (teacher forcing: greedy generation from a random model repeats one token,
 * which would route to the same experts every step and flatter any cache). With `batch` B > 1,
 * sequence j reads the text from offset j * (prefix + 8 + steps) (wrapping round), and each step
 * feeds all B their next ids in one forwardBatch call. Cache stats count the timed steps only.
 * Several models run interleaved, one step each in turn, so that the shared machine's load falls
 * on all of them alike (their ratio is then meaningful).
 */
export function textDecodeInterleaved(
  runs: ReadonlyArray<{ model: MoEDecoder; cache: ExpertCache | null }>,
  ids: Int32Array,
  opts: { prefix?: number; steps?: number; batch?: number } = {},
): TextDecodeResult[] {
  const prefix = opts.prefix ?? 16;
  const steps = opts.steps ?? 64;
  const batch = opts.batch ?? 1;
  if (!(Number.isInteger(batch) && batch >= 1)) throw new Error(`bench expert-cache: batch ${batch} is not a positive integer`);
  const warm = 8;
  const span = prefix + warm + steps;
  if (ids.length < span) throw new Error(`bench expert-cache: the text has ${ids.length} tokens, need ${span}`);
  // each sequence's own stretch of the text, copied out (wrapping round when the text is short)
  const texts = Array.from({ length: batch }, (_, j) => Int32Array.from({ length: span }, (_, i) => ids[(j * span + i) % ids.length]!));
  const kvs: KVCache[][] = runs.map(({ model }) => texts.map(() => model.newCache(span + 1)));
  const step = (model: MoEDecoder, caches: KVCache[], from: number, to: number): Tensor[] => {
    return model.forwardBatch(texts.map((t, j) => ({ ids: t.subarray(from, to), cache: caches[j]! })), 'bench expert-cache', { lastOnly: true });
  };
  runs.forEach(({ model }, i) => {
    step(model, kvs[i]!, 0, prefix);
    for (let at = prefix; at < prefix + warm; at++) step(model, kvs[i]!, at, at + 1);
  });
  for (const r of runs) r.cache?.resetStats();
  const ms = runs.map(() => 0);
  // distinct experts per MoE layer per step, summed over layers (each run's own routing; the hook chains to any already set)
  const distinct = runs.map(() => 0);
  const hooks = runs.map(({ model }, i) => {
    const prev = model.onRouting;
    const seen = new Set<number>();
    model.onRouting = (layer, idx, w) => {
      prev?.(layer, idx, w);
      seen.clear();
      for (const e of idx) seen.add(e);
      distinct[i]! += seen.size;
    };
    return prev;
  });
  // against the first run when it is all-resident: the largest logit change and whether the top token stays (low-precision copies move them)
  const maxDiff = runs.map(() => 0);
  const top1 = runs.map(() => 0);
  const argmax = (d: Float32Array): number => d.reduce((b, v, j) => (v > d[b]! ? j : b), 0);
  for (let at = prefix + warm; at < span; at++) {
    let ref: Float32Array[] | null = null;
    runs.forEach(({ model }, i) => {
      const t0 = performance.now();
      const out = step(model, kvs[i]!, at, at + 1).map((t) => t.data as Float32Array);
      ms[i]! += performance.now() - t0;
      if (i === 0) ref = out;
      else if (ref && runs[0]!.cache === null) {
        out.forEach((d, j) => {
          const r = ref![j]!;
          for (let v = 0; v < d.length; v++) maxDiff[i] = Math.max(maxDiff[i]!, Math.abs(d[v]! - r[v]!));
          if (argmax(d) === argmax(r)) top1[i]!++;
        });
      }
    });
  }
  runs.forEach(({ model }, i) => { model.onRouting = hooks[i]; });
  return runs.map(({ cache }, i) => {
    const st = cache?.stats() ?? null;
    const tokens = steps * batch;
    return {
      steps,
      batch,
      tokensPerSec: (1000 * tokens) / ms[i]!,
      hitRate: st ? st.hitRate : null,
      bytesLoadedPerToken: st ? st.bytesLoaded / tokens : null,
      prefetched: st ? st.prefetched : null,
      prefetchUsed: st ? st.prefetchUsed : null,
      neededBytesPerToken: st ? ((st.hits + st.misses) * cache!.layers[0]!.expertBytes) / tokens : null,
      reloads: st ? st.reloads : null,
      staged: st ? st.staged : null,
      waitMsPerToken: st ? st.waitMs / tokens : null,
      lowPrecisionShare: st && cache!.lowPrecision ? st.lowPrecision / Math.max(1, st.hits + st.misses) : null,
      maxLogitDiff: i > 0 && runs[0]!.cache === null ? maxDiff[i]! : null,
      top1Agreement: i > 0 && runs[0]!.cache === null ? top1[i]! / tokens : null,
      backgroundLoads: st ? st.backgroundLoads : null,
      stepMs: ms[i]! / steps,
      distinctExpertsPerStep: distinct[i]! / steps,
      // timed step s feeds position prefix + warm + s, attending over that many + 1
      meanContext: prefix + warm + (steps + 1) / 2,
    };
  });
}

/** textDecodeInterleaved for one model. */
export function textDecode(model: MoEDecoder, ids: Int32Array, cache: ExpertCache | null, opts: { prefix?: number; steps?: number; batch?: number } = {}): TextDecodeResult {
  return textDecodeInterleaved([{ model, cache }], ids, opts)[0]!;
}

export const BENCH_EXPERT_CACHE_HELP = `moe bench expert-cache --model MODEL [--steps 64] [--budgets 1,0.5,0.25,0.125,0.1] [--policies lru,lfu,pregate]
          [--batch 1,8] [--loads sync,async,async-copy] [--places N] [--low off,q4_0,q4_0+bg] [--low-below F] [--plot DIR] [--json] [--rows A.json,B.json]

Decode under an expert budget on real text (the UDHR's English, teacher-forced one token per step): tokens/s,
hit rate and MB read per token for every batch x budget x policy x loads x low, each cache interleaved step by
step with an all-resident run of the same text (the ratio is per pair on a shared machine).
  --budgets     fractions of all routed-expert bytes (or bytes > 1)
  --loads       sync: misses read on the decoding thread; async: by the reader thread straight into the slots
                (--places: read-ahead); async-copy: by the reader thread through staging and a copy (before direct reads)
  --low         off and/or q4_0: HOBBIT's resident Q4_0 copies (counted in the budget); misses whose
                importance (k x the token's share) is below --low-below (default 1; 'all': every miss) use them;
                q4_0+bg: with --loads async, such misses are also read in full in the background
  --rows        print (and --plot) rows saved with --json instead of measuring
  --cost-model  fit time per step = bytes / bandwidth + FLOPs / throughput over every batch x budget measured
                (sync loads, no copies; file reads counted as bytes, then apart) and print the error per point`;
const USAGE = `usage: ${BENCH_EXPERT_CACHE_HELP.split('\n\n')[0]}`;

function numberList(flag: string, text: string, ok: (x: number) => boolean): number[] {
  const xs = text.split(',').map(Number);
  const bad = xs.find((x) => !ok(x));
  if (bad !== undefined) throw new Error(`--${flag} ${text}: ${bad} is not allowed here\n${USAGE}`);
  return xs;
}

/** Hit rate and tokens/s (as a share of all-resident) against the budget, one line per policy and load mode, dashed by batch. */
async function plot(dir: string, rows: ReadonlyArray<Record<string, unknown>>): Promise<void> {
  const data = rows
    .filter((r) => typeof r['budget'] === 'number' && typeof r['hitRate'] === 'number')
    .map((r) => ({ budget: 100 * (r['budget'] as number), hit: 100 * (r['hitRate'] as number), of: 100 * (r['ofResident'] as number), policy: `${String(r['policy'])} ${String(r['loads'] ?? '')} ${r['low'] && r['low'] !== 'off' ? String(r['low']) : ''}`.trim(), batch: `batch ${r['batch']}` }));
  if (data.length === 0) throw new Error('bench expert-cache --plot: no budget ran (all refused?)');
  mkdirSync(dir, { recursive: true });
  await writePlot(join(dir, 'expert-cache-hit-rate'), lineChart({
    title: 'Expert-cache hit rate against the budget', data, series: 'policy', dash: 'batch',
    x: { field: 'budget', title: 'expert budget (% of expert bytes)' }, y: { field: 'hit', title: 'hit rate (%)' },
  }));
  await writePlot(join(dir, 'expert-cache-speed'), lineChart({
    title: 'Decode tokens/s under a budget, % of all-resident (same run)', data, series: 'policy', dash: 'batch',
    x: { field: 'budget', title: 'expert budget (% of expert bytes)' }, y: { field: 'of', title: 'tokens/s, % of all experts resident' },
  }));
}

/** Measures every batch x budget x policy x load mode; rows as the table prints them. */
async function measure(path: string, o: { steps: number; budgets: number[]; batches: number[]; policies: ExpertPolicy[]; loads: string[]; places: number | undefined; lows: string[]; below: number | undefined }): Promise<Array<Record<string, unknown>>> {
  const { steps, budgets, batches, policies, loads, places, lows, below } = o;
  const modes = loads.flatMap((l) => lows.map((low) => ({ loads: l, low })));
  const rows: Array<Record<string, unknown>> = [];
  const base = await loadLM(path);
  const E = base.model.config.numExperts;
  const ids = await udhrIds(base.tokenizerJson, base.tokenizerConfig, base.model.config.vocabSize);
  for (const batch of batches) {
    // the machine is shared: each offloaded run is interleaved step by step with an all-resident run, and the ratio is per pair
    const resident: number[] = [];
    const at = rows.length;
    for (const budget of budgets) {
      for (const policy of policies) {
        const lms: Array<Awaited<ReturnType<typeof loadLM>>> = [];
        const ran: typeof modes = [];
        for (const mode of modes) {
          try {
            const bg = mode.low.endsWith('+bg');
            const lowOpt = mode.low === 'off' ? {} : { expertLowPrecision: { type: mode.low.replace('+bg', '') as LowPrecisionType, ...(below !== undefined ? { below } : {}), background: bg } };
            const lm = await loadLM(path, { expertMemory: budget, expertPolicy: policy, ...lowOpt });
            lm.expertCache!.setAsyncLoads(mode.loads !== 'sync', { ...(places === undefined ? {} : { places }), direct: mode.loads !== 'async-copy' });
            lms.push(lm);
            ran.push(mode);
          } catch (e) {
            rows.push({ batch, budget, policy, loads: mode.loads, low: mode.low, refused: (e as Error).message });
            process.stderr.write(`batch ${batch}, budget ${budget} ${policy} ${mode.loads} low ${mode.low}: refused: ${(e as Error).message}\n`);
          }
        }
        if (lms.length === 0) continue;
        const [ref, ...rs] = textDecodeInterleaved([{ model: base.model, cache: null }, ...lms.map((lm) => ({ model: lm.model, cache: lm.expertCache }))], ids, { steps, batch }) as [TextDecodeResult, ...TextDecodeResult[]];
        resident.push(ref.tokensPerSec);
        lms.forEach((lm, i) => {
          lm.expertCache!.close();
          const r = rs[i]!;
          const slots = lm.expertCache!.layers[0]!.pool.numSlots;
          const mode = ran[i]!;
          rows.push({ budget, slots, policy, loads: mode.loads, low: mode.low, lowPrecisionBytes: lm.expertCache!.lowPrecisionBytes, ...r, residentTokensPerSec: ref.tokensPerSec, ofResident: r.tokensPerSec / ref.tokensPerSec,
            residentStepMs: ref.stepMs, residentDistinctExpertsPerStep: ref.distinctExpertsPerStep });
          const lowNote = r.lowPrecisionShare === null ? '' : `, ${(100 * r.lowPrecisionShare).toFixed(1)}% of uses on the ${mode.low} copies (${r.backgroundLoads} read in the background)`;
          process.stderr.write(`batch ${batch}, budget ${budget} (${slots} slots/layer) ${policy} ${mode.loads} low ${mode.low}: ${r.tokensPerSec.toFixed(1)} tokens/s (all resident, interleaved: ${ref.tokensPerSec.toFixed(1)}), ` +
            `hit rate ${(100 * r.hitRate!).toFixed(1)}%${lowNote}, ${(r.bytesLoadedPerToken! / 1e6).toFixed(1)} MB loaded per token (needed ${(r.neededBytesPerToken! / 1e6).toFixed(1)}), waited ${r.waitMsPerToken!.toFixed(2)} ms/token\n`);
        });
      }
    }
    resident.sort((a, b) => a - b);
    rows.splice(at, 0, { batch, budget: 'all resident', slots: E, policy: '-', tokensPerSec: resident[Math.floor(resident.length / 2)] ?? 0, runs: resident.length });
  }
  return rows;
}

const OPTIONS = ['model', 'steps', 'budgets', 'policies', 'batch', 'loads', 'places', 'low', 'low-below', 'plot', 'json', 'rows', 'cost-model', 'help'];

/** `moe bench expert-cache --model M ...` (or the script with MODEL first). */
export async function benchExpertCacheCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, OPTIONS, 'bench expert-cache');
  const flag = (k: string): string | undefined => args.flags.get(k)?.[0];
  const positional = args.positional[0] === 'bench' ? args.positional.slice(2) : args.positional;
  const path = flag('model') ?? positional[0];
  if (!path && !flag('rows')) throw new Error(USAGE);
  const steps = Number(flag('steps') ?? 64);
  if (!(Number.isInteger(steps) && steps >= 1)) throw new Error(`--steps ${flag('steps')}: expected a positive integer\n${USAGE}`);
  const budgets = numberList('budgets', flag('budgets') ?? '1,0.5,0.25,0.125,0.1', (x) => Number.isFinite(x) && x > 0);
  const batches = numberList('batch', flag('batch') ?? '1', (x) => Number.isInteger(x) && x >= 1 && x <= 64);
  const policies = (flag('policies') ?? EXPERT_POLICIES.join(',')).split(',') as ExpertPolicy[];
  const loads = (flag('loads') ?? 'sync,async').split(',');
  const badLoad = loads.find((m) => m !== 'sync' && m !== 'async' && m !== 'async-copy');
  if (badLoad !== undefined || loads.length === 0) throw new Error(`--loads ${flag('loads')}: expected a list of sync, async, async-copy\n${USAGE}`);
  const unknown = policies.find((p) => !EXPERT_POLICIES.includes(p));
  if (unknown) throw new Error(`--policies: unknown policy '${unknown}' (have ${EXPERT_POLICIES.join(', ')})`);
  const lows = (flag('low') ?? 'off').split(',');
  const badLow = lows.find((l) => l !== 'off' && !(LOW_PRECISION_TYPES as readonly string[]).includes(l.replace(/\+bg$/, '')));
  if (badLow !== undefined) throw new Error(`--low ${flag('low')}: '${badLow}' is not off, ${LOW_PRECISION_TYPES.join(', ')} or ${LOW_PRECISION_TYPES.map((t) => `${t}+bg`).join(', ')}\n${USAGE}`);
  const belowRaw = flag('low-below');
  const below = belowRaw === undefined ? undefined : belowRaw === 'all' ? Infinity : Number(belowRaw);
  if (below !== undefined && !(below >= 0)) throw new Error(`--low-below ${belowRaw}: expected a number >= 0 or 'all'\n${USAGE}`);
  const places = flag('places') === undefined ? undefined : Number(flag('places'));
  if (places !== undefined && !(Number.isInteger(places) && places >= 1)) throw new Error(`--places ${flag('places')}: expected a positive integer\n${USAGE}`);
  // --rows: print and plot rows saved by earlier runs (--json), e.g. one run per batch size, instead of measuring
  const saved = flag('rows');
  const rows: Array<Record<string, unknown>> = saved
    ? saved.split(',').flatMap((f) => {
      const j = JSON.parse(readFileSync(f, 'utf8')) as Array<Record<string, unknown>> | { rows: Array<Record<string, unknown>> };
      return Array.isArray(j) ? j : j.rows; // with --cost-model, --json wrote { rows, cost }
    })
    : await measure(path!, { steps, budgets, batches, policies, loads, places, lows, below });
  const plotDir = flag('plot');
  if (plotDir) await plot(plotDir, rows);
  // --cost-model: time per step = bytes / bandwidth + FLOPs / throughput over every batch and budget measured (shapes from the model)
  const cost = args.flags.has('cost-model') ? await (async () => {
    if (!path) throw new Error(`--cost-model needs --model (the shapes behind bytes and FLOPs)\n${USAGE}`);
    const { fitCacheCost, cacheCostInputs } = await import('./expert-cache-cost.js');
    return fitCacheCost((await loadLM(path)).model, cacheCostInputs(rows));
  })() : null;
  if (args.flags.has('json')) {
    console.log(JSON.stringify(cost ? { rows, cost } : rows));
    return 0;
  }
  console.log('| batch | budget (of expert bytes) | slots/layer | policy | loads | low precision | decode tokens/s | of all-resident (interleaved run) | hit rate | uses on the copies | max abs logit change (top-1 same) | MB read/token | MB needed/token (floor at 0 hits) | waited ms/token | prefetched (used) |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const pct = (x: unknown): string => (typeof x === 'number' ? `${(100 * x).toFixed(1)}%` : '-');
    const budget = typeof r['budget'] === 'number' ? pct(r['budget']) : String(r['budget']);
    if (r['refused']) {
      console.log(`| ${r['batch']} | ${budget} | - | ${r['policy'] ?? 'any'} | ${r['loads'] ?? '-'} | ${r['low'] ?? '-'} | refused: ${String(r['refused'])} | | | | | | | | |`);
      continue;
    }
    const mbOf = (k: string): string => (typeof r[k] === 'number' ? ((r[k] as number) / 1e6).toFixed(1) : '-');
    const mb = mbOf('bytesLoadedPerToken');
    const wait = typeof r['waitMsPerToken'] === 'number' ? (r['waitMsPerToken'] as number).toFixed(2) : '-';
    const pf = r['policy'] === 'pregate' ? `${r['prefetched']} (${r['prefetchUsed']})` : '-';
    const tps = (r['tokensPerSec'] as number).toFixed(1);
    const of = r['ofResident'] === undefined ? `median of ${r['runs']} runs` : `${pct(r['ofResident'])} (of ${(r['residentTokensPerSec'] as number).toFixed(1)})`;
    console.log(`| ${r['batch']} | ${budget} | ${r['slots']} | ${r['policy']} | ${r['loads'] ?? '-'} | ${r['low'] ?? '-'} | ${tps} | ${of} | ${pct(r['hitRate'])} | ${pct(r['lowPrecisionShare'])} | ${typeof r['maxLogitDiff'] === 'number' ? `${(r['maxLogitDiff'] as number).toPrecision(3)} (${pct(r['top1Agreement'])})` : '-'} | ${mb} | ${mbOf('neededBytesPerToken')} | ${wait} | ${pf} |`);
  }
  if (cost) {
    const { formatCacheCost } = await import('./expert-cache-cost.js');
    console.log(`\n${formatCacheCost(cost)}`);
  }
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchExpertCacheCommand(parseArgs(process.argv.slice(2), new Set(['json', 'cost-model']))).catch((e: Error) => {
    process.stderr.write(`${e.message}\n`);
    process.exit(1);
  });
}
