// The expert cache's reader thread: positioned reads of expert bytes from the model file into shared staging memory, while the main thread computes.
//
// Protocol (expert-reader.ts is the other side): the main thread posts { seq, reads }; this thread
// reads each range into the staging buffer, writes the outcome into the control words, then
// publishes seq in CTL.done and notifies. File descriptors are the process's, opened by the main
// thread (ExpertFiles); this thread never opens or closes one.

import { parentPort, workerData } from 'node:worker_threads';
import { readSync } from 'node:fs';
import { CTL, READ_STATUS, type ReaderInit, type StagedRead } from './expert-reader-protocol.js';

const init = workerData as ReaderInit;
const staging = new Uint8Array(init.staging);
const ctl = new Int32Array(init.ctl);
const endAt = new Float64Array(init.endAt);
const errText = new Uint8Array(init.errText);

function run(reads: readonly StagedRead[]): void {
  let i = 0;
  try {
    for (; i < reads.length; i++) {
      const r = reads[i]!;
      let done = 0;
      while (done < r.bytes) {
        // readSync caps one call at 2 GiB and may return short: loop
        const got = readSync(r.fd, staging, r.at + done, Math.min(r.bytes - done, 1 << 30), r.position + done);
        if (got === 0) {
          endAt[0] = r.position + done;
          ctl[CTL.status] = READ_STATUS.eof;
          ctl[CTL.failed] = i;
          return;
        }
        done += got;
      }
    }
    ctl[CTL.status] = READ_STATUS.ok;
    ctl[CTL.failed] = -1;
  } catch (e) {
    const msg = new TextEncoder().encode(String((e as Error).message ?? e)).subarray(0, errText.length);
    errText.fill(0);
    errText.set(msg);
    ctl[CTL.errLength] = msg.length;
    ctl[CTL.status] = READ_STATUS.error;
    ctl[CTL.failed] = i;
  }
}

parentPort!.on('message', (m: { seq: number; reads: StagedRead[] }) => {
  run(m.reads);
  Atomics.store(ctl, CTL.done, m.seq);
  Atomics.notify(ctl, CTL.done);
});
Atomics.store(ctl, CTL.ready, 1);
Atomics.notify(ctl, CTL.ready);
