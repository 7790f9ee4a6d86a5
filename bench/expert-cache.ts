// Expert cache under a budget: batch-1 decode tokens/s, hit rate and bytes loaded per token, on real text (UDHR English) fed one token per step.
//
// Run: node dist/bench/expert-cache.js MODEL [--steps 64] [--budgets 1,0.5,0.25,0.125,0.1] [--policies lru,lfu,pregate] [--json]

import { pathToFileURL } from 'node:url';
import { loadLM } from '../src/models/load-lm.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import type { ExpertCache } from '../src/infer/expert-cache.js';
import { EXPERT_POLICIES, type ExpertPolicy } from '../src/infer/expert-slots.js';
import { loadTokenizer } from '../src/formats/hf/tokenizer.js';
import { loadUdhr } from '../src/data/text.js';

export interface TextDecodeResult {
  steps: number;
  tokensPerSec: number;
  hitRate: number | null;
  bytesLoadedPerToken: number | null;
  prefetched: number | null;
  prefetchUsed: number | null;
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
 * which would route to the same experts every step and flatter any cache). Cache stats count the
 * timed steps only. Several models run interleaved, one step each in turn, so that the shared
 * machine's load falls on all of them alike (their ratio is then meaningful).
 */
export function textDecodeInterleaved(runs: ReadonlyArray<{ model: MoEDecoder; cache: ExpertCache | null }>, ids: Int32Array, opts: { prefix?: number; steps?: number } = {}): TextDecodeResult[] {
  const prefix = opts.prefix ?? 16;
  const steps = opts.steps ?? 64;
  const warm = 8;
  if (ids.length < prefix + warm + steps) throw new Error(`bench expert-cache: the text has ${ids.length} tokens, need ${prefix + warm + steps}`);
  const kvs = runs.map(({ model }) => model.newCache(prefix + warm + steps + 1));
  runs.forEach(({ model }, i) => {
    model.forward(ids.subarray(0, prefix), kvs[i]!);
    for (let at = prefix; at < prefix + warm; at++) model.forward(ids.subarray(at, at + 1), kvs[i]!);
  });
  for (const r of runs) r.cache?.resetStats();
  const ms = runs.map(() => 0);
  for (let at = prefix + warm; at < prefix + warm + steps; at++) {
    runs.forEach(({ model }, i) => {
      const t0 = performance.now();
      model.forward(ids.subarray(at, at + 1), kvs[i]!);
      ms[i]! += performance.now() - t0;
    });
  }
  return runs.map(({ cache }, i) => {
    const st = cache?.stats() ?? null;
    return {
      steps,
      tokensPerSec: (1000 * steps) / ms[i]!,
      hitRate: st ? st.hitRate : null,
      bytesLoadedPerToken: st ? st.bytesLoaded / steps : null,
      prefetched: st ? st.prefetched : null,
      prefetchUsed: st ? st.prefetchUsed : null,
    };
  });
}

/** textDecodeInterleaved for one model. */
export function textDecode(model: MoEDecoder, ids: Int32Array, cache: ExpertCache | null, opts: { prefix?: number; steps?: number } = {}): TextDecodeResult {
  return textDecodeInterleaved([{ model, cache }], ids, opts)[0]!;
}

async function main(argv: string[]): Promise<void> {
  const path = argv[0];
  if (!path || path.startsWith('--')) throw new Error('usage: node dist/bench/expert-cache.js MODEL [--steps 64] [--budgets 1,0.5,0.25,0.125,0.1] [--policies lru,lfu,pregate] [--json]');
  const flag = (k: string): string | undefined => {
    const i = argv.indexOf(`--${k}`);
    return i < 0 ? undefined : argv[i + 1];
  };
  const steps = Number(flag('steps') ?? 64);
  const budgets = (flag('budgets') ?? '1,0.5,0.25,0.125,0.1').split(',').map(Number);
  const policies = (flag('policies') ?? EXPERT_POLICIES.join(',')).split(',') as ExpertPolicy[];
  const rows: Array<Record<string, unknown>> = [];
  const base = await loadLM(path);
  const E = base.model.config.numExperts;
  const ids = await udhrIds(base.tokenizerJson, base.tokenizerConfig, base.model.config.vocabSize);
  // the machine is shared: each offloaded run is interleaved step by step with an all-resident run, and the ratio is per pair
  const resident: number[] = [];
  for (const budget of budgets) {
    for (const policy of policies) {
      let lm: Awaited<ReturnType<typeof loadLM>>;
      try {
        lm = await loadLM(path, { expertMemory: budget, expertPolicy: policy });
      } catch (e) {
        rows.push({ budget, policy, refused: (e as Error).message });
        process.stderr.write(`budget ${budget} ${policy}: refused: ${(e as Error).message}\n`);
        break;
      }
      const [ref, r] = textDecodeInterleaved([{ model: base.model, cache: null }, { model: lm.model, cache: lm.expertCache }], ids, { steps }) as [TextDecodeResult, TextDecodeResult];
      resident.push(ref.tokensPerSec);
      lm.expertCache!.close();
      const slots = lm.expertCache!.layers[0]!.pool.numSlots;
      rows.push({ budget, slots, policy, ...r, residentTokensPerSec: ref.tokensPerSec, ofResident: r.tokensPerSec / ref.tokensPerSec });
      process.stderr.write(`budget ${budget} (${slots} slots/layer) ${policy}: ${r.tokensPerSec.toFixed(1)} tokens/s (all resident, interleaved: ${ref.tokensPerSec.toFixed(1)}), hit rate ${(100 * r.hitRate!).toFixed(1)}%, ${(r.bytesLoadedPerToken! / 1e6).toFixed(1)} MB loaded per token\n`);
    }
  }
  resident.sort((a, b) => a - b);
  rows.unshift({ budget: 'all resident', slots: E, policy: '-', tokensPerSec: resident[Math.floor(resident.length / 2)] ?? 0, runs: resident.length });
  if (argv.includes('--json')) {
    console.log(JSON.stringify(rows));
    return;
  }
  console.log('| budget (of expert bytes) | slots/layer | policy | decode tokens/s | of all-resident (interleaved run) | hit rate | MB read/token | prefetched (used) |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const pct = (x: unknown): string => (typeof x === 'number' ? `${(100 * x).toFixed(1)}%` : '-');
    const budget = typeof r['budget'] === 'number' ? pct(r['budget']) : String(r['budget']);
    if (r['refused']) {
      console.log(`| ${budget} | - | any | refused: ${String(r['refused'])} | | | | |`);
      continue;
    }
    const mb = typeof r['bytesLoadedPerToken'] === 'number' ? (r['bytesLoadedPerToken'] / 1e6).toFixed(1) : '-';
    const pf = r['policy'] === 'pregate' ? `${r['prefetched']} (${r['prefetchUsed']})` : '-';
    const tps = (r['tokensPerSec'] as number).toFixed(1);
    const of = r['ofResident'] === undefined ? `median of ${r['runs']} runs` : `${pct(r['ofResident'])} (of ${(r['residentTokensPerSec'] as number).toFixed(1)})`;
    console.log(`| ${budget} | ${r['slots']} | ${r['policy']} | ${tps} | ${of} | ${pct(r['hitRate'])} | ${mb} | ${pf} |`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e: Error) => {
    process.stderr.write(`${e.message}\n`);
    process.exit(1);
  });
}
