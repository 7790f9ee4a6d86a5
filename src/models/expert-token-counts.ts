// Per-expert training token counts of a MoEDecoder: recorded from the routing while it trains, kept in its config.json.
//
// Stored under config.json's `moe_ts.expert_token_counts` = { tokens, layers }: `tokens` is the
// number of training tokens (positions) that went through the model, `layers[l]` the number of
// those tokens routed to each expert of MoE layer l (a token counts once for each of its k
// experts, so a layer's counts sum to k * tokens under top-k routing) and null for a dense
// layer. JSON numbers carry counts exactly up to 2^53; a tensor in the safetensors file would
// not (a model written in F16/BF16 would round or overflow it), and HF transformers keeps
// unknown config keys as attributes, so the file stays loadable everywhere. A GGUF written by
// `moe convert` does not carry the counts (its metadata is built from the config's known fields).

import type { HFConfig } from '../formats/hf/config.js';
import { decoderConfigToHF, isSparseLayer, type MoEDecoderConfig } from './moe-decoder-config.js';
import type { MoEDecoder, RoutingHook } from './moe-decoder.js';

/** The config.json section that holds moe-ts's own metadata, and the key of the counts in it. */
export const MOE_TS_KEY = 'moe_ts';
export const COUNTS_KEY = 'expert_token_counts';

export interface ExpertTokenCounts {
  /** Training tokens (positions) routed through the model. */
  tokens: number;
  /** Per decoder layer: tokens routed to each expert ([E]), or null for a dense layer. */
  layers: Array<number[] | null>;
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

/**
 * The counts recorded in a config.json, checked against the model's config; null when there are
 * none (a model trained elsewhere, or before counts were recorded). Malformed counts are an error
 * naming the file and the field: silently ignoring them would hide a broken checkpoint.
 */
export function readExpertTokenCounts(config: HFConfig | null, c: MoEDecoderConfig, file = 'config.json'): ExpertTokenCounts | null {
  const section = config?.[MOE_TS_KEY];
  if (section === undefined || section === null || typeof section !== 'object' || Array.isArray(section)) return null;
  const raw = (section as Record<string, unknown>)[COUNTS_KEY];
  if (raw === undefined || raw === null) return null;
  const field = `${MOE_TS_KEY}.${COUNTS_KEY}`;
  const fail = (what: string): never => { throw new Error(`${file}: ${field}${what}`); };
  if (typeof raw !== 'object' || Array.isArray(raw)) fail(' must be an object { tokens, layers }');
  const r = raw as Record<string, unknown>;
  if (!isCount(r['tokens'])) fail(`.tokens = ${JSON.stringify(r['tokens'])} must be a non-negative integer`);
  const layers = r['layers'];
  if (!Array.isArray(layers) || layers.length !== c.numLayers) {
    fail(`.layers must be a list of ${c.numLayers} entries (one per decoder layer), got ${Array.isArray(layers) ? `${layers.length} entries` : JSON.stringify(layers)}`);
  }
  const out: Array<number[] | null> = (layers as unknown[]).map((entry, l) => {
    if (!isSparseLayer(c, l)) {
      if (entry !== null) fail(`.layers[${l}] must be null: layer ${l} is a dense layer`);
      return null;
    }
    if (!Array.isArray(entry) || entry.length !== c.numExperts) {
      fail(`.layers[${l}] must be a list of ${c.numExperts} counts (one per expert), got ${Array.isArray(entry) ? `${entry.length} values` : JSON.stringify(entry)}`);
    }
    const bad = (entry as unknown[]).findIndex((x) => !isCount(x));
    if (bad >= 0) fail(`.layers[${l}][${bad}] = ${JSON.stringify((entry as unknown[])[bad])} must be a non-negative integer`);
    return (entry as number[]).slice();
  });
  return { tokens: r['tokens'] as number, layers: out };
}

/** A copy of config with the counts set (every other key kept as it was). */
export function withExpertTokenCounts(config: HFConfig, counts: ExpertTokenCounts): HFConfig {
  const prev = config[MOE_TS_KEY];
  const section = prev !== null && typeof prev === 'object' && !Array.isArray(prev) ? { ...(prev as Record<string, unknown>) } : {};
  section[COUNTS_KEY] = { tokens: counts.tokens, layers: counts.layers.map((l) => (l === null ? null : l.slice())) };
  return { ...config, [MOE_TS_KEY]: section };
}

/** The counts a model carries (in model.hfConfig, which toHF writes out and fromHF reads back), or null. */
export function expertTokenCountsOf(model: MoEDecoder, file = 'config.json'): ExpertTokenCounts | null {
  return readExpertTokenCounts(model.hfConfig, model.config, file);
}

/** Records counts in the model's config.json (written by toHF / writeHFDir with the weights). */
export function setExpertTokenCounts(model: MoEDecoder, counts: ExpertTokenCounts): void {
  const config = withExpertTokenCounts(model.hfConfig ?? decoderConfigToHF(model.config), counts);
  readExpertTokenCounts(config, model.config, 'setExpertTokenCounts'); // the same checks as a load
  model.hfConfig = config;
}

/**
 * Counts routing as it happens: attach it to a model while it trains (every training forward
 * passes its routing to the hook). Starts from earlier counts when given, so a resumed run adds up.
 */
export class ExpertTokenCounter {
  private readonly layers: Array<Float64Array | null>;
  private readonly firstSparse: number;
  private tokenCount = 0;

  constructor(private readonly config: MoEDecoderConfig, start: ExpertTokenCounts | null = null) {
    this.layers = Array.from({ length: config.numLayers }, (_, l) => (isSparseLayer(config, l) ? new Float64Array(config.numExperts) : null));
    this.firstSparse = this.layers.findIndex((l) => l !== null);
    if (start) {
      if (start.layers.length !== config.numLayers) throw new Error(`ExpertTokenCounter: start counts have ${start.layers.length} layers, the model has ${config.numLayers}`);
      start.layers.forEach((l, i) => { if (l && this.layers[i]) this.layers[i]!.set(l); });
      this.tokenCount = start.tokens;
    }
  }

  /** A RoutingHook: expertIndices [T, k] of one MoE layer of one forward. */
  readonly hook: RoutingHook = (layer, expertIndices) => {
    const counts = this.layers[layer];
    if (!counts) throw new Error(`ExpertTokenCounter: routing reported for layer ${layer}, which is not a MoE layer of this model`);
    const E = counts.length;
    for (let i = 0; i < expertIndices.length; i++) {
      const e = expertIndices[i]!;
      if (!(e >= 0 && e < E)) throw new Error(`ExpertTokenCounter: layer ${layer} routed a token to expert ${e}, outside [0, ${E})`);
      counts[e]! += 1;
    }
    // tokens counted once, at the first MoE layer (every token passes every layer)
    if (layer === this.firstSparse) this.tokenCount += expertIndices.length / this.config.topK;
  };

  /** Chains the hook onto the model's own (if any); returns a function that restores the previous hook. */
  attach(model: MoEDecoder): () => void {
    const prev = model.onRouting;
    model.onRouting = prev ? (l, e, w) => { prev(l, e, w); this.hook(l, e, w); } : this.hook;
    return () => { model.onRouting = prev; };
  }

  counts(): ExpertTokenCounts {
    return { tokens: Math.round(this.tokenCount), layers: this.layers.map((l) => (l ? Array.from(l) : null)) };
  }
}
