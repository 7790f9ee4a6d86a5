// One MoE layer's offloaded experts: a fixed pool of slots filled from the model file by positioned reads (or the reader thread), and the schedules that run them.

import { Tensor } from '../tensor/tensor.js';
import { groupedMatmul, mul, silu } from '../ops/index.js';
import { kernel } from '../kernels/registry.js';
import { FUSED_DECODE_MAX_ROWS } from '../kernels/kernels.js';
import type { QuantType } from '../tensor/quant-blocks.js';
import { readFullyAt } from '../io/safetensors.js';
import { QuantWeight } from './quant/weight.js';
import { quantGroupedMatmul } from './quant/matmul.js';
import { SlotPool, type EvictionRule } from './expert-slots.js';
import { adviseHugePages } from '../backends/native/index.js';
import type { ExpertReader } from './expert-reader.js';
import type { LowPrecisionExperts } from './expert-low-precision.js';
import { directReads, stagedReads, prefetchAsync, settlePrefetch, freeReader } from './expert-layer-reads.js';
import type { ExpertFiles, ExpertRange, LayerCacheStats } from './expert-cache.js';

const PROJ_NAMES = ['gate (w1)', 'up (w3)', 'down (w2)'] as const;

/** The decoder experts' activation, down(silu(gate x) * up x): mlp() given this one runs decode rounds through the fused kernel. */
export const swigluAct = (gate: Tensor, up: Tensor): Tensor => mul(silu(gate), up);

/** An expert's rows' place in a forward's grouped input: rows starts[e] .. starts[e + 1] - 1. */
interface Groups {
  starts: Int32Array;
  /** The experts with rows, ascending. */
  needed: number[];
}

/**
 * One MoE layer's experts: three slot stacks [C, out, in] (gate, up, down; a slot holds all three
 * projections of one expert), refilled from the file as the pool's rule evicts.
 */
export class LayerExperts {
  readonly pool: SlotPool;
  /** Slot stacks per projection: QuantWeight [C, out, in] or float32 Tensor [C, out, in]. */
  readonly slots: Array<QuantWeight | Tensor>;
  private readonly slotBytes: Uint8Array[]; // byte views of slots[p]
  /** The slot stacks' memory: shared, so that the reader thread can read misses straight into a slot. */
  readonly slotBuffers: SharedArrayBuffer[];
  /** The reader the slot buffers are registered with, and their indices there (expert-layer-reads.ts). */
  registeredWith: ExpertReader | null = null;
  destBufs: number[] = [];
  /** With a reader: misses that fit the slots are read straight into them (false: through staging and a copy, as before; for comparisons). */
  directReads = true;
  readonly stats: LayerCacheStats;
  /** Experts pre-gating loaded for this layer's next forward (counted as used when it uses them). */
  readonly prefetchedNow = new Set<number>();
  /** A prefetch the reader thread is reading into this layer's slots (pinned) while the previous layer computes (expert-layer-reads.ts). */
  pendingPrefetch: { reader: ExpertReader; experts: number[]; slots: number[] } | null = null;
  /** The cache's reader thread (ExpertCache.setAsyncLoads), or null: every read on the calling thread. */
  reader: ExpertReader | null = null;
  /** Resident low-precision copies of all experts (HOBBIT), or null: every miss is loaded. */
  low: LowPrecisionExperts | null = null;

  constructor(
    readonly layer: number,
    readonly numExperts: number,
    numSlots: number,
    rule: EvictionRule,
    /** 'q8_0' | 'q4_0' blocks or 'f32' values, as stored in the file. */
    readonly type: 'q8_0' | 'q4_0' | 'f32',
    /** [out, in] per projection: gate, up, down. */
    readonly shapes: ReadonlyArray<readonly [number, number]>,
    /** ranges[p][e]: projection p of expert e in the file. */
    readonly ranges: ReadonlyArray<readonly ExpertRange[]>,
    readonly files: ExpertFiles,
  ) {
    this.pool = new SlotPool(numExperts, numSlots, rule);
    this.slotBuffers = [];
    this.slots = shapes.map((sh, p) => {
      const bytes = ranges[p]![0]!.bytes;
      // shared memory (the native kernels take it as it is): the reader thread can fill a slot itself
      const buf = new SharedArrayBuffer(numSlots * bytes);
      this.slotBuffers.push(buf);
      // huge pages as for resident weights (advised while the pages are untouched): fewer TLB misses when the kernels stream a slot
      if (type === 'f32') {
        const data = new Float32Array(buf);
        adviseHugePages(data);
        return new Tensor(data, [numSlots, sh[0], sh[1]]);
      }
      const data = new Uint8Array(buf);
      adviseHugePages(data);
      return new QuantWeight(type, [numSlots, sh[0], sh[1]], data);
    });
    this.slotBytes = this.slots.map((w) => (w instanceof QuantWeight ? w.data : new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength)));
    this.stats = { layer, slots: numSlots, hits: 0, misses: 0, prefetched: 0, prefetchUsed: 0, reloads: 0, bytesLoaded: 0, staged: 0, waitMs: 0, lowPrecision: 0, backgroundLoads: 0 };
  }

  /** Bytes of projection p of one expert. */
  projBytes(p: number): number {
    return this.ranges[p]![0]!.bytes;
  }

  /** Bytes of one expert (its three projections). */
  get expertBytes(): number {
    return this.ranges.reduce((s, r) => s + r[0]!.bytes, 0);
  }

  /** The bytes of projection p in slot s (what the kernels read). */
  slotView(p: number, s: number): Uint8Array {
    const b = this.projBytes(p);
    return this.slotBytes[p]!.subarray(s * b, (s + 1) * b);
  }

  /** The error of a failed read of projection p of expert e: the file ended at byte `at`, or `cause`. */
  readError(e: number, p: number, at: number | null, cause: string | null): Error {
    const r = this.ranges[p]![e]!;
    const where = `${r.file}: expert ${e} of layer ${this.layer}, ${PROJ_NAMES[p]}`;
    if (at !== null) return new Error(`${where}: the file ends at byte ${at}, inside the expert's bytes [${r.offset}, ${r.offset + r.bytes}) (was the model file truncated or rewritten while the model was in use?)`);
    return new Error(`${where}: reading bytes [${r.offset}, ${r.offset + r.bytes}) failed: ${cause}`);
  }

  /** Reads expert e's three projections into a slot (evicting by the rule); the slot is emptied again if a read fails. */
  load(e: number): number {
    const { slot } = this.pool.place(e);
    try {
      this.readInto(e, slot);
    } catch (err) {
      this.pool.clear(slot);
      throw err;
    }
    this.stats.bytesLoaded += this.expertBytes;
    return slot;
  }

  /** Positioned reads of expert e's three projections into slot `slot` (already placed). */
  readInto(e: number, slot: number): void {
    try {
      for (let p = 0; p < this.ranges.length; p++) {
        const r = this.ranges[p]![e]!;
        readFullyAt(this.files.fd(r.file), this.slotView(p, slot), r.offset, (at) => this.readError(e, p, at, null));
      }
    } catch (err) {
      const m = (err as Error).message;
      throw new Error(m.includes('expert ') ? m : `expert cache: loading expert ${e} of layer ${this.layer}: ${m}`);
    }
  }

  /**
   * Pre-gating: experts predicted for this layer's next forward are loaded now (at most all
   * slots), most recently touched so that the rule keeps them until the forward comes.
   */
  prefetch(experts: Iterable<number>): void {
    this.settlePrefetch();
    this.pool.unpinAll();
    if (this.reader && this.directReads) {
      prefetchAsync(this, experts);
      return;
    }
    let n = 0;
    for (const e of experts) {
      if (n++ >= this.pool.numSlots) break;
      if (this.pool.slot(e) >= 0) continue;
      this.load(e);
      this.stats.prefetched++;
      this.prefetchedNow.add(e);
    }
  }

  /**
   * Ends this layer's pending prefetch (the reader's reads taken, the rest read here, slots
   * unpinned; a failed read thrown, its slot emptied). Nothing pending: nothing to do.
   */
  settlePrefetch(): void {
    settlePrefetch(this);
  }

  /** Checks groupSizes against x [N, in]; the experts with rows and where their rows start. */
  private groups(x: Tensor, groupSizes: Int32Array): Groups {
    const E = this.numExperts;
    if (groupSizes.length !== E) throw new Error(`expert cache (layer ${this.layer}): ${groupSizes.length} group sizes for ${E} experts`);
    const N = x.shape[0]!;
    const starts = new Int32Array(E + 1);
    for (let e = 0; e < E; e++) starts[e + 1] = starts[e]! + groupSizes[e]!;
    if (starts[E] !== N) throw new Error(`expert cache (layer ${this.layer}): group sizes sum to ${starts[E]}, x has ${N} rows`);
    const needed: number[] = [];
    for (let e = 0; e < E; e++) if (groupSizes[e]! > 0) needed.push(e);
    return { starts, needed };
  }

  /** Counts a forward's hits and misses (once per expert with rows) and records the hits' use. */
  private countUses(needed: readonly number[]): { hits: number[]; misses: number[] } {
    const hits: number[] = [];
    const misses: number[] = [];
    for (const e of needed) {
      if (this.pool.slot(e) >= 0) {
        hits.push(e);
        this.stats.hits++;
        if (this.prefetchedNow.has(e)) this.stats.prefetchUsed++;
        this.pool.use(e);
      } else {
        misses.push(e);
        this.stats.misses++;
      }
    }
    this.prefetchedNow.clear();
    return { hits, misses };
  }

  /**
   * The rows of resident experts `round` through projection(s): gathered in slot order, `run`
   * given them with the slot sizes, its [rows, out] result put back at the experts' rows of out.
   */
  private round(xd: Float32Array, K: number, g: Groups, groupSizes: Int32Array, round: readonly number[], out: Float32Array, n: number,
    run: (xs: Tensor, sizes: Int32Array) => Tensor): void {
    const C = this.pool.numSlots;
    const sizes = new Int32Array(C);
    let rows = 0;
    for (const e of round) {
      sizes[this.pool.slot(e)] = groupSizes[e]!;
      rows += groupSizes[e]!;
    }
    const bySlot: number[] = [];
    for (let s = 0; s < C; s++) if (sizes[s]! > 0) bySlot.push(this.pool.expertIn(s));
    const xs = new Float32Array(rows * K);
    let r = 0;
    for (const e of bySlot) {
      xs.set(xd.subarray(g.starts[e]! * K, g.starts[e + 1]! * K), r * K);
      r += groupSizes[e]!;
    }
    const y = run(new Tensor(xs, [rows, K]), sizes).data as Float32Array;
    r = 0;
    for (const e of bySlot) {
      out.set(y.subarray(r * n, (r + groupSizes[e]!) * n), g.starts[e]! * n);
      r += groupSizes[e]!;
    }
  }

  /**
   * A decode-sized round (at most FUSED_DECODE_MAX_ROWS rows per slot) through the fused SwiGLU kernel over
   * the slot stacks, each row its own token with gate 1 (out = 0 + 1 * row: the grouped products'
   * values exactly); null when the stacks' formats differ or a slot has more rows.
   */
  private fusedSwiGLU(xs: Tensor, sizes: Int32Array): Tensor | null {
    const [w1, w3, w2] = this.slots as [QuantWeight | Tensor, QuantWeight | Tensor, QuantWeight | Tensor];
    let type: QuantType | 'f32';
    if (w1 instanceof QuantWeight && w3 instanceof QuantWeight && w2 instanceof QuantWeight && w3.type === w1.type && w2.type === w1.type) type = w1.type;
    else if (w1 instanceof Tensor && w3 instanceof Tensor && w2 instanceof Tensor && xs.data instanceof Float32Array) type = 'f32';
    else return null;
    if (sizes.some((s) => s > FUSED_DECODE_MAX_ROWS)) return null;
    const rows = xs.shape[0]!;
    const [C, h, K] = w1.shape as [number, number, number];
    const n = w2.shape[1]!;
    const token = new Int32Array(rows);
    const expert = new Int32Array(rows);
    let r = 0;
    for (let slot = 0; slot < sizes.length; slot++) {
      for (let i = 0; i < sizes[slot]!; i++, r++) {
        token[r] = r;
        expert[r] = slot;
      }
    }
    const out = new Float32Array(rows * n);
    kernel('expertSwiGLU')(xs.data as Float32Array, token, expert, new Float32Array(rows).fill(1), w1.data as Float32Array | Uint8Array,
      w3.data as Float32Array | Uint8Array, w2.data as Float32Array | Uint8Array, out, rows, K, h, C, type);
    return new Tensor(out, [rows, n]);
  }

  /** Projection p over the slot stack: rows grouped by slot (sizes [C]). */
  private product(x: Tensor, p: number, sizes: Int32Array): Tensor {
    const w = this.slots[p]!;
    return w instanceof QuantWeight ? quantGroupedMatmul(x, w, sizes) : groupedMatmul(x, w, sizes, { transW: true });
  }

  /**
   * x [N, in] rows grouped by expert (groupSizes [E]) times projection p of those experts: the
   * experts with rows are made resident (in rounds of at most C when there are more), their rows
   * gathered in slot order, the grouped kernel run over the slot stack, the rows put back. A forward
   * whose experts do not fit reloads them for each projection (stats.reloads): the MoE block uses
   * mlp() instead, which does not.
   */
  linear(x: Tensor, p: number, groupSizes: Int32Array): Tensor {
    const g = this.groups(x, groupSizes);
    const [N, K] = x.shape as [number, number];
    const n = this.shapes[p]![0];
    const C = this.pool.numSlots;
    const out = new Float32Array(N * n);
    this.settlePrefetch();
    if (p === 0) {
      this.countUses(g.needed);
      // one projection at a time cannot keep a low-precision decision across the three: full precision, and the noted routing is spent
      this.low?.take([], -1);
    }
    this.pool.unpinAll();
    try {
      for (let at = 0; at < g.needed.length; at += C) {
        const round = g.needed.slice(at, at + C);
        this.pool.unpinAll();
        for (const e of round) {
          let s = this.pool.slot(e);
          if (s < 0) {
            s = this.load(e);
            if (p !== 0) this.stats.reloads++;
            if (p === 0) this.pool.use(e);
          }
          this.pool.pin(s);
        }
        this.round(x.data as Float32Array, K, g, groupSizes, round, out, n, (xs, sizes) => this.product(xs, p, sizes));
      }
    } finally {
      this.pool.unpinAll();
    }
    return new Tensor(out, [N, n]);
  }

  /**
   * The experts' whole MLP: down(act(gate x, up x)) for x [N, in] grouped by expert -> [N, out].
   * When the experts with rows fit in the slots, one round: the three grouped products over all of
   * them (misses loaded first), as linear() three times. When they do not, the hits run first, then
   * the misses in rounds, each round's experts through all three products before the next round
   * replaces them: every expert is loaded at most once per forward. With a reader thread, misses are
   * read ahead while the hits, then earlier rounds, compute. Rows never change expert, and each kernel treats every
   * expert's rows alone, so any schedule gives the same values, bit for bit.
   */
  mlp(x: Tensor, groupSizes: Int32Array, act: (gate: Tensor, up: Tensor) => Tensor): Tensor {
    const g = this.groups(x, groupSizes);
    const [N, K] = x.shape as [number, number];
    const n = this.shapes[2]![0];
    const C = this.pool.numSlots;
    const out = new Float32Array(N * n);
    const xd = x.data as Float32Array;
    const grouped = (xs: Tensor, sizes: Int32Array): Tensor => this.product(act(this.product(xs, 0, sizes), this.product(xs, 1, sizes)), 2, sizes);
    const three = act === swigluAct ? (xs: Tensor, sizes: Int32Array): Tensor => this.fusedSwiGLU(xs, sizes) ?? grouped(xs, sizes) : grouped;
    this.settlePrefetch();
    const reader = freeReader(this);
    this.pool.unpinAll();
    const { hits, misses: missed } = this.countUses(g.needed);
    // HOBBIT: misses below the importance threshold run on the resident low-precision copies, never loaded
    const low = this.low ? this.low.take(missed, N) : new Set<number>();
    const misses = missed.filter((e) => !low.has(e));
    const full = g.needed.filter((e) => !low.has(e));
    this.stats.lowPrecision += low.size;
    const runLow = (): void => {
      if (low.size > 0) this.low!.mlp(xd, K, g.starts, groupSizes, low, out, n, act);
    };
    // More experts than slots: whatever runs last stays for the next step. Choose it: the
    // floor(C / 2) experts ranked first (LFU: most used since the start; otherwise most rows this
    // step) are kept pinned once run (hits) or run last (misses); the rest run in rounds of
    // C - kept. Without this the next step would find only the last round's misses resident.
    const keep = new Set<number>();
    if (full.length > C) {
      const lfu = this.pool.rule.name === 'lfu';
      const rank = (e: number): number => (lfu ? this.pool.uses(e) + (this.pool.slot(e) < 0 ? 1 : 0) : groupSizes[e]!);
      for (const e of [...full].sort((a, b) => rank(b) - rank(a) || a - b).slice(0, Math.floor(C / 2))) keep.add(e);
      misses.sort((a, b) => Number(keep.has(a)) - Number(keep.has(b)) || a - b);
    }
    const compute = (round: readonly number[]): void => {
      this.round(xd, K, g, groupSizes, round, out, n, three);
      for (const e of round) if (!keep.has(e)) this.pool.unpin(this.pool.slot(e));
    };
    const cap = C - hits.filter((e) => keep.has(e)).length;
    try {
      // hits stay pinned until they have run: a miss's load must not evict an expert still to run
      for (const e of hits) this.pool.pin(this.pool.slot(e));
      // background: the copies' experts are also read in full into free slots while the layer computes (reader thread only)
      const background = this.low?.background && reader && this.directReads ? [...low].sort((a, b) => a - b) : [];
      if (reader && (misses.length > 0 || background.length > 0) && this.directReads && full.length <= C) {
        directReads(this, hits, misses, compute, runLow, background);
      } else if (reader && misses.length > 0) {
        stagedReads(this, hits, misses, compute, cap, runLow);
      } else if (full.length <= C) {
        // they fit: one round, the three grouped products over all of them
        runLow();
        for (const e of misses) {
          this.load(e);
          this.pool.use(e);
          this.pool.pin(this.pool.slot(e));
        }
        if (full.length > 0) compute(full);
      } else {
        runLow();
        if (hits.length > 0) compute(hits);
        // rounds of at most cap misses, the kept ones (at the end) a round of their own
        const rounds: number[][] = [];
        for (const part of [misses.filter((e) => !keep.has(e)), misses.filter((e) => keep.has(e))]) {
          for (let at = 0; at < part.length; at += cap) rounds.push(part.slice(at, at + cap));
        }
        for (const round of rounds) {
          for (const e of round) {
            const s = this.load(e);
            this.pool.use(e);
            this.pool.pin(s);
          }
          compute(round);
        }
      }
    } finally {
      this.pool.unpinAll();
    }
    return new Tensor(out, [N, n]);
  }
}
