// The main thread's side of an expert-parallel group: N worker threads, the shared control block
// and regions, and `run(op)`: issue one phase to every worker and wait for all of them with a
// deadline. A worker that fails, exits or misses the deadline fails the step with an error naming
// it; the group is then broken (every later call says why) and its workers are terminated.

import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import {
  CALL, CALL_WORDS, CTL, ERR_BYTES, OP_NAMES, STATUS, WORKER_CTL_WORDS, syncWords,
  type LayerMessage, type SharedRegions, type WorkerInit,
} from './protocol.js';

export interface ExpertGroupOptions {
  /** Worker threads N (each is one rank: a token shard and E/N experts). */
  workers: number;
  /** Deadline of every exchange phase in ms (default 60000): a dead or hung worker fails the step after it. */
  timeoutMs?: number;
  /** Deadline for the workers to start (default 60000 ms). */
  startupTimeoutMs?: number;
}

/**
 * Waiting ranks give up a little before the main thread's deadline, so that the error names the
 * rank that did not deliver (a rank waiting for a dead peer would otherwise be blamed).
 */
const PEER_TIMEOUT_SHARE = 0.8;

/** Growable shared memory (ES2024; Node 20 has it, the project's ES2022 lib types do not). */
interface GrowableSAB extends SharedArrayBuffer {
  grow(bytes: number): void;
}
const GrowableSharedArrayBuffer = SharedArrayBuffer as unknown as new (bytes: number, opts: { maxByteLength: number }) => GrowableSAB;

/** Largest size of a growable region: 1 GiB of address space each, committed only as used. */
const MAX_REGION_BYTES = 1 << 30;

/** The call block's words of one phase. */
export interface PhaseArgs {
  layer: number;
  callId: number;
  tokens: number;
  rows: number;
  flags: number;
  backend: number;
  arg?: number;
  degree?: number;
}

/** A phase issued by start() and not yet finished. */
export interface PendingPhase {
  readonly op: number;
  readonly what: string;
  readonly seqs: readonly number[];
  readonly t0: number;
  readonly deadline: number;
}

export interface PhaseTiming {
  ms: number;
  calls: number;
}

export class ExpertGroup {
  readonly ranks: number;
  readonly timeoutMs: number;
  readonly regions: SharedRegions;
  /** Wall time per phase name, summed since creation (for the benchmark). */
  readonly timing: Record<string, PhaseTiming> = {};
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  private readonly ctl: Int32Array;
  private readonly call: Int32Array;
  /** Each phase's number, the value ranks write to the sync words they complete in it. */
  private stamp = 0;
  private readonly errors: Uint8Array;
  private readonly exitCodes: Array<number | null>;
  private brokenBy: string | null = null;
  private inFlight: PendingPhase | null = null;
  private closed = false;

  constructor(opts: ExpertGroupOptions) {
    const N = opts.workers;
    if (!Number.isInteger(N) || N < 1) throw new Error(`ExpertGroup: workers = ${N} must be a positive integer`);
    this.ranks = N;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    if (!(this.timeoutMs > 0)) throw new Error(`ExpertGroup: timeoutMs = ${this.timeoutMs} must be positive`);
    const ctlBuf = new SharedArrayBuffer(N * WORKER_CTL_WORDS * 4);
    const callBuf = new SharedArrayBuffer(CALL_WORDS * 4);
    const errBuf = new SharedArrayBuffer(N * ERR_BYTES);
    this.ctl = new Int32Array(ctlBuf);
    this.call = new Int32Array(callBuf);
    this.errors = new Uint8Array(errBuf);
    this.exitCodes = new Array<number | null>(N).fill(null);
    const grow = (): SharedArrayBuffer => new GrowableSharedArrayBuffer(0, { maxByteLength: MAX_REGION_BYTES });
    this.regions = { input: grow(), output: grow(), send: grow(), ret: grow(), gates: grow(), gateGrads: grow(), meta: grow() };
    const sync = new SharedArrayBuffer(syncWords(N) * 4);
    const peerTimeoutMs = Math.max(1, Math.floor(this.timeoutMs * PEER_TIMEOUT_SHARE));
    const url = new URL('./worker.js', import.meta.url);
    for (let r = 0; r < N; r++) {
      const { port1, port2 } = new MessageChannel();
      const init: WorkerInit = { rank: r, ranks: N, ctl: ctlBuf, call: callBuf, errors: errBuf, regions: this.regions, sync, peerTimeoutMs, port: port2 };
      const w = new Worker(url, { workerData: init, transferList: [port2] });
      // a forgotten group must not keep the process alive
      w.unref();
      w.on('exit', (code) => { this.exitCodes[r] = code; });
      w.on('error', () => { /* the exit that follows is what the group reports */ });
      this.workers.push(w);
      this.ports.push(port1);
    }
    const deadline = Date.now() + (opts.startupTimeoutMs ?? 60_000);
    for (let r = 0; r < N; r++) {
      for (;;) {
        const ready = Atomics.load(this.ctl, r * WORKER_CTL_WORDS + CTL.ready);
        if (ready === 1) break;
        if (ready === -1) this.fail(`expert-parallel: worker ${r} failed to start: ${this.errorText(r)}`);
        if (Atomics.load(this.ctl, r * WORKER_CTL_WORDS + CTL.status) === STATUS.exited) this.fail(`expert-parallel: worker ${r} exited while starting`);
        const left = deadline - Date.now();
        if (left <= 0) {
          this.fail(`expert-parallel: worker ${r} did not start within ${opts.startupTimeoutMs ?? 60_000} ms`);
        }
        Atomics.wait(this.ctl, r * WORKER_CTL_WORDS + CTL.ready, 0, Math.min(left, 50));
      }
    }
  }

  /** Sends a layer's shared parameter regions to every worker (read by the worker at its next phase). */
  registerLayer(msg: LayerMessage): void {
    this.check();
    for (const p of this.ports) p.postMessage(msg);
  }

  /**
   * Posts a message to every worker (or to one rank), read at its next phase: the payload of an
   * operation that does not fit the call block (OP.optim's requests and states).
   */
  post(msg: unknown, rank?: number, transfer: ArrayBuffer[] = []): void {
    this.check();
    if (rank !== undefined) this.ports[rank]!.postMessage(msg, transfer);
    else for (const p of this.ports) p.postMessage(msg);
  }

  /**
   * The message of `type` and `seq` a worker posted during the phase that just ended (it posts
   * before it reports done, so it is normally there at once); older ones are dropped. Fails the
   * group, naming the worker, if it does not come within the phase deadline.
   */
  receive<T extends { type: string; seq: number }>(rank: number, type: string, seq: number, what: string): T {
    this.check();
    const deadline = Date.now() + this.timeoutMs;
    const nap = new Int32Array(new SharedArrayBuffer(4));
    for (;;) {
      const m = receiveMessageOnPort(this.ports[rank]!);
      if (m) {
        const msg = m.message as T;
        if (msg.type === type && msg.seq === seq) return msg;
        continue;
      }
      if (Date.now() > deadline) this.fail(`expert-parallel: worker ${rank} sent no '${type}' for ${what} within ${this.timeoutMs} ms`);
      Atomics.wait(nap, 0, 0, 1);
    }
  }

  /** Test hook: worker `rank` exits with `code` when it starts its next phase of operation `op` (a death mid-step). */
  injectExit(rank: number, op: number, code: number): void {
    this.post({ type: 'exitAt', op, code }, rank);
  }

  /** Grows a region to hold at least `bytes`. */
  ensure(region: keyof SharedRegions, bytes: number): void {
    const sab = this.regions[region];
    if (sab.byteLength >= bytes) return;
    if (bytes > MAX_REGION_BYTES) throw new Error(`expert-parallel: the ${region} region needs ${bytes} bytes, above the ${MAX_REGION_BYTES} limit (use fewer tokens per step)`);
    (sab as GrowableSAB).grow(Math.min(MAX_REGION_BYTES, Math.max(bytes, Math.ceil(sab.byteLength * 1.5))));
  }

  /**
   * Runs one phase on every worker and waits for all (the barrier). `what` names the phase in
   * errors (e.g. "layer 0 forward"). Throws, naming the worker, on error, exit or deadline.
   */
  run(op: number, args: PhaseArgs, what: string): void {
    this.finish(this.start(op, args, what));
  }

  /**
   * Issues one phase to every worker and returns at once: the main thread may work on its own
   * memory meanwhile (the sharded optimizer steps the non-expert parameters), then must call
   * finish() before anything else touches the group.
   */
  start(op: number, args: PhaseArgs, what: string): PendingPhase {
    this.check();
    if (this.inFlight) throw new Error(`expert-parallel: ${what} issued while '${OP_NAMES[this.inFlight.op] ?? this.inFlight.op}' (${this.inFlight.what}) is still running (finish it first)`);
    const c = this.call;
    c[CALL.op] = op;
    c[CALL.layer] = args.layer;
    c[CALL.callId] = args.callId;
    c[CALL.tokens] = args.tokens;
    c[CALL.rows] = args.rows;
    c[CALL.flags] = args.flags;
    c[CALL.backend] = args.backend;
    c[CALL.arg] = args.arg ?? 0;
    c[CALL.degree] = args.degree ?? 1;
    // wraps after 2^31 phases; a stale word could only match a stamp issued 2^32 phases earlier
    this.stamp = (this.stamp + 1) | 0;
    c[CALL.stamp] = this.stamp;
    const t0 = performance.now();
    const seqs: number[] = [];
    for (let r = 0; r < this.ranks; r++) {
      const base = r * WORKER_CTL_WORDS;
      Atomics.store(this.ctl, base + CTL.status, STATUS.ok);
      // Atomics.add is a full barrier: the call block and regions written above are visible to the worker
      seqs.push(Atomics.add(this.ctl, base + CTL.cmd, 1) + 1);
      Atomics.notify(this.ctl, base + CTL.cmd);
    }
    this.inFlight = { op, what, seqs, t0, deadline: Date.now() + this.timeoutMs };
    return this.inFlight;
  }

  /** Waits for every worker to finish the phase start() issued (the barrier); throws, naming the worker, on error, exit or deadline. */
  finish(phase: PendingPhase): void {
    if (phase !== this.inFlight) throw new Error(`expert-parallel: finish() of '${OP_NAMES[phase.op] ?? phase.op}' (${phase.what}), which is not the phase in flight`);
    this.inFlight = null;
    this.check();
    const { op, what, seqs, t0, deadline } = phase;
    const name = `'${OP_NAMES[op] ?? op}' (${what})`;
    for (let r = 0; r < this.ranks; r++) {
      const base = r * WORKER_CTL_WORDS;
      for (;;) {
        const done = Atomics.load(this.ctl, base + CTL.done);
        const status = Atomics.load(this.ctl, base + CTL.status);
        if (status === STATUS.exited || this.exitCodes[r] !== null) {
          this.fail(`expert-parallel: worker ${r} exited${this.exitCodes[r] !== null ? ` (code ${this.exitCodes[r]})` : ''} during ${name}; the step failed (resume the run from its last checkpoint)`);
        }
        if (done === seqs[r]) {
          if (status === STATUS.error) this.fail(`expert-parallel: worker ${r} failed in ${name}: ${this.errorText(r)}`);
          break;
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          this.fail(`expert-parallel: worker ${r} did not finish ${name} within ${this.timeoutMs} ms (terminated, crashed or hung); the step failed (resume the run from its last checkpoint)`);
        }
        Atomics.wait(this.ctl, base + CTL.done, done, Math.min(left, 100));
      }
    }
    const key = OP_NAMES[op] ?? String(op);
    const t = (this.timing[key] ??= { ms: 0, calls: 0 });
    t.ms += performance.now() - t0;
    t.calls++;
    // the phase waits for its slowest rank: its critical path holds the largest compute time
    let compute = 0;
    for (let r = 0; r < this.ranks; r++) compute = Math.max(compute, Atomics.load(this.ctl, r * WORKER_CTL_WORDS + CTL.computeUs) / 1000);
    const c2 = (this.timing[`${key}.compute`] ??= { ms: 0, calls: 0 });
    c2.ms += compute;
    c2.calls++;
  }

  /** The worker threads (tests use them to kill one). */
  get threads(): readonly Worker[] {
    return this.workers;
  }

  get broken(): string | null {
    return this.brokenBy;
  }

  /** Terminates every worker; resolves when all have exited. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.ports) p.close();
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private check(): void {
    if (this.closed) throw new Error('expert-parallel: the worker group is closed');
    if (this.brokenBy !== null) throw new Error(`expert-parallel: the worker group is broken by an earlier failure: ${this.brokenBy}`);
  }

  private errorText(r: number): string {
    const n = Atomics.load(this.ctl, r * WORKER_CTL_WORDS + CTL.errLen);
    // TextDecoder refuses views of shared memory: copy first
    return new TextDecoder().decode(this.errors.slice(r * ERR_BYTES, r * ERR_BYTES + n)).split('\n')[0]!;
  }

  private fail(message: string): never {
    this.brokenBy = message;
    // the other workers may be mid-phase or hung: stop them all (asynchronously; nothing awaits it)
    for (const w of this.workers) void w.terminate();
    throw new Error(message);
  }
}
