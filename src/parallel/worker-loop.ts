// The loop of an expert-parallel worker thread (started by worker.ts): rank r of N. It holds token shard r and experts
// [expertStart[r], expertStart[r+1]) of every registered layer, and runs the phases the main
// thread issues (protocol.ts): pack my tokens for the dispatch, run my experts on what arrives,
// sum what comes back into my tokens; or all three as one overlapped phase in chunks of experts,
// synchronised rank to rank through stamps in shared memory (overlapped()). Expert arithmetic is
// the single-process op (expertMLP) on the same rows in the same order, so results match the
// one-process layer bit for bit.

import { workerData, receiveMessageOnPort } from 'node:worker_threads';
import '../backends/defaults.js';
import '../ops/index.js';
import { kernel, setBackend } from '../kernels/registry.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { expertMLP, type ExpertMLPActivation } from '../ops/expert-mlp.js';
import { chunkExperts, exchangeLayout, type ExchangeLayout } from './layout.js';
import {
  BACKENDS, CALL, CTL, ERR_BYTES, FLAG, MAX_OVERLAP, OP, PARAMS, STATUS, WORKER_CTL_WORDS, f32, paramShape,
  type LayerMessage, type ParamName, type WorkerInit,
} from './protocol.js';
import { WorkerOptimizer, type OptimMessage } from './worker-optim.js';
import { stackSlice } from './expert-stacks.js';
import { expertSwiGLU, type Weight } from '../models/moe-decoder-weights.js';

const init = workerData as WorkerInit;
const rank = init.rank;
const ctl = new Int32Array(init.ctl, rank * WORKER_CTL_WORDS * 4, WORKER_CTL_WORDS);
const call = new Int32Array(init.call);
const errBytes = new Uint8Array(init.errors, rank * ERR_BYTES, ERR_BYTES);
const R = init.regions;
const sync = new Int32Array(init.sync);

interface LocalLayer {
  msg: LayerMessage;
  e0: number;
  e1: number;
  /** A decoder's stored stacks (msg.stacks): views of the gate, up and down stacks per chunk [e0, e1), made once. */
  views: Map<string, [Weight, Weight, Weight]>;
}
/** What a forward keeps for its backward, per chunk of experts [e0, e1). */
interface Saved {
  e0: number;
  e1: number;
  out: Tensor | null;
  x: Tensor | null;
  gates: Tensor | null;
  params: Partial<Record<ParamName, Tensor>>;
  rows: number;
}
const layers = new Map<number, LocalLayer>();
/** Time in expert arithmetic during the current phase. */
let computeMs = 0;
const saved = new Map<string, Saved[]>();
/** Forwards whose backward never came are dropped past this many (main releases them too). */
const MAX_SAVED = 256;

/** My experts' optimizer (OP.optim) and its requests, in the order they came. */
const optimizer = new WorkerOptimizer(rank, (m, transfer) => init.port.postMessage(m, transfer));
const optimRequests: OptimMessage[] = [];
/** Test hook (ExpertGroup.injectExit): exit with `code` at the start of the next operation `op`. */
let exitAt: { op: number; code: number } | null = null;

function readMessages(): void {
  for (;;) {
    const m = receiveMessageOnPort(init.port);
    if (!m) return;
    const msg = m.message as LayerMessage | OptimMessage | { type: 'exitAt'; op: number; code: number };
    if (msg.type === 'layer') {
      const E = msg.numExperts;
      layers.set(msg.id, { msg, e0: Math.floor((rank * E) / init.ranks), e1: Math.floor(((rank + 1) * E) / init.ranks), views: new Map() });
    } else if (msg.type === 'optim') {
      optimRequests.push(msg);
    } else if (msg.type === 'exitAt') {
      exitAt = { op: msg.op, code: msg.code };
    }
  }
}

/** OP.optim: the request of this call (posted before it was issued; older ones were abandoned by a failed step). */
function runOptim(): void {
  const seq = call[CALL.callId]!;
  let m: OptimMessage | undefined;
  while ((m = optimRequests.shift()) !== undefined && m.seq !== seq) { /* skip stale requests */ }
  if (!m) throw new Error(`optimizer: no request ${seq} arrived with the call`);
  if (m.op !== call[CALL.arg]) throw new Error(`optimizer: request ${seq} is operation ${m.op}, the call says ${call[CALL.arg]}`);
  optimizer.run(m, layers);
}

function currentLayout(tokens: number, rows: number, E: number): { layout: ExchangeLayout; tokenOfRow: Int32Array } {
  const meta = new Int32Array(R.meta, 0, rows + E);
  const tokenOfRow = meta.slice(0, rows);
  return { layout: exchangeLayout(tokenOfRow, meta.slice(rows, rows + E), tokens, init.ranks), tokenOfRow };
}

/** Source side: copy my shard's rows for experts [e0, e1) into their send slots (r-major). */
function pack(l: ExchangeLayout, tokenOfRow: Int32Array, d: number, e0 = 0, e1 = l.experts): void {
  const E = l.experts;
  const input = f32(R.input, l.tokens * d);
  const send = f32(R.send, l.sendOffset[l.ranks * E]! * d);
  for (let s = l.sendOffset[rank * E + e0]!; s < l.sendOffset[rank * E + e1]!; s++) {
    const t = tokenOfRow[l.rowOfSlot[s]!]!;
    send.set(input.subarray(t * d, (t + 1) * d), s * d);
  }
}

/** Expert side: my experts' rows from every source, in plan order (as one process runs them). */
function receive(l: ExchangeLayout, from: Float32Array, e0: number, e1: number, d: number): Float32Array {
  const g0 = l.groupStart[e0]!;
  const g1 = l.groupStart[e1]!;
  const out = new Float32Array((g1 - g0) * d);
  for (let g = g0; g < g1; g++) {
    const s = l.slotOfRow[g]!;
    out.set(from.subarray(s * d, (s + 1) * d), (g - g0) * d);
  }
  return out;
}

/** Expert side: write rows (plan order of my experts) back into the slots they came from. */
function sendBack(l: ExchangeLayout, rowsData: Float32Array, to: Float32Array, e0: number, e1: number, d: number): void {
  const g0 = l.groupStart[e0]!;
  for (let g = g0; g < l.groupStart[e1]!; g++) {
    const s = l.slotOfRow[g]!;
    to.set(rowsData.subarray((g - g0) * d, (g - g0 + 1) * d), s * d);
  }
}

/** Source side: zero my shard of OUT and add the returned rows, expert order per token (as one process does). */
function combine(l: ExchangeLayout, tokenOfRow: Int32Array, d: number): void {
  const E = l.experts;
  const t0 = l.shardStart[rank]!;
  const nTok = l.shardStart[rank + 1]! - t0;
  const out = f32(R.output, nTok * d, t0 * d);
  out.fill(0);
  const s0 = l.sendOffset[rank * E]!;
  const s1 = l.sendOffset[(rank + 1) * E]!;
  if (s1 === s0 || nTok === 0) return;
  // my slots are in expert order, so each token's rows are summed in expert order
  const idx = new Int32Array(s1 - s0);
  for (let s = s0; s < s1; s++) idx[s - s0] = tokenOfRow[l.rowOfSlot[s]!]! - t0;
  // the kernels get a private copy of the rows: a native addon may not accept shared memory
  const rows = f32(R.ret, (s1 - s0) * d, s0 * d).slice();
  const acc = new Float32Array(nTok * d);
  kernel('scatterAddRows')(rows, idx, acc, nTok, d);
  out.set(acc);
}

/** Experts [e0, e1) of a parameter (or of its gradient region), a private copy. */
function paramTensor(lay: LocalLayer, name: ParamName, from: 'params' | 'grads', e0: number, e1: number): Tensor | null {
  const sab = lay.msg[from][name];
  if (!sab) return null;
  const { numExperts: E, dModel: d, dHidden: h } = lay.msg;
  const shape = paramShape(name, E, d, h);
  const per = shape.slice(1).reduce((a, b) => a * b, 1);
  const local = [e1 - e0, ...shape.slice(1)];
  // a private copy: the main thread may publish new weights while a backward still needs these
  return new Tensor(f32(sab, (e1 - e0) * per, e0 * per).slice(), local);
}

/** Runs experts [e0, e1) (mine) on their rows and returns the results to the send slots; gives what backward needs. */
function expertForward(lay: LocalLayer, l: ExchangeLayout, flags: number, d: number, e0: number, e1: number): Saved | null {
  const rows = l.groupStart[e1]! - l.groupStart[e0]!;
  const needGrad = (flags & FLAG.needGrad) !== 0;
  const params: Partial<Record<ParamName, Tensor>> = {};
  PARAMS.forEach((name, i) => {
    const t = paramTensor(lay, name, 'params', e0, e1);
    if (t) params[name] = needGrad && (flags & (1 << (FLAG.paramGrad0 + i))) ? t.requireGrad() : t;
  });
  if (rows === 0) return needGrad ? { e0, e1, out: null, x: null, gates: null, params, rows: 0 } : null;
  const x = new Tensor(receive(l, f32(R.send, l.sendOffset[l.ranks * l.experts]! * d), e0, e1, d), [rows, d]);
  const gates = new Tensor(f32(R.gates, rows, l.groupStart[e0]!).slice(), [rows]);
  if (needGrad && flags & FLAG.xGrad) x.requireGrad();
  if (needGrad && flags & FLAG.gateGrad) gates.requireGrad();
  const sizes = Int32Array.from({ length: e1 - e0 }, (_, i) => l.groupStart[e0 + i + 1]! - l.groupStart[e0 + i]!);
  if (lay.msg.stacks) {
    if (needGrad) throw new Error(`layer ${lay.msg.id}: stored expert stacks run for inference only`);
    const t0 = performance.now();
    const out = stacksForward(lay, x, gates, sizes, e0, e1);
    computeMs += performance.now() - t0;
    sendBack(l, out, f32(R.ret, l.sendOffset[l.ranks * l.experts]! * d), e0, e1, d);
    return null;
  }
  const rowExpert = new Int32Array(rows);
  for (let i = 0, r = 0; i < sizes.length; i++) for (let j = 0; j < sizes[i]!; j++) rowExpert[r++] = i;
  const run = (): Tensor => expertMLP(x, sizes, lay.msg.activation as ExpertMLPActivation,
    { w1: params.w1!, w2: params.w2!, w3: params.w3 ?? null, b1: params.b1 ?? null, b2: params.b2 ?? null },
    { gates, ...(params.b1 ? { rowExpert } : {}) });
  const t0 = performance.now();
  const out = needGrad ? run() : noGrad(run);
  computeMs += performance.now() - t0;
  sendBack(l, out.data as Float32Array, f32(R.ret, l.sendOffset[l.ranks * l.experts]! * d), e0, e1, d);
  return needGrad ? { e0, e1, out, x, gates, params, rows } : null;
}

/**
 * A decoder's experts [e0, e1) on their rows: the decoder's own expertSwiGLU (the same kernels as
 * one process, on views of the stored stacks, no copy), each row then times its gate (1 for the
 * decoder, which weights the rows itself: exact).
 */
function stacksForward(lay: LocalLayer, x: Tensor, gates: Tensor, sizes: Int32Array, e0: number, e1: number): Float32Array {
  const key = `${e0}:${e1}`;
  let w = lay.views.get(key);
  if (!w) {
    const m = lay.msg.stacks!;
    w = [stackSlice(m, 0, e0, e1), stackSlice(m, 1, e0, e1), stackSlice(m, 2, e0, e1)];
    lay.views.set(key, w);
  }
  const y = noGrad(() => expertSwiGLU(x, w[0], w[1], w[2], sizes));
  const out = y.data as Float32Array;
  const g = gates.data as Float32Array;
  const d = lay.msg.dModel;
  for (let r = 0; r < g.length; r++) {
    const gr = g[r]!;
    if (gr !== 1) for (let j = r * d; j < (r + 1) * d; j++) out[j] = out[j]! * gr;
  }
  return out;
}

function remember(key: string, s: Saved[]): void {
  saved.set(key, s);
  if (saved.size > MAX_SAVED) saved.delete(saved.keys().next().value!);
}

/** The saved chunks of a forward (taken: a backward runs once). */
function takeSaved(key: string): Saved[] {
  const s = saved.get(key);
  if (!s) throw new Error(`no saved forward for ${key} (already back-propagated, released, or evicted)`);
  saved.delete(key);
  return s;
}

/** Back-propagates one saved chunk: dx rows to the send slots, dgates, and the chunk's experts' dW into the grad regions. */
function expertBackward(lay: LocalLayer, l: ExchangeLayout, s: Saved, flags: number, d: number): void {
  const { e0, e1 } = s;
  const { numExperts: E, dModel, dHidden: h } = lay.msg;
  // gradients that accumulate in place start from the main thread's current gradient
  PARAMS.forEach((name, i) => {
    const p = s.params[name];
    if (p?.requiresGrad) p.grad = flags & (1 << (FLAG.accumulate0 + i)) ? paramTensor(lay, name, 'grads', e0, e1) : null;
  });
  if (s.rows > 0 && s.out) {
    const g = new Tensor(receive(l, f32(R.send, l.sendOffset[l.ranks * l.experts]! * d), e0, e1, d), [s.rows, d]);
    const t0 = performance.now();
    s.out.backward(g);
    computeMs += performance.now() - t0;
    if (s.x?.grad) sendBack(l, s.x.grad.data as Float32Array, f32(R.ret, l.sendOffset[l.ranks * l.experts]! * d), e0, e1, d);
    if (s.gates?.grad) f32(R.gateGrads, s.rows, l.groupStart[e0]!).set(s.gates.grad.data as Float32Array);
  }
  PARAMS.forEach((name) => {
    const p = s.params[name];
    const sab = lay.msg.grads[name];
    if (!p?.requiresGrad || !sab) return;
    const per = paramShape(name, E, dModel, h).slice(1).reduce((a, b) => a * b, 1);
    const dst = f32(sab, (e1 - e0) * per, e0 * per);
    if (p.grad) dst.set(p.grad.data as Float32Array);
    else dst.fill(0); // no rows reached my experts: their gradient is zero, as in one process
  });
}

function runOp(): void {
  readMessages();
  const op = call[CALL.op]!;
  if (op === OP.exit) process.exit(call[CALL.arg]!);
  if (op === OP.fail) throw new Error('failure requested by the test hook');
  if (exitAt !== null && exitAt.op === op) process.exit(exitAt.code);
  if (op === OP.optim) { runOptim(); return; }
  setBackend(BACKENDS[call[CALL.backend]!]!);
  const layerId = call[CALL.layer]!;
  const lay = layers.get(layerId);
  if (!lay) throw new Error(`layer ${layerId} is not registered on this worker`);
  const key = `${layerId}:${call[CALL.callId]}`;
  if (op === OP.release) { saved.delete(key); return; }
  const { layout, tokenOfRow } = currentLayout(call[CALL.tokens]!, call[CALL.rows]!, lay.msg.numExperts);
  const d = lay.msg.dModel;
  const flags = call[CALL.flags]!;
  switch (op) {
    case OP.pack: pack(layout, tokenOfRow, d); return;
    case OP.expertForward: {
      const s = expertForward(lay, layout, flags, d, lay.e0, lay.e1);
      if (s) remember(key, [s]);
      return;
    }
    case OP.combine: combine(layout, tokenOfRow, d); return;
    case OP.expertBackward: expertBackward(lay, layout, takeSaved(key)[0]!, flags, d); return;
    case OP.forwardOverlap: case OP.backwardOverlap: overlapped(op, lay, layout, tokenOfRow, key, flags, d); return;
    default: throw new Error(`unknown operation ${op}`);
  }
}

/** Blocks until word `idx` of the sync block holds `stamp`; past the peer deadline, throws naming `what`. */
function awaitStamp(idx: number, stamp: number, what: () => string): void {
  const deadline = Date.now() + init.peerTimeoutMs;
  for (;;) {
    const v = Atomics.load(sync, idx);
    if (v === stamp) return;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`${what()} within ${init.peerTimeoutMs} ms (it failed, exited or hung)`);
    Atomics.wait(sync, idx, v, Math.min(left, 100));
  }
}

function publish(idx: number, stamp: number): void {
  Atomics.store(sync, idx, stamp);
  Atomics.notify(sync, idx);
}

/**
 * One overlapped phase (OP.forwardOverlap / OP.backwardOverlap): pack chunk 0; then for every chunk c,
 * pack chunk c + 1 and publish it, wait until every rank has packed chunk c, run my experts of
 * chunk c. The other ranks' packing of c + 1 overlaps my arithmetic on c (the barrier between
 * the dispatch and the experts is per chunk, not per exchange). The combine sums every expert's
 * rows per token in expert order, as one process does, so it waits for all ranks' results.
 */
function overlapped(op: number, lay: LocalLayer, l: ExchangeLayout, tokenOfRow: Int32Array, key: string, flags: number, d: number): void {
  const degree = call[CALL.degree]!;
  const stamp = call[CALL.stamp]!;
  const N = init.ranks;
  if (!Number.isInteger(degree) || degree < 1 || degree > MAX_OVERLAP) throw new Error(`overlap degree ${degree} outside [1, ${MAX_OVERLAP}]`);
  const packChunk = (c: number): void => {
    for (let j = 0; j < N; j++) {
      const [a, b] = chunkExperts(l, j, c, degree);
      pack(l, tokenOfRow, d, a, b);
    }
    publish(c * N + rank, stamp);
  };
  const forward = op === OP.forwardOverlap;
  const chunks = forward ? [] as Saved[] : takeSaved(key);
  if (!forward && chunks.length !== degree) throw new Error(`the forward of ${key} ran in ${chunks.length} chunks, its backward asks for ${degree}`);
  packChunk(0);
  for (let c = 0; c < degree; c++) {
    if (c + 1 < degree) packChunk(c + 1);
    for (let j = 0; j < N; j++) awaitStamp(c * N + j, stamp, () => `rank ${rank}: rank ${j} did not pack chunk ${c} of ${degree}`);
    const [e0, e1] = chunkExperts(l, rank, c, degree);
    if (forward) {
      const s = expertForward(lay, l, flags, d, e0, e1);
      if (s) chunks.push(s);
    } else {
      expertBackward(lay, l, chunks[c]!, flags, d);
    }
  }
  publish(MAX_OVERLAP * N + rank, stamp);
  if (forward && chunks.length > 0) remember(key, chunks);
  // the combine of dx is skipped when no input gradient is wanted (as the three-phase backward does)
  if (!forward && !(flags & FLAG.xGrad)) return;
  for (let j = 0; j < N; j++) awaitStamp(MAX_OVERLAP * N + j, stamp, () => `rank ${rank}: rank ${j} did not return its rows`);
  combine(l, tokenOfRow, d);
}

function reportError(e: unknown): void {
  const text = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
  const bytes = new TextEncoder().encode(text).subarray(0, ERR_BYTES);
  errBytes.set(bytes);
  Atomics.store(ctl, CTL.errLen, bytes.length);
}

// an exit from inside (process.exit, a fatal error in our code) tells the main thread at once;
// a terminate() from outside cannot, and is found by the main thread's deadline instead
process.on('exit', () => {
  Atomics.store(ctl, CTL.status, STATUS.exited);
  Atomics.notify(ctl, CTL.done);
});

let seen = Atomics.load(ctl, CTL.cmd);
Atomics.store(ctl, CTL.ready, 1);
Atomics.notify(ctl, CTL.ready);
for (;;) {
  // wake up now and then: an idle worker must not block forever if the main thread is gone
  Atomics.wait(ctl, CTL.cmd, seen, 1000);
  const cmd = Atomics.load(ctl, CTL.cmd);
  if (cmd === seen) continue;
  seen = cmd;
  let status: number = STATUS.ok;
  computeMs = 0;
  try {
    runOp();
  } catch (e) {
    reportError(e);
    status = STATUS.error;
  }
  Atomics.store(ctl, CTL.computeUs, Math.round(computeMs * 1000));
  Atomics.store(ctl, CTL.status, status);
  Atomics.store(ctl, CTL.done, cmd);
  Atomics.notify(ctl, CTL.done);
}
