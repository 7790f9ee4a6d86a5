// The generation loop: prefill the prompt in one forward, then one cached forward per new token.

import type { Tensor } from '../tensor/tensor.js';
import { Sampler, type SamplerOptions } from './sampler.js';

/** What the loop needs of a cache: MoEDecoder's KVCache fits. */
export interface GenerationCache {
  readonly length: number;
  readonly maxLen: number;
}

export type RoutingHook = (layer: number, expertIndices: Int32Array, expertWeights: Float32Array) => void;

/** What the loop needs of a model: MoEDecoder fits (forward gives logits [T, V] of the new ids). */
export interface GenerationModel<C extends GenerationCache = GenerationCache> {
  readonly config: { readonly vocabSize: number; readonly maxPositionEmbeddings: number };
  newCache(maxLen: number): C;
  /** NoInfer: the cache type comes from newCache, so generate(model, ...) needs no type argument. */
  forward(ids: Int32Array, cache: NoInfer<C>): Tensor;
  onRouting?: RoutingHook | undefined;
}

/** One forward's routing in one MoE layer: positions start .. start + T - 1, k experts each. */
export interface RoutingEvent {
  /** Position of the first token of this forward (0 for the prefill). */
  start: number;
  layer: number;
  /** [T, k] expert ids. */
  expertIndices: Int32Array;
  /** [T, k] their gate weights. */
  expertWeights: Float32Array;
}

export interface GenerateOptions {
  maxNewTokens: number;
  /** A Sampler, or options for one (default greedy). */
  sampler?: Sampler | SamplerOptions;
  /** Generation stops after any of these ids (which is kept in the output). */
  eosIds?: readonly number[];
  /** Used as the prompt when the prompt is empty. */
  bosId?: number | null;
  /** Longest context (prompt + new tokens) the cache holds; default and upper bound: the model's maxPositionEmbeddings. */
  maxContext?: number;
  /** A prompt that does not fit: 'error' (default) refuses it; 'left' keeps its last tokens and warns. */
  truncate?: 'error' | 'left';
  /** Warnings (a truncated prompt, a context that ends generation early); default: ignored. */
  onWarning?: (message: string) => void;
  onRouting?: (event: RoutingEvent) => void;
}

export interface GenerateResult {
  /** The prompt ids actually used (after BOS or truncation). */
  promptIds: Int32Array;
  /** The new ids, EOS included when it ended generation. */
  ids: Int32Array;
  stopReason: 'eos' | 'max-tokens' | 'context';
  prefillMs: number;
  /** Time of the decode steps (every new token after the first). */
  decodeMs: number;
  prefillTokensPerSec: number;
  /** null when fewer than two tokens were generated (no decode step to time). */
  decodeTokensPerSec: number | null;
}

/**
 * Generates up to maxNewTokens ids after promptIds. onToken sees each new id as soon as it is
 * chosen (with its index among the new ids). The model's onRouting is restored afterwards.
 */
export function generate<C extends GenerationCache>(
  model: GenerationModel<C>, promptIds: ArrayLike<number>, opts: GenerateOptions, onToken?: (id: number, index: number) => void,
): GenerateResult {
  const n = opts.maxNewTokens;
  if (!(Number.isInteger(n) && n >= 0)) throw new Error(`generate: maxNewTokens must be a non-negative integer, got ${n}`);
  const V = model.config.vocabSize;
  const limit = model.config.maxPositionEmbeddings;
  const maxContext = opts.maxContext ?? limit;
  if (!(Number.isInteger(maxContext) && maxContext >= 1)) throw new Error(`generate: maxContext must be a positive integer, got ${maxContext}`);
  if (maxContext > limit) throw new Error(`generate: maxContext ${maxContext} exceeds the model's maxPositionEmbeddings = ${limit}`);
  const eos = new Set(opts.eosIds ?? []);
  for (const id of eos) if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new Error(`generate: eos id ${id} is outside the vocabulary [0, ${V})`);
  const sampler = opts.sampler instanceof Sampler ? opts.sampler : new Sampler(opts.sampler ?? {});

  let prompt = Int32Array.from(promptIds);
  if (prompt.length === 0) {
    const bos = opts.bosId;
    if (bos === undefined || bos === null) throw new Error('generate: the prompt is empty and the tokenizer has no BOS token to start from; give at least one token');
    prompt = Int32Array.of(bos);
  }
  prompt.forEach((id, i) => {
    if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new Error(`generate: prompt id ${id} at position ${i} is outside the vocabulary [0, ${V})`);
  });
  if (prompt.length > maxContext) {
    if (opts.truncate !== 'left') {
      throw new Error(`generate: the prompt has ${prompt.length} tokens, more than the context of ${maxContext} (use a shorter prompt, a larger context, or truncation)`);
    }
    // keep room for the new tokens, but never less than half the context of prompt
    const keep = Math.max(Math.ceil(maxContext / 2), maxContext - n);
    opts.onWarning?.(`generate: prompt of ${prompt.length} tokens cut to its last ${keep} to fit the context of ${maxContext}`);
    prompt = prompt.slice(prompt.length - keep);
  }
  // the last new token is never fed back, so prompt + n - 1 positions suffice
  const capacity = Math.min(maxContext, prompt.length + Math.max(n - 1, 0));
  if (n > 0 && prompt.length + n - 1 > maxContext) {
    opts.onWarning?.(`generate: the context of ${maxContext} tokens leaves room for ${maxContext - prompt.length + 1} new tokens, not ${n}`);
  }

  const out: number[] = [];
  let stopReason: GenerateResult['stopReason'] = 'max-tokens';
  let prefillMs = 0;
  let decodeMs = 0;
  const previousHook = model.onRouting;
  let start = 0;
  if (opts.onRouting) {
    const cb = opts.onRouting;
    model.onRouting = (layer, expertIndices, expertWeights) => cb({ start, layer, expertIndices, expertWeights });
  }
  try {
    if (n > 0) {
      const cache = model.newCache(Math.max(capacity, 1));
      const emit = (logits: Tensor): boolean => {
        const T = logits.shape[0]!;
        if (logits.rank !== 2 || logits.shape[1] !== V) throw new Error(`generate: the model returned logits [${logits.shape.join(', ')}], expected [T, ${V}]`);
        const id = sampler.sample(logits.data as Float32Array, (T - 1) * V, V);
        out.push(id);
        onToken?.(id, out.length - 1);
        if (eos.has(id)) { stopReason = 'eos'; return false; }
        if (out.length >= n) return false;
        if (cache.length >= cache.maxLen) { stopReason = 'context'; return false; }
        return true;
      };
      let t0 = performance.now();
      let more = emit(model.forward(prompt, cache));
      prefillMs = performance.now() - t0;
      t0 = performance.now();
      const step = new Int32Array(1);
      while (more) {
        start = cache.length;
        step[0] = out[out.length - 1]!;
        more = emit(model.forward(step, cache));
      }
      decodeMs = performance.now() - t0;
    }
  } finally {
    model.onRouting = previousHook;
  }
  const decodeSteps = out.length - 1;
  return {
    promptIds: prompt,
    ids: Int32Array.from(out),
    stopReason,
    prefillMs,
    decodeMs,
    prefillTokensPerSec: prefillMs > 0 ? (prompt.length * 1000) / prefillMs : 0,
    decodeTokensPerSec: decodeSteps > 0 && decodeMs > 0 ? (decodeSteps * 1000) / decodeMs : null,
  };
}
