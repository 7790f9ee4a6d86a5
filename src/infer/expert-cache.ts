// Experts left in the model file: per MoE layer a fixed pool of slots filled on demand by positioned reads, and the weight kind expertLinear runs through it.

import { closeSync, fstatSync, openSync } from 'node:fs';
import { Tensor } from '../tensor/tensor.js';
import { groupedMatmul } from '../ops/index.js';
import { readFullyAt } from '../io/safetensors.js';
import { QuantWeight } from './quant/weight.js';
import { quantGroupedMatmul } from './quant/matmul.js';
import { SlotPool, type EvictionRule } from './expert-slots.js';
import { adviseHugePages } from '../backends/native/index.js';

/** An expert projection's bytes in the model file. */
export interface ExpertRange {
  file: string;
  offset: number;
  bytes: number;
}

/** Per layer counters. Uses = hits + misses: one per (forward, expert with rows), counted at the first projection. */
export interface LayerCacheStats {
  layer: number;
  slots: number;
  hits: number;
  misses: number;
  /** Experts loaded ahead by pre-gating, and how many of them the layer then used. */
  prefetched: number;
  prefetchUsed: number;
  /** Loads by a later projection of the same forward (only when one forward needs more experts than slots, e.g. a long prefill). */
  reloads: number;
  bytesLoaded: number;
}

const PROJ_NAMES = ['gate (w1)', 'up (w3)', 'down (w2)'] as const;

/** Open files shared by all layers, closed together. */
export class ExpertFiles {
  private readonly fds = new Map<string, number>();
  private closed = false;
  fd(file: string): number {
    if (this.closed) throw new Error(`expert cache: closed (reading ${file})`);
    let fd = this.fds.get(file);
    if (fd === undefined) {
      fd = openSync(file, 'r');
      this.fds.set(file, fd);
    }
    return fd;
  }
  size(file: string): number {
    return fstatSync(this.fd(file)).size;
  }
  close(): void {
    this.closed = true;
    for (const fd of this.fds.values()) {
      try { closeSync(fd); } catch { /* best effort */ }
    }
    this.fds.clear();
  }
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
  readonly stats: LayerCacheStats;
  private readonly prefetchedNow = new Set<number>();

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
    private readonly ranges: ReadonlyArray<readonly ExpertRange[]>,
    private readonly files: ExpertFiles,
  ) {
    this.pool = new SlotPool(numExperts, numSlots, rule);
    this.slots = shapes.map((sh, p) => {
      const bytes = ranges[p]![0]!.bytes;
      // huge pages as for resident weights (advised while the pages are untouched): fewer TLB misses when the kernels stream a slot
      if (type === 'f32') {
        const data = new Float32Array((numSlots * bytes) / 4);
        adviseHugePages(data);
        return new Tensor(data, [numSlots, sh[0], sh[1]]);
      }
      const data = new Uint8Array(numSlots * bytes);
      adviseHugePages(data);
      return new QuantWeight(type, [numSlots, sh[0], sh[1]], data);
    });
    this.slotBytes = this.slots.map((w) => (w instanceof QuantWeight ? w.data : new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength)));
    this.stats = { layer, slots: numSlots, hits: 0, misses: 0, prefetched: 0, prefetchUsed: 0, reloads: 0, bytesLoaded: 0 };
  }

  /** Bytes of projection p of one expert. */
  projBytes(p: number): number {
    return this.ranges[p]![0]!.bytes;
  }

  /** Bytes of one expert (its three projections). */
  get expertBytes(): number {
    return this.ranges.reduce((s, r) => s + r[0]!.bytes, 0);
  }

  /** Reads expert e's three projections into a slot (evicting by the rule); the slot is emptied again if a read fails. */
  private load(e: number): number {
    const { slot } = this.pool.place(e);
    try {
      for (let p = 0; p < this.ranges.length; p++) {
        const r = this.ranges[p]![e]!;
        const dst = this.slotBytes[p]!.subarray(slot * r.bytes, (slot + 1) * r.bytes);
        readFullyAt(this.files.fd(r.file), dst, r.offset, (at) => new Error(
          `${r.file}: expert ${e} of layer ${this.layer}, ${PROJ_NAMES[p]}: the file ends at byte ${at}, inside the expert's bytes [${r.offset}, ${r.offset + r.bytes}) (was the model file truncated or rewritten while the model was in use?)`));
      }
    } catch (err) {
      this.pool.clear(slot);
      const m = (err as Error).message;
      throw new Error(m.includes('expert ') ? m : `expert cache: loading expert ${e} of layer ${this.layer}: ${m}`);
    }
    this.stats.bytesLoaded += this.expertBytes;
    return slot;
  }

  /**
   * Pre-gating: experts predicted for this layer's next forward are loaded now (at most all
   * slots), most recently touched so that the rule keeps them until the forward comes.
   */
  prefetch(experts: Iterable<number>): void {
    this.pool.unpinAll();
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
   * x [N, in] rows grouped by expert (groupSizes [E]) times projection p of those experts: the
   * experts with rows are made resident (in rounds of at most C when there are more), their rows
   * gathered in slot order, the grouped kernel run over the slot stack, the rows put back.
   */
  linear(x: Tensor, p: number, groupSizes: Int32Array): Tensor {
    const E = this.numExperts;
    if (groupSizes.length !== E) throw new Error(`expert cache (layer ${this.layer}): ${groupSizes.length} group sizes for ${E} experts`);
    const [N, K] = x.shape as [number, number];
    const n = this.shapes[p]![0];
    const starts = new Int32Array(E + 1);
    for (let e = 0; e < E; e++) starts[e + 1] = starts[e]! + groupSizes[e]!;
    if (starts[E] !== N) throw new Error(`expert cache (layer ${this.layer}): group sizes sum to ${starts[E]}, x has ${N} rows`);
    const needed: number[] = [];
    for (let e = 0; e < E; e++) if (groupSizes[e]! > 0) needed.push(e);
    const C = this.pool.numSlots;
    const xd = x.data as Float32Array;
    const out = new Float32Array(N * n);
    for (let at = 0; at < needed.length; at += C) {
      const round = needed.slice(at, at + C);
      this.pool.unpinAll();
      for (const e of round) {
        let s = this.pool.slot(e);
        if (p === 0) {
          if (s >= 0) {
            this.stats.hits++;
            if (this.prefetchedNow.has(e)) this.stats.prefetchUsed++;
          } else {
            this.stats.misses++;
          }
        }
        if (s < 0) {
          s = this.load(e);
          if (p !== 0) this.stats.reloads++;
        }
        if (p === 0) this.pool.use(e);
        this.pool.pin(s);
      }
      // rows of this round's experts, in slot order
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
        xs.set(xd.subarray(starts[e]! * K, starts[e + 1]! * K), r * K);
        r += groupSizes[e]!;
      }
      const w = this.slots[p]!;
      const xt = new Tensor(xs, [rows, K]);
      const y = (w instanceof QuantWeight ? quantGroupedMatmul(xt, w, sizes) : groupedMatmul(xt, w, sizes, { transW: true })).data as Float32Array;
      r = 0;
      for (const e of bySlot) {
        out.set(y.subarray(r * n, (r + groupSizes[e]!) * n), starts[e]! * n);
        r += groupSizes[e]!;
      }
    }
    if (p === 0) this.prefetchedNow.clear();
    this.pool.unpinAll();
    return new Tensor(out, [N, n]);
  }
}

/**
 * The weight kind of offloaded experts, in place of a stacked [E, out, in] weight: projection
 * `proj` (0 gate, 1 up, 2 down) of a layer whose experts live in the file. expertLinear runs it.
 */
export class OffloadedExperts {
  constructor(readonly experts: LayerExperts, readonly proj: number, readonly shape: readonly [number, number, number]) {}

  /** Bytes of the whole stack as stored (the file's, not memory's). */
  get bytes(): number {
    return this.experts.numExperts * this.experts.projBytes(this.proj);
  }

  /** Number of values of the whole stack. */
  get size(): number {
    return this.shape[0] * this.shape[1] * this.shape[2];
  }

  /** Not resident: anything that reads a stack's bytes directly (toHF, training) gets this error instead of zeros. */
  get data(): never {
    throw new Error(`layer ${this.experts.layer}: the experts are offloaded to the model file (expert cache); their stacked weights are not in memory`);
  }

  linear(x: Tensor, groupSizes: Int32Array): Tensor {
    return this.experts.linear(x, this.proj, groupSizes);
  }
}

/** All offloaded layers of a model: stats, totals and the open files. */
export class ExpertCache {
  constructor(
    readonly layers: readonly LayerExperts[],
    readonly policy: string,
    /** Bytes of every expert of every MoE layer (what all-resident would hold). */
    readonly totalExpertBytes: number,
    private readonly files: ExpertFiles,
  ) {}

  /** Slot memory held: slots x expert bytes over the layers. */
  get residentBytes(): number {
    return this.layers.reduce((s, l) => s + l.pool.numSlots * l.expertBytes, 0);
  }

  stats(): { policy: string; residentBytes: number; totalExpertBytes: number; hits: number; misses: number; hitRate: number; prefetched: number; prefetchUsed: number; reloads: number; bytesLoaded: number; layers: LayerCacheStats[] } {
    const layers = this.layers.map((l) => ({ ...l.stats }));
    const sum = (k: keyof LayerCacheStats): number => layers.reduce((s, l) => s + l[k], 0);
    const hits = sum('hits');
    const misses = sum('misses');
    return {
      policy: this.policy, residentBytes: this.residentBytes, totalExpertBytes: this.totalExpertBytes,
      hits, misses, hitRate: hits + misses > 0 ? hits / (hits + misses) : 0,
      prefetched: sum('prefetched'), prefetchUsed: sum('prefetchUsed'), reloads: sum('reloads'), bytesLoaded: sum('bytesLoaded'), layers,
    };
  }

  resetStats(): void {
    for (const l of this.layers) Object.assign(l.stats, { hits: 0, misses: 0, prefetched: 0, prefetchUsed: 0, reloads: 0, bytesLoaded: 0 });
  }

  /** Closes the model file; a forward that needs a non-resident expert then fails with a clear error. */
  close(): void {
    this.files.close();
  }
}
