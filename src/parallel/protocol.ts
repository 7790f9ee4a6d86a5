// The shared-memory protocol between the main thread and the expert-parallel workers: the control
// words, the operations, and the growable shared regions that carry one exchange. The main thread
// issues one operation to every worker and waits (Atomics.wait, with a deadline) for all of them:
// each operation is one phase of the all-to-all, and the wait is its barrier.

import type { StacksMessage } from './expert-stacks.js';

/** Control words per worker, in one Int32Array of WORKER_CTL_WORDS * N. */
/** computeUs: microseconds the last phase spent in expert arithmetic (the rest of a phase is exchange). */
export const CTL = { cmd: 0, done: 1, status: 2, errLen: 3, ready: 4, computeUs: 5 } as const;
export const WORKER_CTL_WORDS = 6;
/** Bytes of error text a worker may leave for the main thread. */
export const ERR_BYTES = 2048;
export const STATUS = { ok: 0, error: 1, exited: 2 } as const;

/** Words of the call block every worker reads for the current operation. */
/** degree: chunks of an overlapped phase; stamp: this phase's number, written to the sync words it completes. */
export const CALL = { op: 0, layer: 1, callId: 2, tokens: 3, rows: 4, flags: 5, backend: 6, arg: 7, degree: 8, stamp: 9 } as const;
export const CALL_WORDS = 10;

/** The largest overlap degree (chunks per exchange); the sync block has a word per (chunk, rank). */
export const MAX_OVERLAP = 64;
/**
 * Sync words of an overlapped phase, Int32 [(MAX_OVERLAP + 1) * N]: word c * N + r holds the stamp
 * of the phase in which rank r finished packing chunk c; word MAX_OVERLAP * N + r the stamp of the
 * phase in which rank r returned the results of all its chunks (the combine may then read them).
 */
export function syncWords(ranks: number): number {
  return (MAX_OVERLAP + 1) * ranks;
}

export const OP = {
  /** Source side of the dispatch: pack my shard's token rows (from IN) into the send buffer. */
  pack: 1,
  /** Expert side of the forward: receive my experts' rows, run them, write the results back (RET). */
  expertForward: 2,
  /** Source side of the combine: sum the returned rows into my shard of OUT (zeroed first). */
  combine: 3,
  /** Expert side of the backward: receive gradient rows, back-propagate, return dx rows, dgates, dW. */
  expertBackward: 4,
  /** Forget the saved state of a forward whose backward will not come. */
  release: 5,
  /**
   * The forward as one phase in CALL.degree chunks (Tutel's overlap degree): chunk c is the c-th
   * run of every rank's experts; a rank packs chunk c + 1 before it computes chunk c, and computes
   * chunk c as soon as every rank has packed it, so one rank's arithmetic overlaps the others'
   * exchange; then, once every rank has returned its rows, the combine.
   */
  forwardOverlap: 6,
  /** The backward in the same chunks: gradient rows packed, experts back-propagated per chunk, dx combined. */
  backwardOverlap: 7,
  /**
   * The optimizer of my experts (sharded-optimizer.ts): CALL.arg is OPTIM.step, .gather or .load;
   * the payload is the port message with seq = CALL.callId (a gather answers with one).
   */
  optim: 8,
  /** Test hooks: throw inside the operation / exit the thread with code `arg`. */
  fail: 90,
  exit: 91,
} as const;
/** Sub-operations of OP.optim (CALL.arg). */
export const OPTIM = { configure: 1, step: 2, gather: 3, load: 4 } as const;

export const OP_NAMES: Record<number, string> = Object.fromEntries(Object.entries(OP).map(([k, v]) => [v, k]));

/** Flag bits of CALL.flags. */
export const FLAG = {
  /** Keep what backward needs. */
  needGrad: 1,
  xGrad: 2,
  gateGrad: 4,
  /** Bit of parameter i (PARAMS order) requiring a gradient: 1 << (8 + i). */
  paramGrad0: 8,
  /** Bit of parameter i whose gradient accumulates in place into the grad region: 1 << (16 + i). */
  accumulate0: 16,
} as const;

export const PARAMS = ['w1', 'w2', 'w3', 'b1', 'b2'] as const;
export type ParamName = (typeof PARAMS)[number];

export const BACKENDS = ['js', 'native'] as const;

/** The growable regions of one exchange (float32 unless noted); views are cut per call to the sizes in use. */
export interface SharedRegions {
  /** [T, d]: token rows in (forward input, or the output gradient in backward). */
  input: SharedArrayBuffer;
  /** [T, d]: token rows out (forward output, or dx). */
  output: SharedArrayBuffer;
  /** [A', d]: the send buffer of the dispatch, r-major blocks (layout.ts). */
  send: SharedArrayBuffer;
  /** [A', d]: the send buffer of the combine, same slots. */
  ret: SharedArrayBuffer;
  /** [A']: the gate of each row; in backward, dgates. */
  gates: SharedArrayBuffer;
  gateGrads: SharedArrayBuffer;
  /** int32: tokenOfRow [A'] then groupSizes [E]. */
  meta: SharedArrayBuffer;
}

/** A layer's experts in shared memory: every parameter [E, ...] and its gradient region. */
export interface LayerMessage {
  type: 'layer';
  id: number;
  numExperts: number;
  dModel: number;
  dHidden: number;
  activation: string;
  params: Partial<Record<ParamName, SharedArrayBuffer>>;
  grads: Partial<Record<ParamName, SharedArrayBuffer>>;
  /** Inference only: the decoder's stacks as stored (expert-stacks.ts), run by expertSwiGLU; params and grads are then empty. */
  stacks?: StacksMessage;
}

export interface WorkerInit {
  rank: number;
  ranks: number;
  ctl: SharedArrayBuffer;
  call: SharedArrayBuffer;
  errors: SharedArrayBuffer;
  regions: SharedRegions;
  /** Int32 [syncWords(ranks)] (see syncWords). */
  sync: SharedArrayBuffer;
  /** A rank waiting for another rank's chunk gives up after this many ms, naming it. */
  peerTimeoutMs: number;
  port: import('node:worker_threads').MessagePort;
}

/** Element shapes of a parameter of an expert bank with E experts. */
export function paramShape(name: ParamName, E: number, d: number, h: number): number[] {
  switch (name) {
    case 'w1': case 'w3': return [E, d, h];
    case 'w2': return [E, h, d];
    case 'b1': return [E, h];
    case 'b2': return [E, d];
  }
}

/** A float32 view of the first n elements of a growable shared region. */
export function f32(sab: SharedArrayBuffer, n: number, offset = 0): Float32Array {
  return new Float32Array(sab, offset * 4, n);
}
