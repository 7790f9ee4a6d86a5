// Shared words between the expert cache's main thread and its reader thread (expert-reader.ts, expert-read-worker.ts).

/** One positioned read: `bytes` bytes of file descriptor `fd` from `position` into staging at byte `at`. */
export interface StagedRead {
  fd: number;
  position: number;
  bytes: number;
  at: number;
}

/** What the main thread hands the reader thread at start (all shared memory). */
export interface ReaderInit {
  staging: SharedArrayBuffer;
  ctl: SharedArrayBuffer; // Int32Array, CTL words
  endAt: SharedArrayBuffer; // Float64Array [1]: where the file ended (READ_STATUS.eof)
  errText: SharedArrayBuffer; // Uint8Array: an exception's message, UTF-8 (READ_STATUS.error)
}

/** Indices of the control words. */
export const CTL = { ready: 0, done: 1, status: 2, failed: 3, errLength: 4 } as const;
export const CTL_WORDS = 5;
export const ERR_TEXT_BYTES = 1024;

/** Outcome of the last batch: every read done, the file ended first, or a read threw. */
export const READ_STATUS = { ok: 0, eof: 1, error: 2 } as const;
