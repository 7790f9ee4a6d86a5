// The entry of an expert-parallel worker thread: loads the worker loop (worker-loop.ts) and, if
// that fails (a module that does not load), leaves the reason in shared memory, so that the main
// thread, blocked on the group's start, fails at once with it instead of waiting out its deadline.

import { workerData } from 'node:worker_threads';
import { CTL, ERR_BYTES, STATUS, WORKER_CTL_WORDS, type WorkerInit } from './protocol.js';

const init = workerData as WorkerInit;
const ctl = new Int32Array(init.ctl, init.rank * WORKER_CTL_WORDS * 4, WORKER_CTL_WORDS);

import('./worker-loop.js').catch((e: unknown) => {
  const text = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
  const bytes = new TextEncoder().encode(text).subarray(0, ERR_BYTES);
  new Uint8Array(init.errors, init.rank * ERR_BYTES, ERR_BYTES).set(bytes);
  Atomics.store(ctl, CTL.errLen, bytes.length);
  Atomics.store(ctl, CTL.status, STATUS.error);
  Atomics.store(ctl, CTL.ready, -1);
  Atomics.notify(ctl, CTL.ready);
});
