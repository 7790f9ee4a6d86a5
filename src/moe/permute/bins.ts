// Bins: group assignments by expert (stable counting sort: histogram, cumulative sum, scatter),
// then apply an expert capacity, dropping by position (first come) or by gate (lowest first).

export type DropPolicy = 'position' | 'probability';

export interface DispatchPlan {
  /** Assignment index of each permuted row, experts in order [A']. */
  order: Int32Array;
  /** Token of each permuted row [A']. */
  tokenOfRow: Int32Array;
  /** Expert of each permuted row [A']. */
  expertOfRow: Int32Array;
  /** Rows per expert after capacity [E]. */
  groupSizes: Int32Array;
  /** Assignments per expert before capacity [E] (the router's demand). */
  demand: Int32Array;
  /** Capacity per expert, or null for dropless dispatch. */
  capacity: number | null;
  /** Assignments dropped by capacity. */
  dropped: number;
  /** Which assignments were kept [A] (1 kept, 0 dropped). */
  kept: Uint8Array;
}

/** ceil(capacityFactor * assignments / E); for top-k routing assignments = T * k. */
export function expertCapacity(capacityFactor: number, assignments: number, numExperts: number): number {
  return Math.ceil((capacityFactor * assignments) / numExperts);
}

/**
 * Plans the dispatch of assignments (expert[i], token[i], gate[i]) to numExperts experts.
 * capacity null: dropless. Within an expert, rows keep assignment order (token-major), so the
 * 'position' policy keeps the earliest tokens; 'probability' keeps the largest gates.
 */
export function planDispatch(token: Int32Array, expert: Int32Array, gates: ArrayLike<number>, numExperts: number,
  capacity: number | null, policy: DropPolicy = 'position'): DispatchPlan {
  const A = expert.length;
  const E = numExperts;
  const demand = new Int32Array(E);
  for (let i = 0; i < A; i++) {
    const e = expert[i]!;
    if (e < 0 || e >= E) throw new Error(`planDispatch: expert index ${e} at assignment ${i} is out of range [0, ${E})`);
    demand[e]!++;
  }
  const offsets = new Int32Array(E + 1);
  for (let e = 0; e < E; e++) offsets[e + 1] = offsets[e]! + demand[e]!;
  const sorted = new Int32Array(A);
  const cursor = offsets.slice(0, E);
  for (let i = 0; i < A; i++) sorted[cursor[expert[i]!]!++] = i;

  const kept = new Uint8Array(A);
  const groupSizes = new Int32Array(E);
  let dropped = 0;
  const rows: number[] = [];
  for (let e = 0; e < E; e++) {
    const lo = offsets[e]!;
    const hi = offsets[e + 1]!;
    let bucket = sorted.subarray(lo, hi);
    if (capacity !== null && bucket.length > capacity) {
      if (policy === 'probability') {
        // keep the `capacity` largest gates, then restore assignment order among them
        const byGate = Array.from(bucket).sort((a, b) => gates[b]! - gates[a]! || a - b);
        bucket = Int32Array.from(byGate.slice(0, capacity)).sort();
      } else {
        bucket = bucket.subarray(0, capacity);
      }
      dropped += hi - lo - capacity;
    }
    groupSizes[e] = bucket.length;
    for (const i of bucket) { rows.push(i); kept[i] = 1; }
  }
  const order = Int32Array.from(rows);
  const tokenOfRow = new Int32Array(order.length);
  const expertOfRow = new Int32Array(order.length);
  for (let r = 0; r < order.length; r++) {
    tokenOfRow[r] = token[order[r]!]!;
    expertOfRow[r] = expert[order[r]!]!;
  }
  return { order, tokenOfRow, expertOfRow, groupSizes, demand, capacity, dropped, kept };
}
