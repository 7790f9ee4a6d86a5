// Experts left in the model file: the open files, the counters, the weight kind expertLinear runs through and the model-wide cache (one layer's slots and schedules: expert-layer.ts).

import { closeSync, fstatSync, openSync } from 'node:fs';
import type { Tensor } from '../tensor/tensor.js';
import { ExpertReader } from './expert-reader.js';
import type { LayerExperts } from './expert-layer.js';

export { LayerExperts } from './expert-layer.js';

/** Staging places of the reader thread: how many experts it may read ahead of the main thread. */
export const STAGED_EXPERTS = 4;

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
  /** Experts read by the reader thread (asynchronous loads), included in misses' loads. */
  staged: number;
  /** Milliseconds the forward waited for the reader thread (reads not hidden behind compute). */
  waitMs: number;
  /** Misses computed on the resident low-precision copies instead of loading (HOBBIT; included in misses, not in bytesLoaded). */
  lowPrecision: number;
  /** Of those, experts the reader thread also read in full into a free slot while the layer computed (lowPrecision.background; in bytesLoaded and staged). */
  backgroundLoads: number;
}


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
 * What an OffloadedExperts stack asks of the object that holds its layer's experts: the expert
 * cache's LayerExperts (experts in the model file), or any other holder, such as the expert-parallel
 * workers (parallel/decoder-experts.ts). mlp() gets the rows grouped by expert.
 */
export interface ExpertStackHost {
  readonly layer: number;
  readonly numExperts: number;
  /** Bytes of one expert's projection p as stored. */
  projBytes(p: number): number;
  linear(x: Tensor, p: number, groupSizes: Int32Array): Tensor;
  mlp(x: Tensor, groupSizes: Int32Array, act: (gate: Tensor, up: Tensor) => Tensor): Tensor;
  /** Where the experts are, for errors (default: offloaded to the model file). */
  readonly where?: string;
}

/**
 * The weight kind of experts held outside the model's stacks, in place of a stacked [E, out, in]
 * weight: projection `proj` (0 gate, 1 up, 2 down) of a layer whose experts live in the file (the
 * expert cache) or elsewhere (ExpertStackHost). expertLinear / expertSwiGLU run it.
 */
export class OffloadedExperts {
  constructor(readonly experts: ExpertStackHost, readonly proj: number, readonly shape: readonly [number, number, number]) {}

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
    throw new Error(`layer ${this.experts.layer}: the experts are ${this.experts.where ?? 'offloaded to the model file (expert cache)'}; their stacked weights are not in memory here`);
  }

  linear(x: Tensor, groupSizes: Int32Array): Tensor {
    return this.experts.linear(x, this.proj, groupSizes);
  }
}

/** All offloaded layers of a model: stats, totals, the open files and the optional reader thread. */
export class ExpertCache {
  private reader: ExpertReader | null = null;

  constructor(
    readonly layers: readonly LayerExperts[],
    readonly policy: string,
    /** Bytes of every expert of every MoE layer (what all-resident would hold). */
    readonly totalExpertBytes: number,
    private readonly files: ExpertFiles,
  ) {}

  /** Expert memory held: slots x expert bytes plus the low-precision copies, over the layers (the budget; the reader's staging buffer is extra). */
  get residentBytes(): number {
    return this.layers.reduce((s, l) => s + l.pool.numSlots * l.expertBytes + (l.low?.bytes ?? 0), 0);
  }

  /** Of residentBytes, the low-precision copies of every expert (0 without them). */
  get lowPrecisionBytes(): number {
    return this.layers.reduce((s, l) => s + (l.low?.bytes ?? 0), 0);
  }

  /** The low-precision copies' type and threshold, or null. */
  get lowPrecision(): { type: string; below: number; background: boolean } | null {
    const l = this.layers[0]!.low;
    return l ? { type: l.type, below: l.below, background: l.background } : null;
  }

  /** The reader thread's staging buffer (0 with synchronous loads): STAGED_EXPERTS experts, shared by the layers. */
  get stagingBytes(): number {
    return this.reader?.staging.byteLength ?? 0;
  }

  /** Whether misses are read by a worker thread while the resident experts compute (else on the calling thread). */
  get asyncLoads(): boolean {
    return this.reader !== null;
  }

  /**
   * Turns the reader thread on or off (between forwards). On: a staging buffer of
   * STAGED_EXPERTS experts (a few MB) outside the slot budget, and a worker thread started at the
   * first miss. opts.places: experts the reader may read ahead (default STAGED_EXPERTS, at most
   * the slots); opts.mainReads false: the forward always waits for the reader rather than reading
   * an expert the reader has not begun itself (tests). opts.direct false: misses go through the
   * staging places and a copy into their slot even when they fit the slots (default true: read
   * straight into the slots; comparisons). Same values either way.
   */
  setAsyncLoads(on: boolean, opts: { places?: number; mainReads?: boolean; direct?: boolean } = {}): void {
    if (this.reader) {
      this.reader.close();
      this.reader = null;
    }
    if (on) {
      const eb = Math.max(...this.layers.map((l) => l.expertBytes));
      const places = opts.places ?? Math.min(STAGED_EXPERTS, Math.max(...this.layers.map((l) => l.pool.numSlots)));
      this.reader = new ExpertReader(places, eb, opts.mainReads === undefined ? {} : { mainReads: opts.mainReads });
    }
    for (const l of this.layers) {
      l.reader = this.reader;
      l.directReads = opts.direct ?? true;
    }
  }

  stats(): { policy: string; residentBytes: number; totalExpertBytes: number; stagingBytes: number; lowPrecisionBytes: number; hits: number; misses: number; hitRate: number; prefetched: number; prefetchUsed: number; reloads: number; bytesLoaded: number; staged: number; waitMs: number; lowPrecision: number; backgroundLoads: number; layers: LayerCacheStats[] } {
    const layers = this.layers.map((l) => ({ ...l.stats }));
    const sum = (k: keyof LayerCacheStats): number => layers.reduce((s, l) => s + l[k], 0);
    const hits = sum('hits');
    const misses = sum('misses');
    return {
      policy: this.policy, residentBytes: this.residentBytes, totalExpertBytes: this.totalExpertBytes, stagingBytes: this.stagingBytes, lowPrecisionBytes: this.lowPrecisionBytes,
      hits, misses, hitRate: hits + misses > 0 ? hits / (hits + misses) : 0,
      prefetched: sum('prefetched'), prefetchUsed: sum('prefetchUsed'), reloads: sum('reloads'), bytesLoaded: sum('bytesLoaded'),
      staged: sum('staged'), waitMs: sum('waitMs'), lowPrecision: sum('lowPrecision'), backgroundLoads: sum('backgroundLoads'), layers,
    };
  }

  resetStats(): void {
    for (const l of this.layers) Object.assign(l.stats, { hits: 0, misses: 0, prefetched: 0, prefetchUsed: 0, reloads: 0, bytesLoaded: 0, staged: 0, waitMs: 0, lowPrecision: 0, backgroundLoads: 0 });
  }

  /** Stops the reader thread and closes the model file; a forward that needs a non-resident expert then fails with a clear error. */
  close(): void {
    this.setAsyncLoads(false);
    this.files.close();
  }
}
