// The expert cache's asynchronous reads: a worker thread reads experts from the model file into shared staging memory while the main thread computes.
//
// Why a thread and not fs.promises: the model's forward is synchronous (the server's decode step,
// generate), so the main thread can only wait for a read with Atomics.wait, never for a promise.
// Why staging and a copy: the native kernels take ArrayBuffer-backed arrays only (the addon reads
// them through napi_get_arraybuffer_info, which refuses a SharedArrayBuffer), and a worker can only
// write shared memory. The copy into a slot runs at memory speed (~10x a page-cache read here).

import { Worker } from 'node:worker_threads';
import { CTL, CTL_WORDS, ERR_TEXT_BYTES, READ_STATUS, type ReaderInit, type StagedRead } from './expert-reader-protocol.js';

export type { StagedRead } from './expert-reader-protocol.js';

/** How a batch ended: failed is the index of the read that failed (-1: all done). */
export interface ReadOutcome {
  failed: number;
  /** Where the file ended (the failed read hit the end of the file), else null. */
  endAt: number | null;
  /** The exception's message (the failed read threw: EBADF, EIO, ...), else null. */
  error: string | null;
}

/** One reader thread and its staging buffer; one batch in flight at a time. */
export class ExpertReader {
  readonly staging: Uint8Array;
  private readonly ctl: Int32Array;
  private readonly endAt: Float64Array;
  private readonly errText: Uint8Array;
  private readonly init: ReaderInit;
  private worker: Worker | null = null;
  private issued = 0;
  private closed = false;

  constructor(stagingBytes: number, private readonly timeoutMs = 60_000) {
    if (!(Number.isInteger(stagingBytes) && stagingBytes > 0)) throw new Error(`ExpertReader: staging bytes ${stagingBytes} must be a positive integer`);
    const init: ReaderInit = {
      staging: new SharedArrayBuffer(stagingBytes),
      ctl: new SharedArrayBuffer(CTL_WORDS * 4),
      endAt: new SharedArrayBuffer(8),
      errText: new SharedArrayBuffer(ERR_TEXT_BYTES),
    };
    this.staging = new Uint8Array(init.staging);
    this.ctl = new Int32Array(init.ctl);
    this.endAt = new Float64Array(init.endAt);
    this.errText = new Uint8Array(init.errText);
    this.init = init;
  }

  /** True while a batch is issued and not yet waited for. */
  get busy(): boolean {
    return Atomics.load(this.ctl, CTL.done) < this.issued;
  }

  /** Starts reading a batch (the thread starts on the first call); returns its ticket for wait(). */
  issue(reads: readonly StagedRead[]): number {
    if (this.closed) throw new Error('expert reader: closed');
    if (this.busy) throw new Error('expert reader: a batch is already in flight (wait for it first)');
    for (const r of reads) {
      if (!(r.at >= 0 && r.bytes >= 0 && r.at + r.bytes <= this.staging.byteLength)) {
        throw new Error(`expert reader: read of ${r.bytes} bytes at staging byte ${r.at} is outside the ${this.staging.byteLength}-byte staging buffer`);
      }
    }
    if (!this.worker) {
      this.worker = new Worker(new URL('./expert-read-worker.js', import.meta.url), { workerData: this.init });
      // a forgotten cache must not keep the process alive
      this.worker.unref();
      this.worker.on('error', () => { /* seen as a timeout by wait(), which names it */ });
    }
    this.worker.postMessage({ seq: ++this.issued, reads });
    return this.issued;
  }

  /** Blocks until batch `ticket` is read; returns how it ended. */
  wait(ticket: number): ReadOutcome {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const done = Atomics.load(this.ctl, CTL.done);
      if (done >= ticket) break;
      const left = deadline - Date.now();
      if (left <= 0) {
        const started = Atomics.load(this.ctl, CTL.ready) === 1;
        throw new Error(`expert reader: no answer from the reader thread in ${this.timeoutMs} ms (${started ? 'it started, then stopped answering' : 'it never started'})`);
      }
      Atomics.wait(this.ctl, CTL.done, done, Math.min(left, 1000));
    }
    const status = this.ctl[CTL.status]!;
    if (status === READ_STATUS.ok) return { failed: -1, endAt: null, error: null };
    const failed = this.ctl[CTL.failed]!;
    if (status === READ_STATUS.eof) return { failed, endAt: this.endAt[0]!, error: null };
    return { failed, endAt: null, error: new TextDecoder().decode(this.errText.slice(0, this.ctl[CTL.errLength]!)) };
  }

  /** Waits for a batch in flight (if any), then stops the thread. */
  close(): void {
    if (this.closed) return;
    if (this.busy) {
      try { this.wait(this.issued); } catch { /* closing anyway */ }
    }
    this.closed = true;
    void this.worker?.terminate();
    this.worker = null;
  }
}
