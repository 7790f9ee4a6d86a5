// Which experts were rarely trained (from the recorded training token counts), and how much of some routing reaches them.
//
// Definition: in MoE layer l with E experts, expert e's training share is
//   s(l, e) = count(l, e) / sum_e' count(l, e')
// and e is *rarely trained* when s(l, e) < threshold / E, i.e. it saw less than `threshold` times
// what it would have under perfectly uniform routing (default 0.25: under a quarter of its fair
// share). A layer whose counts are all zero has no defined shares and is not tracked.
//
// Units (the same as moe_expert_tokens_total's): a *routed token* is one (token, MoE layer,
// chosen expert) assignment, so a token makes k routed tokens per MoE layer. The rare share of
// some routing is rare routed tokens / routed tokens; a token is a *rare token* when at least one
// MoE layer routes it to at least one rarely trained expert.

import type { ExpertTokenCounts } from '../models/expert-token-counts.js';

export const DEFAULT_RARE_THRESHOLD = 0.25;

/** How much of some routing reached rarely trained experts. */
export interface RareTally {
  /** Tokens (positions) routed. */
  tokens: number;
  /** Of them, tokens routed to a rarely trained expert in at least one MoE layer. */
  rareTokens: number;
  /** Routed tokens: (token, tracked MoE layer, chosen expert) assignments. */
  routed: number;
  /** Of them, assignments to rarely trained experts. */
  rareRouted: number;
}

export const emptyTally = (): RareTally => ({ tokens: 0, rareTokens: 0, routed: 0, rareRouted: 0 });

export function addTally(into: RareTally, t: RareTally): void {
  into.tokens += t.tokens;
  into.rareTokens += t.rareTokens;
  into.routed += t.routed;
  into.rareRouted += t.rareRouted;
}

/** rareRouted / routed (0 when nothing was routed). */
export const rareShare = (t: RareTally): number => (t.routed > 0 ? t.rareRouted / t.routed : 0);

export function checkThreshold(threshold: number, where: string): number {
  if (typeof threshold !== 'number' || !(threshold > 0 && threshold <= 1)) {
    throw new Error(`${where}: the rare-expert threshold must be a number in (0, 1] (a fraction of the uniform share 1/E), got ${String(threshold)}`);
  }
  return threshold;
}

/** The rarely trained experts of a model, per layer, from its recorded counts. */
export class RareExperts {
  readonly threshold: number;
  readonly numExperts: number;
  readonly topK: number;
  /** Per decoder layer: 1 for a rarely trained expert; null for a dense or untracked (all-zero) layer. */
  readonly rare: ReadonlyArray<Uint8Array | null>;
  /** Per decoder layer: each expert's training share, or null as above. */
  readonly shares: ReadonlyArray<Float64Array | null>;

  constructor(counts: ExpertTokenCounts, opts: { numExperts: number; topK: number; threshold?: number }) {
    this.threshold = checkThreshold(opts.threshold ?? DEFAULT_RARE_THRESHOLD, 'RareExperts');
    this.numExperts = opts.numExperts;
    this.topK = opts.topK;
    if (!(Number.isInteger(opts.topK) && opts.topK >= 1 && opts.topK <= opts.numExperts)) throw new Error(`RareExperts: topK must be an integer in [1, ${opts.numExperts}], got ${opts.topK}`);
    const E = opts.numExperts;
    const shares: Array<Float64Array | null> = [];
    const rare: Array<Uint8Array | null> = [];
    counts.layers.forEach((layer, l) => {
      if (layer !== null && layer.length !== E) throw new Error(`RareExperts: layer ${l} has ${layer.length} counts, expected ${E}`);
      const total = layer === null ? 0 : layer.reduce((a, b) => a + b, 0);
      if (layer === null || total === 0) {
        shares.push(null);
        rare.push(null);
        return;
      }
      const s = Float64Array.from(layer, (c) => c / total);
      shares.push(s);
      rare.push(Uint8Array.from(s, (x) => (x < this.threshold / E ? 1 : 0)));
    });
    this.shares = shares;
    this.rare = rare;
  }

  /** Layers with defined shares (MoE layers whose counts are not all zero). */
  get trackedLayers(): number[] {
    return this.rare.flatMap((r, l) => (r ? [l] : []));
  }

  /** How many experts of layer l are rarely trained (0 for an untracked layer). */
  rareCount(l: number): number {
    const r = this.rare[l];
    return r ? r.reduce((a, b) => a + b, 0) : 0;
  }

  isRare(l: number, e: number): boolean {
    return this.rare[l]?.[e] === 1;
  }

  /**
   * The tally of one forward's routing over T tokens: routing[l] is layer l's expert indices
   * [T, k] row-major as MoEDecoder.onRouting reports them (null or absent for other layers).
   * Untracked layers count neither as routed nor as rare.
   */
  tally(routing: ReadonlyArray<Int32Array | null | undefined>, T: number): RareTally {
    const k = this.topK;
    const rowRare = new Uint8Array(T);
    let routed = 0;
    let rareRouted = 0;
    this.rare.forEach((r, l) => {
      const idx = routing[l];
      if (!r) return;
      if (!idx) throw new Error(`RareExperts.tally: no routing given for MoE layer ${l}`);
      if (idx.length !== T * k) throw new Error(`RareExperts.tally: layer ${l} routing has ${idx.length} entries, expected T * k = ${T} * ${k}`);
      routed += idx.length;
      for (let i = 0; i < idx.length; i++) {
        if (r[idx[i]!] === 1) {
          rareRouted++;
          rowRare[(i / k) | 0] = 1;
        }
      }
    });
    return { tokens: T, rareTokens: rowRare.reduce((a, b) => a + b, 0), routed, rareRouted };
  }
}
