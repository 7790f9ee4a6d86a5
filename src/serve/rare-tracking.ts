// Per-request rare-expert accounting in the server: a BatchModel wrapper that splits each step's routing by sequence.
//
// MoEDecoder.onRouting reports a step's routing for all its rows at once, rows in the order of the
// batch entries (one forwardBatch, or one forward per entry in turn). The wrapper knows each
// entry's row count, so it can cut each MoE layer's routing into per-entry tallies; the engine
// then names the sequences of the step (StepInfo.sequences, in batch order) and attribute() adds
// each entry's tally to its sequence. The HTTP layer take()s a sequence's total once it finished.

import type { RoutingHook } from '../models/moe-decoder.js';
import { addTally, emptyTally, type RareExperts, type RareTally } from '../infer/rare-experts.js';
import type { BatchEntry, BatchModel } from './scheduler.js';

export class RareExpertTracker implements BatchModel {
  readonly vocabSize: number;
  readonly numSlots: number;
  readonly contextLength: number;
  /** Steps whose routing did not cover every row of every tracked layer (a batch model that skipped the model): not attributed. */
  incompleteSteps = 0;
  private readonly k: number;
  private readonly tracked: number[];
  // the step in progress: routing rows seen per layer, rare assignments per row, rows per entry
  private stepRows = 0;
  private cursor: Int32Array;
  private rowRare = new Int32Array(0);
  private inStep = false;
  /** Per-entry tallies of the last step, waiting for attribute(). */
  private pending: RareTally[] | null = null;
  private readonly bySequence = new Map<number, RareTally>();

  constructor(private readonly inner: BatchModel, readonly rare: RareExperts) {
    this.vocabSize = inner.vocabSize;
    this.numSlots = inner.numSlots;
    this.contextLength = inner.contextLength;
    this.k = rare.topK;
    this.tracked = rare.trackedLayers;
    this.cursor = new Int32Array(rare.rare.length);
  }

  /** The routing hook to chain into the model's onRouting. */
  readonly hook: RoutingHook = (layer, expertIndices) => {
    if (!this.inStep) return; // a forward outside the server's steps (e.g. a test's own call)
    const r = this.rare.rare[layer];
    const T = expertIndices.length / this.k;
    const at = this.cursor[layer]!;
    this.cursor[layer] = at + T;
    if (!r || at + T > this.stepRows) return;
    const k = this.k;
    for (let i = 0; i < expertIndices.length; i++) if (r[expertIndices[i]!] === 1) this.rowRare[at + ((i / k) | 0)]!++;
  };

  decodeStep(batch: BatchEntry[]): Float32Array[] {
    this.pending = null;
    const N = batch.reduce((s, b) => s + b.ids.length, 0);
    this.stepRows = N;
    this.cursor.fill(0);
    this.rowRare = new Int32Array(N);
    this.inStep = true;
    let out: Float32Array[];
    try {
      out = this.inner.decodeStep(batch);
    } finally {
      this.inStep = false;
    }
    if (this.tracked.some((l) => this.cursor[l] !== N)) {
      this.incompleteSteps++;
      return out;
    }
    const routedPerRow = this.tracked.length * this.k;
    let row = 0;
    this.pending = batch.map(({ ids }) => {
      const t: RareTally = { tokens: ids.length, rareTokens: 0, routed: ids.length * routedPerRow, rareRouted: 0 };
      for (let i = 0; i < ids.length; i++, row++) {
        const n = this.rowRare[row]!;
        if (n > 0) { t.rareTokens++; t.rareRouted += n; }
      }
      return t;
    });
    return out;
  }

  resetSlot(slot: number): void {
    this.inner.resetSlot(slot);
  }

  /** Adds the last step's per-entry tallies to the sequences named in batch order (the engine's StepInfo.sequences). */
  attribute(sequenceIds: readonly number[]): void {
    const p = this.pending;
    this.pending = null;
    if (!p || p.length !== sequenceIds.length) return; // the step failed or ran nothing
    sequenceIds.forEach((id, i) => {
      let t = this.bySequence.get(id);
      if (!t) this.bySequence.set(id, (t = emptyTally()));
      addTally(t, p[i]!);
    });
  }

  /** A finished sequence's tally (all zero when it never ran); forgets it. */
  take(sequenceId: number): RareTally {
    const t = this.bySequence.get(sequenceId) ?? emptyTally();
    this.bySequence.delete(sequenceId);
    return t;
  }

  /** Sequences with a tally not yet taken (bounded by the requests in flight). */
  get openSequences(): number {
    return this.bySequence.size;
  }
}
