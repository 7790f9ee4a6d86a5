// Shared words between the expert cache's main thread and its reader thread (expert-reader.ts, expert-read-worker.ts).
//
// A job is one layer's misses, in order, indices 0 .. M-1. Either thread takes the next index by
// a compare-and-swap on CTL.claim: the reader thread reads its indices into a ring of W staging
// places (index i at place i % W, only while i < CTL.released), the main thread reads its own
// straight into a slot. The main thread consumes the indices in order and releases each place.

/** One positioned read: `bytes` bytes of file descriptor `fd` from `position`; into staging, or straight to byte `at` of registered buffer `buf` (a cache slot). */
export interface FileRange {
  fd: number;
  position: number;
  bytes: number;
  dest?: { buf: number; at: number };
}

/** Buffers the reader may write into (a layer's slot stacks), sent once; FileRange.dest.buf indexes them in order of registration. */
export interface ReaderRegister {
  register: SharedArrayBuffer[];
}

/** What the main thread hands the reader thread at start (all shared memory). */
export interface ReaderInit {
  /** W places of placeBytes each. */
  staging: SharedArrayBuffer;
  places: number;
  placeBytes: number;
  ctl: SharedArrayBuffer; // Int32Array: CTL words, then RING_WORDS per place
  endAt: SharedArrayBuffer; // Float64Array [W]: where the file ended (READ_STATUS.eof)
  errText: SharedArrayBuffer; // Uint8Array [W * ERR_TEXT_BYTES]: an exception's message, UTF-8 (READ_STATUS.error)
}

/** A job: the misses' reads (per expert, its projections in order, laid out back to back in a place, or each at its dest). */
export interface ReaderJob {
  seq: number;
  experts: FileRange[][];
}

/** Control words: the reader is up; the last job finished; the next index to take; indices below `released` may use their place. */
export const CTL = { ready: 0, jobDone: 1, claim: 2, released: 3 } as const;
export const CTL_WORDS = 4;
/** Per place: index + 1 of the expert read there (0: none yet this job), its status, the failed projection, error text length. */
export const RING = { done: 0, status: 1, failedRead: 2, errLength: 3 } as const;
export const RING_WORDS = 4;
export const ERR_TEXT_BYTES = 512;
/** Stored in CTL.claim and CTL.released to end a job early. */
export const CANCELLED = 0x3fffffff;

/** Outcome of one expert's reads: all done, the file ended first, or a read threw. */
export const READ_STATUS = { ok: 0, eof: 1, error: 2 } as const;

export const ringWord = (place: number, word: number): number => CTL_WORDS + place * RING_WORDS + word;
