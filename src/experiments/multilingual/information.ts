// Mutual information of a contingency table, adjusted Rand index of two partitions, and
// average-linkage clustering of profiles: the measures of the specialisation study.
//
// No small, maintained npm package computes MI / ARI of count tables (there are Python ones), so
// these are written here from the definitions and tested against hand-computed cases. Clustering
// too: ml-hclust 4.0.0's group(K) loses items when merge heights tie (identical profiles, which
// tiny runs produce), and 46 items need only the plain O(n^3) algorithm.

function checkTable(t: readonly (readonly number[])[], where: string): number {
  if (t.length === 0) throw new Error(`${where}: the table has no rows`);
  const cols = t[0]!.length;
  t.forEach((r, i) => {
    if (r.length !== cols) throw new Error(`${where}: row ${i} has ${r.length} columns, row 0 has ${cols}`);
    r.forEach((v, j) => {
      if (!(Number.isFinite(v) && v >= 0)) throw new Error(`${where}: cell [${i}][${j}] = ${v} is not a non-negative count`);
    });
  });
  return cols;
}

/** Entropy in bits of counts (zeros ignored; 0 for an empty or single-outcome distribution). */
export function entropyBits(counts: readonly number[]): number {
  const n = counts.reduce((a, b) => a + b, 0);
  if (!(n > 0)) return 0;
  let h = 0;
  for (const c of counts) if (c > 0) h -= (c / n) * Math.log2(c / n);
  return h;
}

export interface MutualInformation {
  /** I(row; column) in bits. */
  mi: number;
  /** H(row), H(column) in bits. */
  hRow: number;
  hCol: number;
  /** 2 I / (H(row) + H(column)) (the "arithmetic" normalisation; 0 when both entropies are 0). */
  nmi: number;
  /** I / H(column): the share of the column's uncertainty (the expert choice) the row label removes. */
  uColGivenRow: number;
}

/** Mutual information of the joint distribution given by a count table [rows = labels][cols = experts]. */
export function mutualInformation(table: readonly (readonly number[])[]): MutualInformation {
  const cols = checkTable(table, 'mutualInformation');
  const rowSums = table.map((r) => r.reduce((a, b) => a + b, 0));
  const colSums = Array.from({ length: cols }, (_, j) => table.reduce((s, r) => s + r[j]!, 0));
  const n = rowSums.reduce((a, b) => a + b, 0);
  const hRow = entropyBits(rowSums);
  const hCol = entropyBits(colSums);
  let mi = 0;
  if (n > 0) {
    table.forEach((r, i) => r.forEach((c, j) => {
      if (c > 0) mi += (c / n) * Math.log2((c * n) / (rowSums[i]! * colSums[j]!));
    }));
  }
  mi = Math.max(0, mi); // rounding can leave -1e-16
  return { mi, hRow, hCol, nmi: hRow + hCol > 0 ? (2 * mi) / (hRow + hCol) : 0, uColGivenRow: hCol > 0 ? mi / hCol : 0 };
}

/** Sums the rows of a table by group: out[g] = sum of rows i with group[i] = g (groups 0..G-1). */
export function groupRows(table: readonly (readonly number[])[], group: ArrayLike<number>, G: number): number[][] {
  if (group.length !== table.length) throw new Error(`groupRows: ${group.length} group ids for ${table.length} rows`);
  const cols = table[0]?.length ?? 0;
  const out = Array.from({ length: G }, () => new Array<number>(cols).fill(0));
  table.forEach((r, i) => {
    const g = group[i]!;
    if (!(Number.isInteger(g) && g >= 0 && g < G)) throw new Error(`groupRows: group id ${g} of row ${i} is outside 0..${G - 1}`);
    r.forEach((v, j) => { out[g]![j]! += v; });
  });
  return out;
}

const choose2 = (n: number): number => (n * (n - 1)) / 2;

/** Adjusted Rand index (Hubert & Arabie 1985) of two labelings of the same items; 1 = identical partitions, ~0 = chance. */
export function adjustedRandIndex(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`adjustedRandIndex: the labelings have ${a.length} and ${b.length} items`);
  const n = a.length;
  if (n < 2) throw new Error(`adjustedRandIndex: needs at least 2 items, got ${n}`);
  const cells = new Map<string, number>();
  const ca = new Map<number, number>();
  const cb = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const key = `${a[i]},${b[i]}`;
    cells.set(key, (cells.get(key) ?? 0) + 1);
    ca.set(a[i]!, (ca.get(a[i]!) ?? 0) + 1);
    cb.set(b[i]!, (cb.get(b[i]!) ?? 0) + 1);
  }
  let index = 0;
  for (const v of cells.values()) index += choose2(v);
  let sa = 0;
  for (const v of ca.values()) sa += choose2(v);
  let sb = 0;
  for (const v of cb.values()) sb += choose2(v);
  const expected = (sa * sb) / choose2(n);
  const max = (sa + sb) / 2;
  // both partitions all-singletons or both one cluster: identical, and the formula is 0/0
  if (max === expected) return 1;
  return (index - expected) / (max - expected);
}

/** Jensen-Shannon divergence in bits of two distributions given as non-negative weights (normalised here). */
export function jensenShannon(p: readonly number[], q: readonly number[]): number {
  if (p.length !== q.length) throw new Error(`jensenShannon: lengths ${p.length} and ${q.length} differ`);
  const sp = p.reduce((a, b) => a + b, 0);
  const sq = q.reduce((a, b) => a + b, 0);
  if (!(sp > 0 && sq > 0)) throw new Error('jensenShannon: a distribution has zero mass');
  let d = 0;
  for (let i = 0; i < p.length; i++) {
    const a = p[i]! / sp;
    const b = q[i]! / sq;
    const m = (a + b) / 2;
    if (a > 0) d += 0.5 * a * Math.log2(a / m);
    if (b > 0) d += 0.5 * b * Math.log2(b / m);
  }
  return Math.max(0, d);
}

/**
 * Average-linkage clustering of profiles (rows) under Jensen-Shannon divergence, cut into K
 * clusters; returns the cluster id of each row (0..K-1, numbered by first row).
 */
export function clusterProfiles(profiles: readonly (readonly number[])[], K: number): Int32Array {
  const n = profiles.length;
  if (!(Number.isInteger(K) && K >= 1 && K <= n)) throw new Error(`clusterProfiles: K must be an integer in [1, ${n}], got ${K}`);
  if (n === 1) return Int32Array.of(0);
  const dist = profiles.map((p) => profiles.map((q) => jensenShannon(p, q)));
  // average linkage (UPGMA): merge the two clusters of least mean pairwise distance until K remain;
  // ties go to the pair found first, so the result is deterministic
  let clusters: number[][] = profiles.map((_, i) => [i]);
  while (clusters.length > K) {
    let best = [0, 1];
    let bestD = Infinity;
    for (let a = 0; a < clusters.length; a++) {
      for (let b = a + 1; b < clusters.length; b++) {
        let d = 0;
        for (const i of clusters[a]!) for (const j of clusters[b]!) d += dist[i]![j]!;
        d /= clusters[a]!.length * clusters[b]!.length;
        if (d < bestD) { bestD = d; best = [a, b]; }
      }
    }
    const [a, b] = best as [number, number];
    clusters = [...clusters.filter((_, i) => i !== a && i !== b), [...clusters[a]!, ...clusters[b]!]];
  }
  const raw = new Int32Array(n).fill(-1);
  clusters.forEach((c, g) => { for (const i of c) raw[i] = g; });
  const renumber = new Map<number, number>();
  return raw.map((g) => {
    if (!renumber.has(g)) renumber.set(g, renumber.size);
    return renumber.get(g)!;
  });
}
