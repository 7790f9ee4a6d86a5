// `moe generate` (an HF directory or GGUF file, or a byte-level LM checkpoint) and `moe bench decode`.

import { rejectUnknown, type ParsedArgs } from './args.js';
import { generateCommand as byteLMGenerateCommand, GENERATE_HELP as BYTE_LM_HELP } from './model-commands.js';
import { loadLM, type LoadLMOptions } from '../models/load-lm.js';
import { LOAD_DTYPES, type LoadDType } from '../models/moe-decoder-weights.js';
import { EXPERT_POLICIES, type ExpertPolicy } from '../infer/expert-slots.js';
import { LOW_PRECISION_TYPES, type LowPrecisionType } from '../infer/expert-low-precision.js';
import type { KVCacheDtype } from '../nn/kv-cache.js';

/**
 * --dtype: weights in memory (q8_0/q4_0 quantised at load; f16/bf16 rounded, held as f32); absent:
 * loadLM's default. --kv-dtype f32|f16: the KV caches' element type (default f32).
 */
export function dtypeFlag(args: ParsedArgs, cmd: string): { dtype?: LoadDType; kvDtype?: KVCacheDtype } {
  const v = args.flags.get('dtype')?.[0];
  const kv = args.flags.get('kv-dtype')?.[0];
  if (v !== undefined && !(LOAD_DTYPES as readonly string[]).includes(v)) throw new Error(`${cmd}: --dtype ${v}: expected one of ${LOAD_DTYPES.join(', ')}`);
  const kvNames: Record<string, KVCacheDtype> = { f32: 'float32', float32: 'float32', f16: 'float16', float16: 'float16' };
  if (kv !== undefined && kvNames[kv] === undefined) throw new Error(`${cmd}: --kv-dtype ${kv}: expected f32 or f16`);
  return { ...(v !== undefined ? { dtype: v as LoadDType } : {}), ...(kv !== undefined ? { kvDtype: kvNames[kv]! } : {}) };
}
/**
 * --expert-memory BYTES|FRACTION, --expert-policy, --expert-low-precision q4_0 [--expert-low-below F]
 * and --expert-reader thread|sync: routed experts beyond the budget stay in the model file (loadLM's expertMemory).
 */
export function expertFlags(args: ParsedArgs, cmd: string): Pick<LoadLMOptions, 'expertMemory' | 'expertPolicy' | 'expertLowPrecision' | 'expertReader'> {
  const raw = args.flags.get('expert-memory')?.[0];
  const policy = args.flags.get('expert-policy')?.[0];
  const low = args.flags.get('expert-low-precision')?.[0];
  const below = args.flags.get('expert-low-below')?.[0];
  const reader = args.flags.get('expert-reader')?.[0];
  const lowLoad = args.flags.get('expert-low-load')?.[0];
  if (lowLoad !== undefined && lowLoad !== 'background' && lowLoad !== 'none') throw new Error(`${cmd}: --expert-low-load ${lowLoad}: expected background or none`);
  if (lowLoad !== undefined && low === undefined) throw new Error(`${cmd}: --expert-low-load needs --expert-low-precision`);
  if (policy !== undefined && !(EXPERT_POLICIES as readonly string[]).includes(policy)) throw new Error(`${cmd}: --expert-policy ${policy}: expected one of ${EXPERT_POLICIES.join(', ')}`);
  if (low !== undefined && !(LOW_PRECISION_TYPES as readonly string[]).includes(low)) throw new Error(`${cmd}: --expert-low-precision ${low}: expected ${LOW_PRECISION_TYPES.join(', ')}`);
  if (below !== undefined && low === undefined) throw new Error(`${cmd}: --expert-low-below needs --expert-low-precision`);
  const belowV = below === undefined ? undefined : below === 'inf' || below === 'all' ? Infinity : Number(below);
  if (belowV !== undefined && !(belowV >= 0)) throw new Error(`${cmd}: --expert-low-below ${below}: expected a number >= 0 (1 = an average share of a token's routed weight) or 'all'`);
  if (reader !== undefined && reader !== 'thread' && reader !== 'sync') throw new Error(`${cmd}: --expert-reader ${reader}: expected thread or sync`);
  if (raw === undefined) {
    for (const [f, v] of [['policy', policy], ['low-precision', low], ['reader', reader]] as const) {
      if (v !== undefined) throw new Error(`${cmd}: --expert-${f} needs --expert-memory (the budget it manages)`);
    }
    return {};
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(%|k|m|g|kib|mib|gib|kb|mb|gb|b)?\s*$/i.exec(raw);
  const unit = m?.[2]?.toLowerCase() ?? '';
  const scale: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, kib: 2 ** 10, m: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gib: 2 ** 30, kb: 1e3, mb: 1e6, gb: 1e9 };
  const v = m ? (unit === '%' ? Number(m[1]) / 100 : Number(m[1]) * scale[unit]!) : NaN;
  if (!(v > 0) || (unit === '%' && v > 1)) throw new Error(`${cmd}: --expert-memory ${raw}: expected bytes (e.g. 512M, 2G, 300000000) or a fraction of the expert bytes (0.25 or 25%)`);
  return {
    expertMemory: v, ...(policy !== undefined ? { expertPolicy: policy as ExpertPolicy } : {}),
    ...(low !== undefined ? { expertLowPrecision: { type: low as LowPrecisionType, ...(belowV !== undefined ? { below: belowV } : {}), ...(lowLoad === 'background' ? { background: true } : {}) } } : {}),
    ...(reader !== undefined ? { expertReader: reader } : {}),
  };
}
export const EXPERT_HELP = `  --expert-memory M   routed experts resident at most: bytes (512M, 2G) or a fraction of all
                      expert bytes (0.25, 25%); the rest are read from the model file on demand
                      into a fixed pool of slots per MoE layer (experts read as stored: --dtype
                      must be the file's expert type). Default: every expert resident
  --expert-policy P   which expert leaves a full pool: lru (default), lfu, or pregate (lru, plus
                      the next MoE layer's router predicts its experts and loads them ahead)
  --expert-low-precision q4_0
                      also keep a Q4_0 copy of every expert resident (made at load, counted in
                      --expert-memory); a miss for an expert below --expert-low-below runs on its
                      copy instead of being read (HOBBIT). Default: off
  --expert-low-below F importance threshold: k x the expert's share of a token's routed weight
                      (1 = average share, the default; 'all': every miss uses the copy)
  --expert-low-load background
                      with --expert-reader thread: a miss run on its copy is also read in full
                      into a free slot while the layer computes (kept if done in time; default none)
  --expert-reader R   sync (default): misses are read on the decoding thread; thread: a reader
                      thread reads them while resident experts compute (docs/serving.md)`;
export const DTYPE_HELP = `  --dtype T           weights in memory: f32, q8_0 or q4_0 (quantised at load, or a GGUF's blocks as
                      stored; norms and router stay f32), f16 or bf16 (rounded, held as f32). Default:
                      f32, or the GGUF's Q8_0/Q4_0 when its experts are stored so
  --kv-dtype T        KV cache elements: f32 (default) or f16 (llama.cpp's default: half the cache
                      memory and the bytes attention reads per token; logits move by f16 rounding)`;
import { DecoderExpertParallel } from '../parallel/decoder-experts.js';
import type { KVCache } from '../nn/kv-cache.js';
import { loadTokenizer, type LoadedTokenizer } from '../formats/hf/tokenizer.js';
import { generate, type RoutingEvent } from '../infer/generate.js';

/** One line of expert-cache stats for a run of `tokens` tokens (prefill and decode). */
function expertCacheLine(st: { policy: string; hits: number; misses: number; hitRate: number; bytesLoaded: number; residentBytes: number; totalExpertBytes: number; lowPrecision: number; lowPrecisionBytes: number }, tokens: number): string {
  const low = st.lowPrecisionBytes > 0 ? ` (${(st.lowPrecisionBytes / 1e6).toFixed(1)} MB of them Q4_0 copies; ${st.lowPrecision} misses ran on the copies)` : '';
  return `expert cache (${st.policy}, ${(st.residentBytes / 1e6).toFixed(1)} of ${(st.totalExpertBytes / 1e6).toFixed(1)} MB of experts resident${low}): hit rate ${(100 * st.hitRate).toFixed(1)}% ` +
    `(${st.hits} hits, ${st.misses} misses), ${(st.bytesLoaded / 1e6).toFixed(1)} MB read from the file, ${(st.bytesLoaded / Math.max(tokens, 1) / 1e6).toFixed(2)} MB per token`;
}

export const GENERATE_HELP = `moe generate --model DIR|FILE.gguf (--prompt TEXT | --prompt-ids 1,2,3) [--max-new-tokens N]
             [--temperature T] [--top-k K] [--top-p P] [--seed S] [--max-context N] [--dtype T] [--chat] [--json] [--show-routing]
             [--expert-memory BYTES|FRACTION] [--expert-policy lru|lfu|pregate] [--expert-low-precision q4_0]
             [--expert-low-below F] [--expert-reader sync|thread]

Loads an HF MoE model directory (config.json, safetensors, tokenizer.json) or a GGUF file and
streams the continuation of the prompt to stdout as it is generated: the prompt is run in one
forward (prefill), then one KV-cached forward per new token, until an end-of-sequence token or N
new tokens (default 128). Timing (prefill and decode tokens/s) goes to stderr.
  --prompt TEXT       encoded with the model's tokenizer.json
  --prompt-ids LIST   token ids, comma separated (no tokenizer needed); an empty prompt starts from BOS
  --chat              wrap the prompt as one user message in the tokenizer's chat template
  --temperature T     0 (default) = greedy; otherwise sample from softmax(logits / T)
  --top-k K --top-p P keep the K most likely tokens, then the smallest set of mass >= P
  --seed S            the same seed gives the same tokens (default 0)
  --max-context N     KV cache positions (default: the model's max_position_embeddings); a longer
                      prompt is refused
  --show-routing      each token's experts (and gate weights) in every MoE layer, on stderr
  --parallel-experts N  run each MoE layer's routed experts on N worker threads, E/N each, over
                      shared memory (any --dtype; not with --expert-memory)
${DTYPE_HELP}
${EXPERT_HELP}
  --json              print one JSON object: {"ids", "text", "prefillTokensPerSec", "decodeTokensPerSec"}
                      (with --show-routing also "routing": per position, per MoE layer, the experts)

The byte-level LM of moe train keeps its own form:
${BYTE_LM_HELP}`;

const OPTIONS = ['model', 'dtype', 'kv-dtype', 'expert-memory', 'expert-policy', 'expert-low-precision', 'expert-low-below', 'expert-low-load', 'expert-reader', 'prompt', 'prompt-ids', 'max-new-tokens', 'temperature', 'top-k', 'top-p', 'seed', 'max-context', 'chat', 'json', 'show-routing', 'parallel-experts', 'help'];

function numberFlag(args: ParsedArgs, key: string, check: (v: number) => boolean, what: string): number | undefined {
  const raw = args.flags.get(key)?.[0];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === '' || !check(v)) throw new Error(`generate: --${key} ${raw}: expected ${what}`);
  return v;
}

export function parsePromptIds(raw: string): number[] {
  if (raw.trim() === '') return [];
  return raw.split(',').map((s, i) => {
    const v = Number(s.trim());
    if (s.trim() === '' || !Number.isInteger(v) || v < 0) throw new Error(`generate: --prompt-ids: item ${i} '${s}' is not a non-negative integer`);
    return v;
  });
}

export async function generateCommand(args: ParsedArgs): Promise<number> {
  if (args.flags.has('checkpoint')) return byteLMGenerateCommand(args);
  rejectUnknown(args, OPTIONS, 'generate');
  const path = args.flags.get('model')?.[0];
  if (!path) throw new Error('generate: --model DIR|FILE.gguf is required (or --checkpoint DIR for a byte-level LM from moe train)');
  const promptText = args.flags.get('prompt')?.[0];
  const promptIdsRaw = args.flags.get('prompt-ids')?.[0];
  if ((promptText === undefined) === (promptIdsRaw === undefined)) throw new Error('generate: give exactly one of --prompt TEXT and --prompt-ids 1,2,3');
  const maxNewTokens = numberFlag(args, 'max-new-tokens', (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer') ?? 128;
  const temperature = numberFlag(args, 'temperature', (v) => Number.isFinite(v) && v >= 0, 'a number >= 0') ?? 0;
  const topK = numberFlag(args, 'top-k', (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer (0 = off)') ?? 0;
  const topP = numberFlag(args, 'top-p', (v) => v > 0 && v <= 1, 'a number in (0, 1]') ?? 1;
  const seed = numberFlag(args, 'seed', Number.isInteger, 'an integer') ?? 0;
  const maxContext = numberFlag(args, 'max-context', (v) => Number.isInteger(v) && v >= 1, 'a positive integer');
  const parallelExperts = numberFlag(args, 'parallel-experts', (v) => Number.isInteger(v) && v >= 1, 'a positive integer') ?? 1;
  const json = args.flags.has('json');
  const chat = args.flags.has('chat');
  const showRouting = args.flags.has('show-routing');

  const dtype = dtypeFlag(args, 'generate');
  const t0 = performance.now();
  const lm = await loadLM(path, { ...dtype, ...expertFlags(args, 'generate') });
  for (const w of lm.warnings) process.stderr.write(`moe: ${w}\n`);
  // the routed experts move to worker threads, stopped when the generation ends
  const workers = parallelExperts > 1 ? DecoderExpertParallel.attach(lm.model, { workers: parallelExperts }) : null;
  try {
    const tok: LoadedTokenizer | null = lm.tokenizerJson ? loadTokenizer(lm.tokenizerJson, lm.tokenizerConfig ?? {}) : null;
    const loadMs = performance.now() - t0;
    const V = lm.model.config.vocabSize;

    let promptIds: number[];
    if (promptIdsRaw !== undefined) {
      if (chat) throw new Error('generate: --chat needs --prompt TEXT (the template is text)');
      promptIds = parsePromptIds(promptIdsRaw);
    } else {
      if (!tok) throw new Error(`generate: ${path} has no tokenizer.json, so --prompt TEXT cannot be encoded; give --prompt-ids`);
      if (chat) {
        if (!tok.hasChatTemplate) throw new Error(`generate: --chat: ${path} has no chat_template in tokenizer_config.json`);
        promptIds = [...tok.encode(tok.applyChatTemplate([{ role: 'user', content: promptText! }], { addGenerationPrompt: true }))];
      } else {
        promptIds = [...tok.encode(promptText!, { addSpecialTokens: true })];
      }
    }
    if (tok && tok.vocabSize > V) process.stderr.write(`moe: the tokenizer has ${tok.vocabSize} ids, the model's vocabulary ${V}\n`);

    const stream = tok?.streamDecoder({ skipSpecialTokens: true }) ?? null;
    const routing = new Map<number, Array<{ layer: number; experts: number[]; weights: number[] }>>();
    const onRouting = (e: RoutingEvent): void => {
      const k = lm.model.config.topK;
      const T = e.expertIndices.length / k;
      for (let t = 0; t < T; t++) {
        const list = routing.get(e.start + t) ?? [];
        list.push({ layer: e.layer, experts: [...e.expertIndices.subarray(t * k, (t + 1) * k)], weights: [...e.expertWeights.subarray(t * k, (t + 1) * k)] });
        routing.set(e.start + t, list);
      }
    };
    const result = generate<KVCache>(lm.model, promptIds, {
      maxNewTokens,
      sampler: { temperature, topK, topP, seed },
      eosIds: tok?.eosIds.filter((id) => id < V) ?? [],
      bosId: tok?.bosId ?? null,
      ...(maxContext !== undefined ? { maxContext } : {}),
      onWarning: (m) => process.stderr.write(`moe: ${m}\n`),
      ...(showRouting ? { onRouting } : {}),
    }, (id, i) => {
      if (!json) process.stdout.write(stream ? stream.push(id) : `${i ? ' ' : ''}${id}`);
    });

    const text = tok ? tok.decode(result.ids, { skipSpecialTokens: true }) : '';
    if (json) {
      const out: Record<string, unknown> = {
        ids: [...result.ids],
        text,
        prefillTokensPerSec: result.prefillTokensPerSec,
        decodeTokensPerSec: result.decodeTokensPerSec,
      };
      if (showRouting) {
        const ordered = [...routing.keys()].sort((a, b) => a - b);
        out['routing'] = ordered.map((pos) => ({ position: pos, layers: routing.get(pos)! }));
      }
      console.log(JSON.stringify(out));
      return 0;
    }
    if (stream) process.stdout.write(stream.flush());
    process.stdout.write('\n');
    if (showRouting) {
      // per position: the token fed there and the experts it went to (the last new token is never fed)
      const all = [...result.promptIds, ...result.ids];
      const shown = (id: number): string => (tok ? JSON.stringify(tok.decode([id])) : String(id));
      for (const pos of [...routing.keys()].sort((a, b) => a - b)) {
        const parts = routing.get(pos)!.map((l) => `L${l.layer} ${l.experts.map((e, i) => `${e}:${l.weights[i]!.toFixed(2)}`).join(' ')}`);
        process.stderr.write(`[${pos}] ${shown(all[pos]!)}  ${parts.join(' | ')}\n`);
      }
    }
    const dec = result.decodeTokensPerSec;
    process.stderr.write(
      `moe: loaded in ${(loadMs / 1000).toFixed(2)} s; prefill ${result.promptIds.length} tokens at ${result.prefillTokensPerSec.toFixed(1)} tokens/s; ` +
      `decode ${Math.max(result.ids.length - 1, 0)} tokens at ${dec === null ? 'n/a' : dec.toFixed(1)} tokens/s; stop: ${result.stopReason}\n`,
    );
    if (lm.expertCache) process.stderr.write(`moe: ${expertCacheLine(lm.expertCache.stats(), result.promptIds.length + result.ids.length)}\n`);
    return 0;
  } finally {
    await workers?.close();
  }
}

