// Scratch buffers for an op's transients: a buffer borrowed and given back within one op call (or
// one backward closure, or once the first backward has used what the forward saved) and never seen
// by the caller. An MoE layer's forward+backward at E = 8, T = 4096 allocated 272 MiB of
// transients per step (gathered rows, the hidden activation, backward's gradients); each large
// allocation counts as external memory for V8, which then runs its garbage collector more often
// (GC and allocation took ~20 ms of a ~320 ms step, profiled). Reusing the same buffers leaves
// both out of the hot path, as PyTorch's caching allocator does for its tensors.

import { allocUninitialized, isPoisoningUninitialized, type FloatArray } from './dtype.js';

/** Buffers below this size are allocated normally (cheap, and not worth holding on to). */
let minBytes = 1 << 20;

const DEFAULT_LIMIT_BYTES = 512 * 2 ** 20;

type FloatDType = 'float32' | 'float64';

const free = new Map<string, FloatArray[]>();
/**
 * The buffers lent out now, by their ArrayBuffer (a view given back finds its whole buffer); weak,
 * so that a buffer never given back (an op that threw half-way) is collected as usual.
 */
const lent = new WeakMap<ArrayBufferLike, FloatArray>();
let heldBytes = 0;
let limitBytes = readLimit();
let stats = { taken: 0, reused: 0 };

function readLimit(): number {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.MOE_SCRATCH_MAX_MB;
  if (env === undefined || env === '') return DEFAULT_LIMIT_BYTES;
  const mb = Number(env);
  if (!Number.isFinite(mb) || mb < 0) throw new Error(`MOE_SCRATCH_MAX_MB must be a number of MiB >= 0, got '${env}'`);
  return mb * 2 ** 20;
}

/** The free list of buffers of this dtype and size class. */
function keyOf(a: FloatArray): string {
  return `${a instanceof Float32Array ? 'float32' : 'float64'}:${a.length}`;
}

/**
 * The size class of n elements: n rounded up to 1, 1.25, 1.5 or 1.75 times a power of two, so
 * that calls whose row counts differ a little (capacity drops, a different batch) share buffers
 * at a waste of at most a quarter.
 */
function sizeClass(n: number): number {
  if (n <= 4) return n;
  const p = 2 ** Math.floor(Math.log2(n));
  const step = p / 4;
  return Math.ceil(n / step) * step;
}

/**
 * A buffer of n elements with unspecified contents (NaN under the tests' poison, like
 * allocUninitialized), to be given back with giveScratch once nothing reads it any more.
 */
export function takeScratch(dtype: FloatDType, n: number): FloatArray {
  const width = dtype === 'float32' ? 4 : 8;
  if (n * width < minBytes) return allocUninitialized(dtype, n) as FloatArray;
  stats.taken++;
  const cls = sizeClass(n);
  const list = free.get(`${dtype}:${cls}`);
  let full = list?.pop();
  if (full) {
    stats.reused++;
    heldBytes -= full.byteLength;
    if (isPoisoningUninitialized()) full.fill(NaN);
  } else {
    full = allocUninitialized(dtype, cls) as FloatArray;
  }
  lent.set(full.buffer, full);
  return full.length === n ? full : full.subarray(0, n);
}

/**
 * Gives buffers from takeScratch back for reuse (kept while the pool holds at most
 * MOE_SCRATCH_MAX_MB, default 512 MiB; dropped to the garbage collector beyond). Arrays that did
 * not come from takeScratch (small ones, or a caller's) are ignored, so callers may pass any array
 * they own outright; giving one buffer twice is a no-op.
 */
export function giveScratch(...arrays: Array<FloatArray | null | undefined>): void {
  for (const a of arrays) {
    if (!a) continue;
    const full = lent.get(a.buffer);
    if (!full) continue;
    lent.delete(a.buffer);
    if (heldBytes + full.byteLength > limitBytes) continue;
    heldBytes += full.byteLength;
    const key = keyOf(full);
    let list = free.get(key);
    if (!list) free.set(key, (list = []));
    list.push(full);
  }
}

/** Drops every held scratch buffer (memory goes back at the next garbage collection). */
export function releaseScratch(): void {
  free.clear();
  heldBytes = 0;
}

/** Sets the most bytes held for reuse (0: no reuse); returns the previous limit. */
export function setScratchLimit(bytes: number): number {
  if (!Number.isFinite(bytes) || bytes < 0) throw new Error(`setScratchLimit: bytes must be >= 0, got ${bytes}`);
  const prev = limitBytes;
  limitBytes = bytes;
  if (heldBytes > limitBytes) releaseScratch();
  return prev;
}

/** Held bytes, the limit, and how many large takes there were and how many reused a held buffer. */
export function scratchStats(): { heldBytes: number; taken: number; reused: number; limitBytes: number } {
  return { heldBytes, taken: stats.taken, reused: stats.reused, limitBytes };
}

/**
 * Tests: pool buffers from this many bytes on (default 1 MiB), so that small test shapes go
 * through the pool too; returns the previous value.
 */
export function setScratchMinBytes(bytes: number): number {
  const prev = minBytes;
  minBytes = bytes;
  return prev;
}

/** Tests: forget counters. */
export function resetScratchStats(): void {
  stats = { taken: 0, reused: 0 };
}
