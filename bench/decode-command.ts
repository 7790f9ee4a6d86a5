// `moe bench decode`: batch-1 prefill and decode speed of a MoE LM against the bandwidth floor
// (the runner is bench/decode.ts), and with an expert budget the cache's hit rate on real text.

import { intFlag, rejectUnknown, type ParsedArgs } from '../src/cli/args.js';
import { loadLM } from '../src/models/load-lm.js';
import { dtypeFlag, expertFlags, DTYPE_HELP, EXPERT_HELP } from '../src/cli/generate-command.js';
import { benchDecode, formatDecodeReport } from './decode.js';
import { textDecode, udhrIds } from './expert-cache.js';

export const BENCH_DECODE_HELP = `moe bench decode --model DIR|FILE.gguf [--dtype T] [--json] [--prompt-tokens 64] [--new-tokens 32] [--seed S] [--rounds 3]
                 [--expert-memory BYTES|FRACTION] [--expert-policy lru|lfu|pregate] [--expert-low-precision q4_0] [--expert-reader sync|thread]

Batch-1 prefill and decode tokens/s of a MoE decoder (random prompt ids, greedy, KV cache), and in
the same run the memory bandwidth (a 512 MiB read and copy) and the weight bytes one decoded token
reads (non-expert weights + k experts per MoE layer + the embedding row + lm_head). The floor,
bandwidth / active bytes, is the decode speed a memory-bound implementation cannot beat. Speeds
and bandwidth are medians of --rounds (default 3) generations, each followed by a probe.
--json prints {"prefillTokensPerSec", "decodeTokensPerSec", "floorTokensPerSec", "bandwidthGBs",
"activeBytesPerToken"} (bytes as stored: Q8_0/Q4_0 blocks with a quantised --dtype).
With --expert-memory, also 64 decode steps over the UDHR's English text fed one token per step
(greedy decoding of a random model repeats one token and would flatter the cache): tokens/s, the
expert-cache hit rate and the expert bytes read from the file per token ("expertCache" in --json).
${DTYPE_HELP}
${EXPERT_HELP}`;

export async function benchDecodeCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['model', 'dtype', 'kv-dtype', 'expert-memory', 'expert-policy', 'expert-low-precision', 'expert-low-below', 'expert-low-load', 'expert-reader', 'json', 'prompt-tokens', 'new-tokens', 'seed', 'rounds', 'help'], 'bench decode');
  const path = args.flags.get('model')?.[0];
  if (!path) throw new Error('bench decode: --model DIR|FILE.gguf is required');
  const int = (key: string, min: number): number | undefined => intFlag(args, key, min, 'bench decode');
  const promptTokens = int('prompt-tokens', 1);
  const newTokens = int('new-tokens', 2);
  const seed = int('seed', 0);
  const rounds = int('rounds', 1);
  const log = (l: string): void => { process.stderr.write(`${l}\n`); };
  const dtype = dtypeFlag(args, 'bench decode');
  const t0 = performance.now();
  const lm = await loadLM(path, { ...dtype, ...expertFlags(args, 'bench decode') });
  log(`loaded ${path} (${lm.model.config.family}, ${lm.dtype}) in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  const report = benchDecode(lm.model, {
    ...(promptTokens !== undefined ? { promptTokens } : {}),
    ...(newTokens !== undefined ? { newTokens } : {}),
    ...(seed !== undefined ? { seed } : {}),
    ...(rounds !== undefined ? { rounds } : {}),
    log,
  });
  let expertCache: Record<string, unknown> | null = null;
  if (lm.expertCache) {
    const st = lm.expertCache.stats();
    const text = textDecode(lm.model, await udhrIds(lm.tokenizerJson, lm.tokenizerConfig, lm.model.config.vocabSize), lm.expertCache);
    expertCache = {
      policy: st.policy, residentBytes: st.residentBytes, totalExpertBytes: st.totalExpertBytes, slotsPerLayer: lm.expertCache.layers[0]!.pool.numSlots,
      textDecodeTokensPerSec: text.tokensPerSec, hitRate: text.hitRate, bytesLoadedPerToken: text.bytesLoadedPerToken, prefetched: text.prefetched, prefetchUsed: text.prefetchUsed,
    };
  }
  if (args.flags.has('json')) {
    const { prefillTokensPerSec, decodeTokensPerSec, floorTokensPerSec, bandwidthGBs, activeBytesPerToken } = report;
    console.log(JSON.stringify({ prefillTokensPerSec, decodeTokensPerSec, floorTokensPerSec, bandwidthGBs, activeBytesPerToken, ...(expertCache ? { expertCache } : {}) }));
  } else {
    console.log(formatDecodeReport(report));
    if (expertCache) {
      const e = expertCache as { policy: string; residentBytes: number; totalExpertBytes: number; slotsPerLayer: number; textDecodeTokensPerSec: number; hitRate: number; bytesLoadedPerToken: number };
      console.log(`expert cache (${e.policy}, ${e.slotsPerLayer} slots per MoE layer, ${(e.residentBytes / 1e6).toFixed(1)} of ${(e.totalExpertBytes / 1e6).toFixed(1)} MB of experts resident): ` +
        `UDHR English fed one token per step: ${e.textDecodeTokensPerSec.toFixed(2)} tokens/s, hit rate ${(100 * e.hitRate).toFixed(1)}%, ${(e.bytesLoadedPerToken / 1e6).toFixed(2)} MB read from the file per token`);
    }
  }
  return 0;
}
