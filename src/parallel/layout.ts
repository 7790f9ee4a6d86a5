// The all-to-all layout of one expert-parallel exchange: which token rows each rank sends to each
// other rank, and where they sit in the shared send buffer. Pure functions, used by the main
// thread, the workers and the simulator (bytes per link), so all three agree by construction.
//
// Ranks: N. Rank r holds the token shard [shardStart[r], shardStart[r+1]) (contiguous, as a
// data-parallel split) and owns experts [expertStart[r], expertStart[r+1]). Rows are the kept
// assignments in the dispatch plan's order (grouped by expert; within an expert in whatever order
// the router gave: token order for most, score order for expert choice). Each row has a send slot
// (slotOfRow), r-major; the expert side reads its rows back in plan order, so every expert sees
// the rows in the order one process gives it, and the results match bit for bit.

export interface ExchangeLayout {
  /** Ranks N. */
  ranks: number;
  /** Experts E. */
  experts: number;
  /** Tokens T. */
  tokens: number;
  /** First token of each rank's shard [N + 1]. */
  shardStart: Int32Array;
  /** First expert of each rank [N + 1]. */
  expertStart: Int32Array;
  /** First row of each expert's group in plan order [E + 1]. */
  groupStart: Int32Array;
  /** Rows that shard r sends to expert e, [N * E] indexed r * E + e. */
  count: Int32Array;
  /** Send slot of each plan row [A']: its source shard r's block, expert e, then plan order. */
  slotOfRow: Int32Array;
  /** Plan row of each send slot [A'] (the inverse of slotOfRow). */
  rowOfSlot: Int32Array;
  /**
   * Slot of the first row of (r, e) in the send buffer, [N * E + 1], r-major: rank r's rows for
   * all experts are one contiguous block in expert order (so the combine reads it in one pass).
   */
  sendOffset: Int32Array;
}

/** Splits n items into `parts` contiguous runs as even as possible: [parts + 1] boundaries. */
export function evenSplit(n: number, parts: number): Int32Array {
  const out = new Int32Array(parts + 1);
  for (let p = 0; p <= parts; p++) out[p] = Math.floor((p * n) / parts);
  return out;
}

/** The rank whose contiguous run (boundaries from evenSplit) holds item i. */
export function ownerOf(bounds: Int32Array, i: number): number {
  let lo = 0;
  let hi = bounds.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (bounds[mid]! <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * The layout for tokenOfRow [A'] and groupSizes [E] (a dispatch plan's) over `ranks` ranks and
 * `tokens` tokens. Throws if a row's token is out of range.
 */
export function exchangeLayout(tokenOfRow: Int32Array, groupSizes: Int32Array, tokens: number, ranks: number): ExchangeLayout {
  const E = groupSizes.length;
  const N = ranks;
  if (!Number.isInteger(N) || N < 1) throw new Error(`exchangeLayout: ranks = ${N} must be a positive integer`);
  if (N > E) throw new Error(`exchangeLayout: ${N} ranks for ${E} experts (each rank needs at least one expert)`);
  const shardStart = evenSplit(tokens, N);
  const expertStart = evenSplit(E, N);
  const groupStart = new Int32Array(E + 1);
  for (let e = 0; e < E; e++) groupStart[e + 1] = groupStart[e]! + groupSizes[e]!;
  if (groupStart[E] !== tokenOfRow.length) throw new Error(`exchangeLayout: group sizes sum to ${groupStart[E]}, but there are ${tokenOfRow.length} rows`);
  const A = tokenOfRow.length;
  const count = new Int32Array(N * E);
  const srcOfRow = new Int32Array(A);
  for (let e = 0; e < E; e++) {
    for (let g = groupStart[e]!; g < groupStart[e + 1]!; g++) {
      const t = tokenOfRow[g]!;
      if (!(t >= 0 && t < tokens)) throw new Error(`exchangeLayout: row ${g} names token ${t}, outside [0, ${tokens})`);
      const r = ownerOf(shardStart, t);
      srcOfRow[g] = r;
      count[r * E + e]!++;
    }
  }
  const sendOffset = new Int32Array(N * E + 1);
  for (let i = 0; i < N * E; i++) sendOffset[i + 1] = sendOffset[i]! + count[i]!;
  const slotOfRow = new Int32Array(A);
  const rowOfSlot = new Int32Array(A);
  const next = sendOffset.slice(0, N * E);
  for (let e = 0; e < E; e++) {
    for (let g = groupStart[e]!; g < groupStart[e + 1]!; g++) {
      const s = next[srcOfRow[g]! * E + e]!++;
      slotOfRow[g] = s;
      rowOfSlot[s] = g;
    }
  }
  return { ranks: N, experts: E, tokens, shardStart, expertStart, groupStart, count, sendOffset, slotOfRow, rowOfSlot };
}

/** Rows rank `from` sends to rank `to` in one exchange (dispatch; the combine sends as many back). */
export function rowsBetween(l: ExchangeLayout, from: number, to: number): number {
  let rows = 0;
  for (let e = l.expertStart[to]!; e < l.expertStart[to + 1]!; e++) rows += l.count[from * l.experts + e]!;
  return rows;
}

/** [N][N] rows from rank r to rank j (the diagonal stays on its rank and crosses no link). */
export function rowMatrix(l: ExchangeLayout): number[][] {
  return Array.from({ length: l.ranks }, (_, r) => Array.from({ length: l.ranks }, (_, j) => rowsBetween(l, r, j)));
}

/**
 * Experts [a, b) of rank j's chunk c when an exchange runs in `degree` chunks (the overlap degree):
 * the c-th of `degree` even runs of the rank's experts, empty when the rank has fewer experts.
 */
export function chunkExperts(l: ExchangeLayout, j: number, c: number, degree: number): [number, number] {
  const a = l.expertStart[j]!;
  const n = l.expertStart[j + 1]! - a;
  return [a + Math.floor((c * n) / degree), a + Math.floor(((c + 1) * n) / degree)];
}
