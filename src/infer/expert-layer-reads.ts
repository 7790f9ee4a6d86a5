// The expert cache's reads on the reader thread: one layer's misses (straight into their slots when they fit beside the hits, else through the staging places and a copy), and pre-gating's prefetch of the next layer's experts.

import type { LayerExperts } from './expert-layer.js';
import type { ExpertReader } from './expert-reader.js';

/**
 * Read i (expert e) from the reader: null when this thread is to read it itself (the reader had not
 * begun it), else the finished read, the time waited for it counted and a failed read thrown.
 */
function takeRead(L: LayerExperts, e: number, i: number): Exclude<ReturnType<ExpertReader['take']>, { mine: true }> | null {
  const t0 = performance.now();
  const got = L.reader!.take(i);
  if (got.mine) return null;
  L.stats.waitMs += performance.now() - t0;
  if (got.failedRead >= 0) throw L.readError(e, got.failedRead, got.endAt, got.error);
  return got;
}

/**
 * The misses with the reader thread when they fit the slots beside the hits: each is given its
 * slot first, and the reader reads them in order straight into those slots (at most `places`
 * ahead of what this thread has consumed) while the hits compute; this thread takes them in
 * rounds of `places` and computes each round while the reader reads the next. An expert the
 * reader has not begun is read here, into the same slot. No staging copy.
 *
 * background: misses computed on their low-precision copies whose full weights the reader may
 * read too, into free slots, after the misses above (at most `places`, as many as free slots):
 * one read by the time the layer is done stays resident for the next step, the rest are dropped
 * (never waited for). HOBBIT's "compute the copy while the full expert loads".
 */
export function directReads(L: LayerExperts, hits: readonly number[], misses: readonly number[], compute: (round: readonly number[]) => void, first: () => void,
  background: readonly number[] = []): void {
  const reader = L.reader!;
  if (L.registeredWith !== reader) {
    L.destBufs = reader.register(L.slotBuffers);
    L.registeredWith = reader;
  }
  const R = Math.max(1, reader.places);
  const slots = misses.map((e) => {
    const { slot } = L.pool.place(e);
    L.pool.pin(slot);
    return slot;
  });
  const filled = misses.map(() => false);
  // free slots (not pinned by a hit or a miss) for background reads, evicted by the pool's rule
  const later = background.slice(0, Math.max(0, Math.min(L.pool.numSlots - hits.length - misses.length, reader.places)));
  for (const e of later) {
    const { slot } = L.pool.place(e);
    L.pool.pin(slot);
    slots.push(slot);
  }
  let cleanExit = false;
  try {
    reader.start([...misses, ...later].map((e, i) => L.ranges.map((rs, p) => {
      const r = rs[e]!;
      return { fd: L.files.fd(r.file), position: r.offset, bytes: r.bytes, dest: { buf: L.destBufs[p]!, at: slots[i]! * L.projBytes(p) } };
    })));
    first();
    if (hits.length > 0) compute(hits);
    for (let at = 0; at < misses.length; at += R) {
      const round = misses.slice(at, at + R);
      round.forEach((e, j) => {
        const i = at + j;
        if (!takeRead(L, e, i)) {
          L.readInto(e, slots[i]!);
        } else {
          L.stats.staged++;
        }
        filled[i] = true;
        L.stats.bytesLoaded += L.expertBytes;
        reader.release(i);
        L.pool.use(e);
      });
      compute(round);
    }
    cleanExit = true;
  } finally {
    // the reader must be idle before a slot it may still write is given up (or the file closed)
    reader.finish();
    misses.forEach((_, i) => { if (!filled[i]) L.pool.clear(slots[i]!); });
    // background reads: kept if the reader finished them (it is idle now), else the slot is given up
    later.forEach((_, j) => {
      const i = misses.length + j;
      if (cleanExit && reader.readOk(i)) {
        L.stats.bytesLoaded += L.expertBytes;
        L.stats.staged++;
        L.stats.backgroundLoads++;
      } else {
        L.pool.clear(slots[i]!);
      }
    });
  }
}

/**
 * The misses with the reader thread: it reads them in order into its staging places (at most
 * `places` ahead of what this thread has consumed) while the hits, then each earlier round,
 * compute; this thread takes them in order in rounds of at most min(cap, places): a read one is
 * copied into a slot, one the reader has not begun is read here straight into a slot (no waiting
 * for a reader that gets no core), one in progress is waited for.
 */
export function stagedReads(L: LayerExperts, hits: readonly number[], misses: readonly number[], compute: (round: readonly number[]) => void, cap: number, first: () => void): void {
  const reader = L.reader!;
  const R = Math.max(1, Math.min(cap, reader.places));
  reader.start(misses.map((e) => L.ranges.map((rs) => {
    const r = rs[e]!;
    return { fd: L.files.fd(r.file), position: r.offset, bytes: r.bytes };
  })));
  try {
    first();
    if (hits.length > 0) compute(hits);
    for (let at = 0; at < misses.length; at += R) {
      const round = misses.slice(at, at + R);
      round.forEach((e, j) => {
        const i = at + j;
        const got = takeRead(L, e, i);
        if (!got) {
          L.load(e);
        } else {
          const { slot } = L.pool.place(e);
          let from = got.at;
          for (let p = 0; p < L.ranges.length; p++) {
            const bytes = L.projBytes(p);
            L.slotView(p, slot).set(reader.staging.subarray(from, from + bytes));
            from += bytes;
          }
          L.stats.bytesLoaded += L.expertBytes;
          L.stats.staged++;
        }
        reader.release(i);
        L.pool.use(e);
        L.pool.pin(L.pool.slot(e));
      });
      compute(round);
    }
  } finally {
    // the reader must be idle before its places are reused (or the file closed)
    reader.finish();
  }
}

/**
 * The layer whose pre-gating prefetch job the reader thread holds (one job at a time per reader):
 * another layer settles it before using the reader, and reads its own misses on the calling thread
 * while it is held by the next layer's prefetch.
 */
const prefetching = new WeakMap<ExpertReader, LayerExperts>();

/**
 * Pre-gating with the reader thread: the predicted experts get their slots (pinned) now and the
 * reader reads them straight into those slots while the calling layer computes; L's
 * forward takes them (settlePrefetch) before it touches its slots. Whoever held the reader
 * (the layer now computing, prefetched by the one before) is settled first.
 */
export function prefetchAsync(L: LayerExperts, experts: Iterable<number>): void {
  const reader = L.reader!;
  const held = prefetching.get(reader);
  if (held) settlePrefetch(held);
  if (L.registeredWith !== reader) {
    L.destBufs = reader.register(L.slotBuffers);
    L.registeredWith = reader;
  }
  const list: number[] = [];
  const slots: number[] = [];
  let n = 0;
  for (const e of experts) {
    if (n++ >= L.pool.numSlots) break;
    if (L.pool.slot(e) >= 0) continue;
    const { slot } = L.pool.place(e);
    L.pool.pin(slot);
    list.push(e);
    slots.push(slot);
  }
  if (list.length === 0) return;
  reader.start(list.map((e, i) => L.ranges.map((rs, p) => {
    const r = rs[e]!;
    return { fd: L.files.fd(r.file), position: r.offset, bytes: r.bytes, dest: { buf: L.destBufs[p]!, at: slots[i]! * L.projBytes(p) } };
  })));
  L.pendingPrefetch = { reader, experts: list, slots };
  prefetching.set(reader, L);
}

/**
 * Ends L's pending prefetch: each expert the reader has read is taken, one it has not
 * begun is read here, the reader is idle again and the slots are unpinned. A read that failed
 * is thrown (naming the file and expert) and its slot emptied. Nothing pending: nothing to do.
 */
export function settlePrefetch(L: LayerExperts): void {
  const pf = L.pendingPrefetch;
  if (!pf) return;
  L.pendingPrefetch = null;
  if (prefetching.get(pf.reader) === L) prefetching.delete(pf.reader);
  const filled = pf.experts.map(() => false);
  try {
    // a reader closed since (setAsyncLoads) finished its job unchecked: its slots are given up below
    if (pf.reader !== L.reader) return;
    pf.experts.forEach((e, i) => {
      if (!takeRead(L, e, i)) L.readInto(e, pf.slots[i]!);
      else L.stats.staged++;
      filled[i] = true;
      pf.reader.release(i);
      L.stats.bytesLoaded += L.expertBytes;
      L.stats.prefetched++;
      L.prefetchedNow.add(e);
    });
  } finally {
    pf.reader.finish();
    pf.slots.forEach((s, i) => {
      L.pool.unpin(s);
      if (!filled[i]) L.pool.clear(s);
    });
  }
}

/** The reader for L's own misses: null while it reads the next layer's prefetch (misses then read on the calling thread). */
export function freeReader(L: LayerExperts): ExpertReader | null {
  const r = L.reader;
  return r && !prefetching.has(r) ? r : null;
}
