// `moe bench all-to-all`: bytes and time per expert-parallel exchange on this host. One MoE layer
// (top-2 of E experts) runs forward and backward on N worker threads; each phase's wall time is
// split into the expert arithmetic of its slowest rank (compute) and the rest (exchange: packing,
// copying through shared memory, combining, and waiting). Also a transport probe that justifies
// threads over processes: a round trip of one buffer through SharedArrayBuffer + Atomics between
// threads against the same through a child process's IPC channel.

import { fork } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';
import { ops } from '../index.js';
import { MoELayer } from '../moe/layer.js';
import { attachExpertParallel } from './expert-parallel.js';

export interface AllToAllOptions {
  workers: number[];
  /** Overlap degrees to run each N at (default [1]). */
  overlaps?: number[];
  tokens: number;
  dModel: number;
  dFF: number;
  experts: number;
  rounds: number;
  log?: (line: string) => void;
}

export interface AllToAllRow {
  workers: number;
  overlap: number;
  /** Rows rank r sent to rank j in the last exchange, [N][N] (the simulator's input). */
  matrix: number[][];
  /** Bytes per exchange (one dispatch or one combine) that cross between ranks, and that stay on a rank. */
  crossBytes: number;
  localBytes: number;
  /** Medians over rounds, ms per training step (forward + backward = 4 exchanges). */
  stepMs: number;
  computeMs: number;
  exchangeMs: number;
  /** The same layer in one process, ms per step (interleaved with the parallel runs, median over all rounds). */
  oneProcessMs: number;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function benchAllToAll(o: AllToAllOptions): AllToAllRow[] {
  const cfg = { dModel: o.dModel, dFF: o.dFF, numExperts: o.experts, router: { type: 'topk' as const, k: 2 }, seed: 1 };
  const x = Tensor.empty([o.tokens, o.dModel]);
  new Rng(3).fillUniform(x.data as Float32Array, -1, 1);
  const step = (layer: MoELayer): void => {
    const xa = new Tensor(x.data, x.shape).requireGrad();
    const out = layer.forward(xa);
    ops.sum(ops.mul(out.y, out.y)).backward();
    layer.zeroGrad();
  };
  const one = new MoELayer(cfg);
  step(one);
  const oneTimes: number[] = [];
  const timed = (layer: MoELayer): number => {
    const t0 = performance.now();
    step(layer);
    return performance.now() - t0;
  };
  const rows: AllToAllRow[] = [];
  for (const N of o.workers) {
    // the overlap degrees of one N run interleaved, round by round, with the one-process layer:
    // on a shared machine the load drifts, and a ratio is only fair within the same seconds
    const runs = (o.overlaps ?? [1]).map((overlap) => {
      const layer = new MoELayer(cfg);
      const ep = attachExpertParallel(layer, { workers: N, overlapDegree: overlap });
      return { overlap, layer, ep, matrix: [] as number[][], steps: [] as number[], computes: [] as number[], exchanges: [] as number[] };
    });
    try {
      for (const r of runs) {
        r.ep.onExchange = (_l, m) => { r.matrix = m; };
        step(r.layer);
      }
      for (let i = 0; i < o.rounds; i++) {
        oneTimes.push(timed(one));
        for (const r of runs) {
          const before = snapshot(r.ep.group.timing);
          r.steps.push(timed(r.layer));
          const after = snapshot(r.ep.group.timing);
          let compute = 0;
          let phases = 0;
          for (const [k, v] of Object.entries(after)) {
            if (k.endsWith('.compute')) compute += v - (before[k] ?? 0);
            else phases += v - (before[k] ?? 0);
          }
          r.computes.push(compute);
          // exchange: the phases' wall time less the compute of their slowest rank
          r.exchanges.push(phases - compute);
        }
      }
      for (const r of runs) {
        let cross = 0;
        let local = 0;
        r.matrix.forEach((row, a) => row.forEach((n, j) => { if (a === j) local += n; else cross += n; }));
        const row: AllToAllRow = {
          workers: N, overlap: r.overlap, matrix: r.matrix, crossBytes: cross * o.dModel * 4, localBytes: local * o.dModel * 4,
          stepMs: median(r.steps), computeMs: median(r.computes), exchangeMs: median(r.exchanges), oneProcessMs: median(oneTimes),
        };
        rows.push(row);
        o.log?.(`N=${N}${r.overlap > 1 ? ` overlap ${r.overlap}` : ''}: step ${row.stepMs.toFixed(2)} ms (compute ${row.computeMs.toFixed(2)}, exchange ${row.exchangeMs.toFixed(2)}), one process ${row.oneProcessMs.toFixed(2)} ms`);
      }
    } finally {
      for (const r of runs) void r.ep.close();
    }
  }
  // every row quotes the one-process median over all rounds
  for (const r of rows) r.oneProcessMs = median(oneTimes);
  return rows;
}

function snapshot(t: Record<string, { ms: number }>): Record<string, number> {
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.ms]));
}

export interface TransportProbe {
  bytes: number;
  /** Median round trip, ms: main -> peer -> main with the buffer copied each way. */
  threadSharedMemoryMs: number;
  processIpcMs: number;
}

/** Round trips of one buffer of `bytes` between threads (shared memory) and between processes (IPC). */
export async function probeTransports(bytes: number, rounds: number): Promise<TransportProbe> {
  const n = Math.max(1, Math.floor(bytes / 4));
  const sab = new SharedArrayBuffer(n * 4 * 2 + 8);
  const flag = new Int32Array(sab, 0, 2);
  const src = new Float32Array(n).fill(1);
  const w = new Worker(`
    const { workerData } = require('node:worker_threads');
    const flag = new Int32Array(workerData, 0, 2);
    const n = ${n};
    const a = new Float32Array(workerData, 8, n), b = new Float32Array(workerData, 8 + n * 4, n);
    let seen = 0;
    for (;;) {
      Atomics.wait(flag, 0, seen);
      seen = Atomics.load(flag, 0);
      if (seen < 0) break;
      b.set(a);
      Atomics.store(flag, 1, seen);
      Atomics.notify(flag, 1);
    }`, { eval: true, workerData: sab });
  const threadTimes: number[] = [];
  try {
    const a = new Float32Array(sab, 8, n);
    const b = new Float32Array(sab, 8 + n * 4, n);
    const out = new Float32Array(n);
    for (let i = 1; i <= rounds + 1; i++) {
      const t0 = performance.now();
      a.set(src);
      Atomics.store(flag, 0, i);
      Atomics.notify(flag, 0);
      while (Atomics.load(flag, 1) !== i) Atomics.wait(flag, 1, i - 1, 1000);
      out.set(b);
      if (i > 1) threadTimes.push(performance.now() - t0);
    }
  } finally {
    Atomics.store(flag, 0, -1);
    Atomics.notify(flag, 0);
    await w.terminate();
  }
  const echo = fileURLToPath(new URL('./ipc-echo.js', import.meta.url));
  const child = fork(echo, [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const procTimes: number[] = [];
  try {
    for (let i = 0; i <= rounds; i++) {
      const t0 = performance.now();
      const back = await new Promise<Float32Array>((resolve) => {
        child.once('message', (m) => resolve(m as Float32Array));
        child.send(src);
      });
      if (back.length !== n) throw new Error(`transport probe: the child echoed ${back.length} floats, not ${n}`);
      if (i > 0) procTimes.push(performance.now() - t0);
    }
  } finally {
    child.kill();
  }
  return { bytes: n * 4, threadSharedMemoryMs: median(threadTimes), processIpcMs: median(procTimes) };
}
