// What the routing of one run says about specialisation: mutual information of expert choice with
// language, family, genus, script and byte class per layer; each expert's dominant labels;
// clusters of languages by routing against families (ARI); routing similarity of related languages.

import type { MultilingualCorpus } from '../../data/multilingual-corpus.js';
import { labelIds } from '../../data/multilingual-corpus.js';
import { Rng } from '../../tensor/rng.js';
import { BYTE_CLASSES } from './byte-classes.js';
import { adjustedRandIndex, clusterProfiles, groupRows, jensenShannon, mutualInformation, type MutualInformation } from './information.js';
import type { RoutingTables, RunRecord } from './routed-lm.js';

export const LABELS = ['language', 'family', 'genus', 'script', 'byteClass'] as const;
export type Label = (typeof LABELS)[number];

export interface ExpertProfile {
  expert: number;
  /** Share of all validation assignments of the layer. */
  load: number;
  topLanguage: string;
  /** Share of the expert's assignments from its top language / family / script / byte class ... */
  topLanguageShare: number;
  topFamily: string;
  topFamilyShare: number;
  /** ... and that label's share of all assignments (what the expert would get by chance). */
  topFamilyBase: number;
  topScript: string;
  topScriptShare: number;
  topScriptBase: number;
  topClass: string;
  topClassShare: number;
  topClassBase: number;
}

export interface LayerSpecialisation {
  layer: number;
  /** After training, and before (the untrained router: what byte identity alone gives). */
  final: Record<Label, MutualInformation>;
  init: Record<Label, MutualInformation>;
  /** Miller-Madow estimate of MI's upward bias from finite counts, (R-1)(C-1) / (2 N ln 2) bits. */
  biasBits: Record<Label, number>;
  /** Among Latin-script languages only (script held fixed): MI with genus and family. */
  latin: { genus: MutualInformation; family: MutualInformation };
  experts: ExpertProfile[];
}

export interface ClusterAgreement {
  K: number;
  ari: number;
  /** ARI of the same clusters against randomly permuted labels: mean and 95th percentile. */
  nullMean: number;
  null95: number;
}

export interface Specialisation {
  layers: LayerSpecialisation[];
  /** Languages clustered by routing profile (average linkage, Jensen-Shannon), K = number of labels. */
  clusters: { family: ClusterAgreement; genus: ClusterAgreement; script: ClusterAgreement; latinGenus: ClusterAgreement };
  /** Mean JS divergence (bits) of routing profiles between language pairs. */
  sharing: {
    latinSameGenus: number; latinOtherGenus: number; latinPermutationP: number;
    sameScript: number; otherScript: number;
  };
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

function labelTable(t: RoutingTables, layer: number, corpus: MultilingualCorpus, label: Label): number[][] {
  const lang = t.language[layer]!;
  if (label === 'language') return lang;
  if (label === 'byteClass') return t.byteClass[layer]!;
  const names = label === 'family' ? corpus.families : label === 'genus' ? corpus.genera : corpus.scripts;
  return groupRows(lang, labelIds(corpus, label), names.length);
}

function allMI(t: RoutingTables, layer: number, corpus: MultilingualCorpus): Record<Label, MutualInformation> {
  return Object.fromEntries(LABELS.map((k) => [k, mutualInformation(labelTable(t, layer, corpus, k))])) as Record<Label, MutualInformation>;
}

function bias(table: number[][]): number {
  const R = table.filter((r) => sum(r) > 0).length;
  const C = table[0]!.map((_, j) => sum(table.map((r) => r[j]!))).filter((c) => c > 0).length;
  const N = sum(table.map(sum));
  return N > 0 ? ((R - 1) * (C - 1)) / (2 * N * Math.LN2) : 0;
}

function argmaxShare(col: number[], names: readonly string[]): { name: string; share: number; index: number } {
  const tot = sum(col);
  let best = 0;
  col.forEach((v, i) => { if (v > col[best]!) best = i; });
  return { name: names[best]!, share: tot > 0 ? col[best]! / tot : 0, index: best };
}

function expertProfiles(t: RoutingTables, layer: number, corpus: MultilingualCorpus): ExpertProfile[] {
  const tables = Object.fromEntries(LABELS.map((k) => [k, labelTable(t, layer, corpus, k)])) as Record<Label, number[][]>;
  const E = tables.language[0]!.length;
  const total = sum(tables.language.map(sum));
  const column = (tab: number[][], e: number) => tab.map((r) => r[e]!);
  const base = (tab: number[][], i: number) => sum(tab[i]!) / sum(tab.map(sum));
  return Array.from({ length: E }, (_, e) => {
    const lang = argmaxShare(column(tables.language, e), corpus.languages.map((l) => l.code));
    const fam = argmaxShare(column(tables.family, e), corpus.families);
    const scr = argmaxShare(column(tables.script, e), corpus.scripts);
    const cls = argmaxShare(column(tables.byteClass, e), BYTE_CLASSES);
    return {
      expert: e, load: total > 0 ? sum(column(tables.language, e)) / total : 0,
      topLanguage: lang.name, topLanguageShare: lang.share,
      topFamily: fam.name, topFamilyShare: fam.share, topFamilyBase: base(tables.family, fam.index),
      topScript: scr.name, topScriptShare: scr.share, topScriptBase: base(tables.script, scr.index),
      topClass: cls.name, topClassShare: cls.share, topClassBase: base(tables.byteClass, cls.index),
    };
  });
}

/** Each language's routing profile: P(expert | language) per layer, concatenated (layers weigh equally). */
export function routingProfiles(t: RoutingTables): number[][] {
  const L = t.language[0]!.length;
  return Array.from({ length: L }, (_, l) => t.language.flatMap((layer) => {
    const row = layer[l]!;
    const s = sum(row);
    return row.map((v) => (s > 0 ? v / s : 1 / row.length));
  }));
}

function agreement(clusters: Int32Array, labels: Int32Array, rng: Rng, perms = 500): ClusterAgreement {
  const ari = adjustedRandIndex(clusters, labels);
  const nulls: number[] = [];
  const shuffled = Int32Array.from(labels);
  for (let p = 0; p < perms; p++) {
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    nulls.push(adjustedRandIndex(clusters, shuffled));
  }
  nulls.sort((a, b) => a - b);
  return { K: new Set(labels).size, ari, nullMean: sum(nulls) / perms, null95: nulls[Math.floor(0.95 * (perms - 1))]! };
}

const dense = (xs: ArrayLike<number>): Int32Array => {
  const m = new Map<number, number>();
  return Int32Array.from(xs, (x) => {
    if (!m.has(x)) m.set(x, m.size);
    return m.get(x)!;
  });
};

function meanPairJS(profiles: number[][], idx: number[], same: (a: number, b: number) => boolean): { same: number; other: number } {
  let s = 0; let ns = 0; let o = 0; let no = 0;
  for (let i = 0; i < idx.length; i++) {
    for (let j = i + 1; j < idx.length; j++) {
      const d = jensenShannon(profiles[idx[i]!]!, profiles[idx[j]!]!);
      if (same(idx[i]!, idx[j]!)) { s += d; ns++; } else { o += d; no++; }
    }
  }
  return { same: ns > 0 ? s / ns : NaN, other: no > 0 ? o / no : NaN };
}

export function specialisationOf(run: RunRecord, corpus: MultilingualCorpus): Specialisation {
  const layers = run.final.language.length;
  const rng = new Rng(12345);
  const out: LayerSpecialisation[] = [];
  const latinIdx = corpus.languages.filter((l) => l.script === 'Latn').map((l) => l.id);
  for (let layer = 0; layer < layers; layer++) {
    const latinRows = latinIdx.map((i) => run.final.language[layer]![i]!);
    const latinLabel = (k: 'genus' | 'family') => {
      const ids = dense(latinIdx.map((i) => labelIds(corpus, k)[i]!));
      return mutualInformation(groupRows(latinRows, ids, new Set(ids).size));
    };
    out.push({
      layer, final: allMI(run.final, layer, corpus), init: allMI(run.init, layer, corpus),
      biasBits: Object.fromEntries(LABELS.map((k) => [k, bias(labelTable(run.final, layer, corpus, k))])) as Record<Label, number>,
      latin: { genus: latinLabel('genus'), family: latinLabel('family') },
      experts: expertProfiles(run.final, layer, corpus),
    });
  }
  const profiles = routingProfiles(run.final);
  const cluster = (label: 'family' | 'genus' | 'script', idx: number[]) => {
    const labels = dense(idx.map((i) => labelIds(corpus, label)[i]!));
    const K = new Set(labels).size;
    return agreement(clusterProfiles(idx.map((i) => profiles[i]!), K), labels, rng);
  };
  const all = corpus.languages.map((l) => l.id);
  const genus = labelIds(corpus, 'genus');
  const script = labelIds(corpus, 'script');
  const latin = meanPairJS(profiles, latinIdx, (a, b) => genus[a] === genus[b]);
  // permutation test: is within-genus routing closer than between-genus, beyond chance?
  let extreme = 0;
  const perms = 1000;
  const g = latinIdx.map((i) => genus[i]!);
  const observed = latin.other - latin.same;
  for (let p = 0; p < perms; p++) {
    const sh = [...g];
    for (let i = sh.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [sh[i], sh[j]] = [sh[j]!, sh[i]!];
    }
    const pos = new Map(latinIdx.map((id, k) => [id, sh[k]!]));
    const r = meanPairJS(profiles, latinIdx, (a, b) => pos.get(a) === pos.get(b));
    if (r.other - r.same >= observed) extreme++;
  }
  const scr = meanPairJS(profiles, all, (a, b) => script[a] === script[b]);
  return {
    layers: out,
    clusters: {
      family: cluster('family', all), genus: cluster('genus', all), script: cluster('script', all),
      latinGenus: latinIdx.length >= 3 ? cluster('genus', latinIdx) : { K: 0, ari: NaN, nullMean: NaN, null95: NaN },
    },
    sharing: { latinSameGenus: latin.same, latinOtherGenus: latin.other, latinPermutationP: Number.isFinite(observed) ? (extreme + 1) / (perms + 1) : NaN, sameScript: scr.same, otherScript: scr.other },
  };
}
