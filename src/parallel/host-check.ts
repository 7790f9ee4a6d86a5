// `moe simulate ep --check-host`: the simulator checked against this host. Measures the
// expert-parallel exchange (moe bench all-to-all) for several (T, d) at N = 1, 2, 4, fits a "this
// host" topology on some shapes (host-fit.ts), and reports the simulator's predicted exchange and
// step time against the measured ones for every point, the held-out shapes being the real check.

import { benchAllToAll } from './bench-all-to-all.js';
import { checkHost, fitHost, hostTopology, type HostCheckRow, type HostFit, type HostPoint } from './host-fit.js';
import type { Algorithm, Topology } from './simulator.js';

export interface Shape {
  tokens: number;
  dModel: number;
}

export interface HostCheckOptions {
  /** Shapes the topology is fitted on, and shapes only predicted. */
  fit: Shape[];
  check: Shape[];
  workers: number[];
  experts: number;
  rounds: number;
  algorithm: Algorithm;
  log?: (line: string) => void;
}

export interface HostCheckResult {
  fit: HostFit;
  topology: Topology;
  rows: HostCheckRow[];
}

/** "2048x256,512x128" -> shapes (T x d). */
export function parseShapes(raw: string, flag: string): Shape[] {
  return raw.split(',').map((s) => {
    const m = /^(\d+)x(\d+)$/.exec(s.trim());
    if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new Error(`${flag} ${raw}: '${s}' is not TOKENSxD with both positive (e.g. 2048x256)`);
    return { tokens: Number(m[1]), dModel: Number(m[2]) };
  });
}

function measure(shapes: Shape[], o: HostCheckOptions): HostPoint[] {
  const points: HostPoint[] = [];
  for (const s of shapes) {
    o.log?.(`T = ${s.tokens}, d = ${s.dModel}:`);
    const rows = benchAllToAll({ workers: o.workers, tokens: s.tokens, dModel: s.dModel, dFF: 2 * s.dModel, experts: o.experts, rounds: o.rounds, ...(o.log ? { log: o.log } : {}) });
    for (const r of rows) {
      points.push({ tokens: s.tokens, dModel: s.dModel, workers: r.workers, rows: r.matrix, exchangeMs: r.exchangeMs, stepMs: r.stepMs, oneProcessMs: r.oneProcessMs });
    }
  }
  return points;
}

export function runHostCheck(o: HostCheckOptions): HostCheckResult {
  const fitPoints = measure(o.fit, o);
  const checkPoints = measure(o.check, o);
  const fit = fitHost(fitPoints, o.algorithm);
  const source = `fitted on this host (moe simulate ep --check-host, ${new Date().toISOString().slice(0, 10)}) from T x d = ${o.fit.map((s) => `${s.tokens}x${s.dModel}`).join(', ')} `
    + `at N = ${o.workers.join(', ')}, E = ${o.experts}, top-2, worker threads over shared memory`;
  const topology = hostTopology(fit, Math.max(...o.workers), source);
  const rows = checkHost([...fitPoints, ...checkPoints], topology, o.algorithm, (p) => fitPoints.includes(p));
  return { fit, topology, rows };
}

const pct = (e: number): string => `${e >= 0 ? '+' : ''}${(e * 100).toFixed(0)}%`;

export function formatHostCheck(r: HostCheckResult): string {
  const t = r.topology;
  const lines = [
    `this host, fitted (${r.fit.algorithm}): latency ${t.intra.latencyUs.toFixed(1)} us/round, link ${t.intra.bandwidthGBs.toFixed(2)} GB/s, `
      + `local copy ${t.localCopyGBs!.toFixed(2)} GB/s, overhead ${t.overheadUs!.toFixed(0)} us/exchange; fit rms relative error ${(r.fit.rmsRelError * 100).toFixed(1)}%`,
    `topology JSON: ${JSON.stringify(t)}`,
    'T      d     N  fit?  exchange ms: measured  predicted  error   step ms: measured  predicted  error',
  ];
  for (const row of r.rows) {
    lines.push(`${String(row.tokens).padEnd(7)}${String(row.dModel).padEnd(6)}${String(row.workers).padEnd(3)}${(row.fitted ? 'fit' : 'check').padEnd(6)}`
      + `${row.measuredExchangeMs.toFixed(1).padStart(21)}${row.predictedExchangeMs.toFixed(1).padStart(11)}${pct(row.exchangeError).padStart(7)}`
      + `${row.measuredStepMs.toFixed(1).padStart(19)}${row.predictedStepMs.toFixed(1).padStart(11)}${pct(row.stepError).padStart(7)}`);
  }
  return lines.join('\n');
}
