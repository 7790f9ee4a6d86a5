// The expert cache's reader thread: positioned reads of a layer's missing experts from the model file into shared staging places, while the main thread computes.
//
// Protocol in expert-reader-protocol.ts. File descriptors are the process's, opened by the main
// thread (ExpertFiles); this thread never opens or closes one.

import { parentPort, workerData } from 'node:worker_threads';
import { readSync } from 'node:fs';
import { CTL, ERR_TEXT_BYTES, READ_STATUS, RING, ringWord, type FileRange, type ReaderInit, type ReaderJob, type ReaderRegister } from './expert-reader-protocol.js';

const init = workerData as ReaderInit;
const staging = new Uint8Array(init.staging);
const ctl = new Int32Array(init.ctl);
const endAt = new Float64Array(init.endAt);
const errText = new Uint8Array(init.errText);
const W = init.places;
/** Registered destination buffers (cache slot stacks), by index. */
const dests: Uint8Array[] = [];

/** Reads one expert's ranges back to back into place p (or each straight to its dest); the outcome goes into the place's words. */
function readExpert(reads: readonly FileRange[], p: number): void {
  let at = p * init.placeBytes;
  let j = 0;
  try {
    for (; j < reads.length; j++) {
      const r = reads[j]!;
      const buf = r.dest ? dests[r.dest.buf] : staging;
      if (!buf) throw new Error(`reader thread: destination buffer ${r.dest!.buf} was never registered`);
      const base = r.dest ? r.dest.at : at;
      let done = 0;
      while (done < r.bytes) {
        // readSync caps one call at 2 GiB and may return short: loop
        const got = readSync(r.fd, buf, base + done, Math.min(r.bytes - done, 1 << 30), r.position + done);
        if (got === 0) {
          endAt[p] = r.position + done;
          ctl[ringWord(p, RING.status)] = READ_STATUS.eof;
          ctl[ringWord(p, RING.failedRead)] = j;
          return;
        }
        done += got;
      }
      at += r.bytes;
    }
    ctl[ringWord(p, RING.status)] = READ_STATUS.ok;
  } catch (e) {
    const msg = new TextEncoder().encode(String((e as Error).message ?? e)).subarray(0, ERR_TEXT_BYTES);
    errText.set(msg, p * ERR_TEXT_BYTES);
    ctl[ringWord(p, RING.errLength)] = msg.length;
    ctl[ringWord(p, RING.status)] = READ_STATUS.error;
    ctl[ringWord(p, RING.failedRead)] = j;
  }
}

function run(job: ReaderJob): void {
  const M = job.experts.length;
  for (;;) {
    const c = Atomics.load(ctl, CTL.claim);
    if (c >= M) break;
    const released = Atomics.load(ctl, CTL.released);
    if (c >= released) {
      // its place still holds an expert the main thread has not copied out
      Atomics.wait(ctl, CTL.released, released, 100);
      continue;
    }
    if (Atomics.compareExchange(ctl, CTL.claim, c, c + 1) !== c) continue; // the main thread took it
    const p = c % W;
    readExpert(job.experts[c]!, p);
    Atomics.store(ctl, ringWord(p, RING.done), c + 1);
    Atomics.notify(ctl, ringWord(p, RING.done));
  }
}

parentPort!.on('message', (msg: ReaderJob | ReaderRegister) => {
  if ('register' in msg) {
    for (const b of msg.register) dests.push(new Uint8Array(b));
    return;
  }
  const job = msg;
  run(job);
  Atomics.store(ctl, CTL.jobDone, job.seq);
  Atomics.notify(ctl, CTL.jobDone);
});
Atomics.store(ctl, CTL.ready, 1);
Atomics.notify(ctl, CTL.ready);
