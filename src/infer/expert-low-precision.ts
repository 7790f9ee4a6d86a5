// HOBBIT's idea for the expert cache: a resident Q4_0 copy of every expert, used instead of loading the full-precision one on a miss for an expert that matters little to the tokens routed to it.
//
// HOBBIT (Tang et al. 2024) computes a missed, less important expert with a low-precision copy
// rather than waiting for its full-precision load. Here the copies are made at load time from the
// full weights in the model file (read as stored, dequantised when Q8_0, requantised to Q4_0 with
// the reference rounding), held per layer as three [E, out, in] Q4_0 stacks, and counted against
// the expert memory budget before the slots are sized (expert-offload.ts).
//
// Importance: a token's k gates are normalised to shares of its routed weight (they sum to 1) and
// scaled by k, so 1 is the average share; an expert's importance in a forward is the largest over
// its rows. A miss whose importance is below `below` runs on the Q4_0 copy; at or above it the full
// expert is loaded as before. below = 1: misses that carry less than an average share go Q4;
// below = Infinity: every miss goes Q4 (nothing is loaded after the first forwards but prefetches);
// below = 0: never (same values as without copies). A token's largest share is >= 1/k, so with
// below <= 1 every token's first expert is always computed in full precision.

import { Tensor } from '../tensor/tensor.js';
import { readFullyAt } from '../io/safetensors.js';
import { dequantizeArray, quantizedBytes, quantizeRow } from '../tensor/quant-blocks.js';
import { QuantWeight } from './quant/weight.js';
import { quantGroupedMatmul } from './quant/matmul.js';
import type { Routing } from '../moe/routers/types.js';
import type { ExpertFiles, ExpertRange } from './expert-cache.js';

export type LowPrecisionType = 'q4_0';
export const LOW_PRECISION_TYPES: readonly LowPrecisionType[] = ['q4_0'];

/**
 * The option: the copies' block type, the importance below which a miss uses them (default 1), and
 * background: with the reader thread, such a miss's full expert is also read into a free slot
 * while the layer computes, kept if done by the layer's end (default false; no effect without the thread).
 */
export interface LowPrecisionOptions {
  type: LowPrecisionType;
  below?: number;
  background?: boolean;
}

/** Bytes of one expert's low-precision copy (its three projections). */
export function lowPrecisionExpertBytes(type: LowPrecisionType, shapes: ReadonlyArray<readonly [number, number]>): number {
  return shapes.reduce((s, [o, i]) => s + quantizedBytes(type, o * i), 0);
}

/**
 * Per expert, the largest importance (k x its share of the token's routed weight) over the
 * assignments of one routing; 0 for experts without rows.
 */
export function expertImportance(routing: Pick<Routing, 'token' | 'expert' | 'gates' | 'tokens' | 'experts'>): Float64Array {
  const g = routing.gates.data as Float32Array;
  const A = routing.expert.length;
  const sum = new Float64Array(routing.tokens);
  const count = new Int32Array(routing.tokens);
  for (let a = 0; a < A; a++) {
    sum[routing.token[a]!]! += g[a]!;
    count[routing.token[a]!]!++;
  }
  const imp = new Float64Array(routing.experts);
  for (let a = 0; a < A; a++) {
    const t = routing.token[a]!;
    // a token whose gates sum to 0 (or are not finite) counts each of its experts as average: no information to skip one
    const share = sum[t]! > 0 && Number.isFinite(sum[t]!) ? (count[t]! * g[a]!) / sum[t]! : 1;
    const e = routing.expert[a]!;
    if (share > imp[e]!) imp[e] = share;
  }
  return imp;
}

/** One MoE layer's low-precision copies of all E experts and the importance of its latest routing. */
export class LowPrecisionExperts {
  /** Per projection (gate, up, down): [E, out, in] blocks. */
  readonly stacks: QuantWeight[];
  /** Set by the layer's router on each forward (expert-offload.ts), taken by the next mlp call. */
  private pending: { assignments: number; importance: Float64Array } | null = null;

  constructor(
    readonly layer: number,
    readonly type: LowPrecisionType,
    readonly below: number,
    /** Also read a copy-computed miss in full in the background (reader thread; LowPrecisionOptions.background). */
    readonly background: boolean,
    readonly numExperts: number,
    shapes: ReadonlyArray<readonly [number, number]>,
    /** Stored type of the full experts in the file. */
    stored: 'q8_0' | 'q4_0' | 'f32',
    ranges: ReadonlyArray<readonly ExpertRange[]>,
    files: ExpertFiles,
  ) {
    if (!(below >= 0)) throw new Error(`expert low precision: threshold ${below} must be a number >= 0 (importance: k x the expert's share of a token's routed weight; 1 = average)`);
    if (stored === type) throw new Error(`expert low precision: the experts are stored as ${stored} already; a ${type} copy would be the same weights (load without the low-precision option)`);
    this.stacks = shapes.map(([o, i], p) => {
      const n = o * i;
      const qb = quantizedBytes(type, n);
      const data = new Uint8Array(numExperts * qb);
      const raw = new Uint8Array(ranges[p]![0]!.bytes);
      for (let e = 0; e < numExperts; e++) {
        const r = ranges[p]![e]!;
        readFullyAt(files.fd(r.file), raw, r.offset, (at) => new Error(`expert low precision: ${r.file} ends at byte ${at}, inside expert ${e} of layer ${layer} (projection ${p}, bytes [${r.offset}, ${r.offset + r.bytes}))`));
        const values = stored === 'f32' ? new Float32Array(raw.buffer, raw.byteOffset, n) : dequantizeArray(stored, raw, n);
        try {
          quantizeRow(type, values, 0, n, data, e * qb);
        } catch (err) {
          throw new Error(`expert low precision: expert ${e} of layer ${layer}, projection ${p}: ${(err as Error).message}`);
        }
      }
      return new QuantWeight(type, [numExperts, o, i], data);
    });
  }

  /** Bytes held: all E experts' copies. */
  get bytes(): number {
    return this.stacks.reduce((s, w) => s + w.bytes, 0);
  }

  /** Records a forward's routing (its importance per expert) for the mlp call that follows. */
  note(routing: Routing): void {
    this.pending = { assignments: routing.expert.length, importance: expertImportance(routing) };
  }

  /**
   * The misses of a forward with `rows` routed rows that run on the copies: those below the
   * threshold. Takes the noted routing (used once); when none matches the rows (the experts were
   * called without their router, e.g. expertLinear by hand) no miss goes low precision.
   */
  take(misses: readonly number[], rows: number): Set<number> {
    const p = this.pending;
    this.pending = null;
    const low = new Set<number>();
    if (!p || p.assignments !== rows || this.below <= 0) return low;
    for (const e of misses) if (p.importance[e]! < this.below) low.add(e);
    return low;
  }

  /**
   * The rows of the experts in `low` through the whole MLP on their low-precision copies (rows of expert e at starts[e] .. starts[e + 1] - 1 of xd [N, K], results into out [N, n]): gathered
   * in expert order (already contiguous per expert), the grouped Q4 kernel over the [E] stacks with
   * sizes zero for every other expert, the rows put back.
   */
  mlp(xd: Float32Array, K: number, starts: Int32Array, groupSizes: Int32Array, low: ReadonlySet<number>, out: Float32Array, n: number,
    act: (gate: Tensor, up: Tensor) => Tensor): void {
    const lp = this;
    const sizes = new Int32Array(this.numExperts);
    const order = [...low].sort((a, b) => a - b);
    let rows = 0;
    for (const e of order) {
      sizes[e] = groupSizes[e]!;
      rows += groupSizes[e]!;
    }
    const xs = new Float32Array(rows * K);
    let r = 0;
    for (const e of order) {
      xs.set(xd.subarray(starts[e]! * K, starts[e + 1]! * K), r * K);
      r += groupSizes[e]!;
    }
    const x = new Tensor(xs, [rows, K]);
    const y = lp.product(act(lp.product(x, 0, sizes), lp.product(x, 1, sizes)), 2, sizes).data as Float32Array;
    r = 0;
    for (const e of order) {
      out.set(y.subarray(r * n, (r + groupSizes[e]!) * n), starts[e]! * n);
      r += groupSizes[e]!;
    }
  }

  /** Projection p over the copies: x's rows grouped by expert (sizes [E], zero for experts not run here). */
  product(x: Tensor, p: number, sizes: Int32Array): Tensor {
    return quantGroupedMatmul(x, this.stacks[p]!, sizes);
  }
}
