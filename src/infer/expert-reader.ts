// The expert cache's asynchronous reads: a worker thread reads a layer's missing experts from the model file into shared staging places while the main thread computes.
//
// Why a thread and not fs.promises: the model's forward is synchronous (the server's decode step,
// generate), so the main thread can only wait for a read with Atomics.wait, never for a promise.
// Direct and staged reads: the cache's slots live in SharedArrayBuffers (the native kernels take
// them since the addon reads typed arrays through napi_get_typedarray_info), registered with the
// reader (register), so a miss that has its slot before the job starts is read straight into it.
// Misses of a step that overflows the slots are read into the staging places instead and copied
// into a slot when the forward reaches them (their slot is freed by an earlier round only then).
// Why the main thread takes indices too: on a busy machine the reader thread may get no core for
// a while; the main thread then reads the next expert itself instead of waiting (never slower than
// reading everything on the main thread, but for the copies of what the reader did read).

import { Worker } from 'node:worker_threads';
import { CANCELLED, CTL, CTL_WORDS, ERR_TEXT_BYTES, READ_STATUS, RING, RING_WORDS, ringWord, type FileRange, type ReaderInit, type ReaderRegister } from './expert-reader-protocol.js';

export type { FileRange } from './expert-reader-protocol.js';

/** Index i of a job: read by the main thread itself ('mine'), or by the reader into staging at byte `at`. */
export type Taken =
  | { mine: true }
  | { mine: false; at: number; failedRead: number; endAt: number | null; error: string | null };

/** One reader thread and its ring of staging places; one job (a layer's misses) at a time. */
export class ExpertReader {
  readonly staging: Uint8Array;
  private readonly ctl: Int32Array;
  private readonly endAt: Float64Array;
  private readonly errText: Uint8Array;
  private readonly init: ReaderInit;
  private worker: Worker | null = null;
  private seq = 0;
  private jobLength = -1; // -1: no job open
  private closed = false;
  private registered = 0;

  /**
   * places: experts the reader may read ahead; placeBytes: one expert's bytes. mainReads false:
   * take() always waits for the reader (tests that must see the reader's reads; a slower schedule).
   */
  constructor(readonly places: number, readonly placeBytes: number, private readonly opts: { mainReads?: boolean; timeoutMs?: number } = {}) {
    if (!(Number.isInteger(places) && places >= 1)) throw new Error(`ExpertReader: places ${places} must be a positive integer`);
    if (!(Number.isInteger(placeBytes) && placeBytes >= 1)) throw new Error(`ExpertReader: place bytes ${placeBytes} must be a positive integer`);
    this.init = {
      staging: new SharedArrayBuffer(places * placeBytes), places, placeBytes,
      ctl: new SharedArrayBuffer((CTL_WORDS + places * RING_WORDS) * 4),
      endAt: new SharedArrayBuffer(places * 8),
      errText: new SharedArrayBuffer(places * ERR_TEXT_BYTES),
    };
    this.staging = new Uint8Array(this.init.staging);
    this.ctl = new Int32Array(this.init.ctl);
    this.endAt = new Float64Array(this.init.endAt);
    this.errText = new Uint8Array(this.init.errText);
  }

  /**
   * Opens a job: experts[i] are expert i's ranges, read back to back into one place. The reader
   * thread (started on the first job) begins at once; take(i) for i = 0, 1, ... in order.
   */
  start(experts: readonly (readonly FileRange[])[]): void {
    if (this.closed) throw new Error('expert reader: closed');
    if (this.jobLength >= 0) throw new Error('expert reader: a job is already open (finish it first)');
    experts.forEach((rs, i) => {
      const bytes = rs.reduce((s, r) => s + (r.dest ? 0 : r.bytes), 0);
      if (bytes > this.placeBytes) throw new Error(`expert reader: expert ${i} of the job has ${bytes} bytes, a staging place holds ${this.placeBytes}`);
      for (const r of rs) {
        if (r.dest && !(r.dest.buf >= 0 && r.dest.buf < this.registered)) throw new Error(`expert reader: expert ${i} of the job names buffer ${r.dest.buf}; ${this.registered} are registered`);
      }
    });
    // the reader is idle between jobs (finish waited for it): the words are ours to reset
    for (let p = 0; p < this.places; p++) Atomics.store(this.ctl, ringWord(p, RING.done), 0);
    Atomics.store(this.ctl, CTL.claim, 0);
    Atomics.store(this.ctl, CTL.released, this.places);
    this.jobLength = experts.length;
    this.thread().postMessage({ seq: ++this.seq, experts });
  }

  /**
   * Buffers the reader may then write into directly (FileRange.dest): e.g. a layer's slot stacks,
   * which the kernels read as they are (no staging copy). Returns their indices, in order.
   */
  register(buffers: readonly SharedArrayBuffer[]): number[] {
    if (this.closed) throw new Error('expert reader: closed');
    const first = this.registered;
    this.registered += buffers.length;
    this.thread().postMessage({ register: [...buffers] } satisfies ReaderRegister);
    return buffers.map((_, i) => first + i);
  }

  /** The worker, started on first use (messages reach it in order: a registration before the jobs that use it). */
  private thread(): Worker {
    if (!this.worker) {
      this.worker = new Worker(new URL('./expert-read-worker.js', import.meta.url), { workerData: this.init });
      // a forgotten cache must not keep the process alive
      this.worker.unref();
      this.worker.on('error', () => { /* seen as a timeout by the next wait, which names it */ });
    }
    return this.worker;
  }

  /** Index i (the next in order): claimed for the main thread if the reader has not begun it, else waited for. */
  take(i: number): Taken {
    if (!(i >= 0 && i < this.jobLength)) throw new Error(`expert reader: index ${i} is outside the open job of ${Math.max(0, this.jobLength)} experts`);
    if (this.opts.mainReads !== false && Atomics.compareExchange(this.ctl, CTL.claim, i, i + 1) === i) return { mine: true };
    const p = i % this.places;
    this.waitFor(ringWord(p, RING.done), i + 1);
    const status = this.ctl[ringWord(p, RING.status)]!;
    const failedRead = status === READ_STATUS.ok ? -1 : this.ctl[ringWord(p, RING.failedRead)]!;
    const endAt = status === READ_STATUS.eof ? this.endAt[p]! : null;
    const error = status === READ_STATUS.error
      ? new TextDecoder().decode(this.errText.slice(p * ERR_TEXT_BYTES, p * ERR_TEXT_BYTES + this.ctl[ringWord(p, RING.errLength)]!))
      : null;
    return { mine: false, at: p * this.placeBytes, failedRead, endAt, error };
  }

  /**
   * After finish(): whether the reader read index i of the last job, completely (for indices never
   * taken, e.g. background reads). Place i % places still holds index i's outcome: index i + places
   * is read only after release(i).
   */
  readOk(i: number): boolean {
    const p = i % this.places;
    return Atomics.load(this.ctl, ringWord(p, RING.done)) === i + 1 && Atomics.load(this.ctl, ringWord(p, RING.status)) === READ_STATUS.ok;
  }

  /** Index i is consumed (copied out, or read by the main thread): its place may take index i + places. */
  release(i: number): void {
    Atomics.store(this.ctl, CTL.released, i + 1 + this.places);
    Atomics.notify(this.ctl, CTL.released);
  }

  /** Closes the open job (the rest of its indices are not read) and waits until the reader is idle. */
  finish(): void {
    if (this.jobLength < 0) return;
    this.jobLength = -1;
    Atomics.store(this.ctl, CTL.claim, CANCELLED);
    Atomics.store(this.ctl, CTL.released, CANCELLED);
    Atomics.notify(this.ctl, CTL.released);
    this.waitFor(CTL.jobDone, this.seq);
  }

  /** Blocks until ctl[word] >= value, or fails after the timeout naming the reader's state. */
  private waitFor(word: number, value: number): void {
    const timeoutMs = this.opts.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const now = Atomics.load(this.ctl, word);
      if (now >= value) return;
      const left = deadline - Date.now();
      if (left <= 0) {
        const started = Atomics.load(this.ctl, CTL.ready) === 1;
        throw new Error(`expert reader: no answer from the reader thread in ${timeoutMs} ms (${started ? 'it started, then stopped answering' : 'it never started'})`);
      }
      Atomics.wait(this.ctl, word, now, Math.min(left, 1000));
    }
  }

  /** Ends an open job, then stops the thread. */
  close(): void {
    if (this.closed) return;
    try { this.finish(); } catch { /* closing anyway */ }
    this.closed = true;
    void this.worker?.terminate();
    this.worker = null;
  }
}
