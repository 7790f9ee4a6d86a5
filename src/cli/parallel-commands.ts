// `moe bench all-to-all` and `moe simulate ep`: the expert-parallel exchange measured on this host,
// and predicted for a topology from a recorded routing trace (src/parallel/).

import { readFileSync } from 'node:fs';
import { intFlag, rejectUnknown, type ParsedArgs } from './args.js';
import { benchAllToAll, probeTransports } from '../parallel/bench-all-to-all.js';
import { ALGORITHMS, TOPOLOGY_PRESETS, loadTopology, readTrace, simulateTrace, formatSimulation } from '../parallel/simulator.js';

export const BENCH_ALL_TO_ALL_HELP = `moe bench all-to-all [--workers 1,2,4] [--tokens 2048] [--d 256] [--ff 512] [--experts 8] [--rounds 5]
                      [--probe-bytes 1048576] [--json]

One MoE layer (top-2 of --experts) trains on N worker threads (expert parallelism over shared
memory) for --rounds steps after a warm-up. Per N: bytes per exchange that cross between ranks and
that stay on a rank; the median step time split into the expert arithmetic of the slowest rank
(compute) and the rest of the phases (exchange); the same layer in one process. Then a transport
probe: a round trip of --probe-bytes through shared memory between threads and through a child
process's IPC channel. Run it under flock /tmp/bench.lock on a shared machine.`;

export async function benchAllToAllCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['workers', 'tokens', 'd', 'ff', 'experts', 'rounds', 'probe-bytes', 'json', 'help'], 'bench all-to-all');
  const raw = args.flags.get('workers')?.[0] ?? '1,2,4';
  const workers = raw.split(',').map((w) => {
    const v = Number(w);
    if (!Number.isInteger(v) || v < 1 || v > 64) throw new Error(`bench all-to-all: --workers ${raw}: '${w}' is not an integer in [1, 64]`);
    return v;
  });
  const int = (k: string, def: number, min: number): number => intFlag(args, k, min, 'bench all-to-all') ?? def;
  const experts = int('experts', 8, 1);
  if (Math.max(...workers) > experts) throw new Error(`bench all-to-all: --workers ${raw} exceeds --experts ${experts}`);
  const opts = { workers, tokens: int('tokens', 2048, 1), dModel: int('d', 256, 1), dFF: int('ff', 512, 1), experts, rounds: int('rounds', 5, 1) };
  const log = (l: string): void => { process.stderr.write(`${l}\n`); };
  const rows = benchAllToAll({ ...opts, log });
  const probe = await probeTransports(int('probe-bytes', 1 << 20, 4), 20);
  if (args.flags.has('json')) {
    console.log(JSON.stringify({ options: opts, rows, probe }, null, 2));
    return 0;
  }
  console.log(`all-to-all, T = ${opts.tokens}, d = ${opts.dModel}, h = ${opts.dFF}, E = ${experts}, top-2, ms per training step (4 exchanges), medians of ${opts.rounds}`);
  console.log('N  cross-rank MB/exchange  local MB/exchange  step ms  compute ms  exchange ms  one process ms');
  for (const r of rows) {
    console.log(`${String(r.workers).padEnd(3)}${(r.crossBytes / 1e6).toFixed(3).padStart(22)}${(r.localBytes / 1e6).toFixed(3).padStart(19)}`
      + `${r.stepMs.toFixed(2).padStart(9)}${r.computeMs.toFixed(2).padStart(12)}${r.exchangeMs.toFixed(2).padStart(13)}${r.oneProcessMs.toFixed(2).padStart(16)}`);
  }
  console.log(`transport probe, ${probe.bytes} bytes round trip: threads + SharedArrayBuffer ${probe.threadSharedMemoryMs.toFixed(3)} ms, `
    + `child process IPC ${probe.processIpcMs.toFixed(3)} ms (${(probe.processIpcMs / probe.threadSharedMemoryMs).toFixed(1)}x)`);
  return 0;
}

export const SIMULATE_HELP = `moe simulate ep --trace FILE.jsonl [--topology ${Object.keys(TOPOLOGY_PRESETS).join('|')}|FILE.json]
                [--devices N] [--d 256] [--bytes-per-value 2] [--json]

Predicts the expert-parallel exchange of a routing trace (JSONL of token -> expert assignments per
step and layer, written by moe train --set parallel.trace=FILE) on a topology: tokens split evenly
over --devices devices (default: all of the topology's), experts too. For each algorithm
(${ALGORITHMS.join(', ')}): time per exchange (latency + bytes / bandwidth per round) and bytes on
intra- and inter-node links, averaged over the trace. A topology JSON has { name, source, devices,
devicesPerNode, intra: { bandwidthGBs, latencyUs }, inter: { bandwidthGBs, latencyUs } }.`;

export function simulateCommand(args: ParsedArgs): number {
  rejectUnknown(args, ['trace', 'topology', 'devices', 'd', 'bytes-per-value', 'json', 'help'], 'simulate ep');
  if (args.positional[1] !== 'ep') throw new Error(`simulate: unknown simulation '${args.positional[1] ?? ''}' (available: ep)`);
  const tracePath = args.flags.get('trace')?.[0];
  if (!tracePath) throw new Error('simulate ep: --trace FILE.jsonl is required (record one with moe train --set parallel.trace=FILE)');
  const topo = loadTopology(args.flags.get('topology')?.[0] ?? 'dgx-h100', (p) => readFileSync(p, 'utf8'));
  const devices = intFlag(args, 'devices', 1, 'simulate ep') ?? topo.devices;
  const d = intFlag(args, 'd', 1, 'simulate ep');
  const bpv = intFlag(args, 'bytes-per-value', 1, 'simulate ep') ?? 2;
  const trace = readTrace(readFileSync(tracePath, 'utf8'), tracePath);
  const result = simulateTrace(trace, { ...topo, devices }, { ...(d ? { dModel: d } : {}), bytesPerValue: bpv });
  console.log(args.flags.has('json') ? JSON.stringify(result, null, 2) : formatSimulation(result));
  return 0;
}
