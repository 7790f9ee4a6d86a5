// `moe bench all-to-all` and `moe simulate ep`: the expert-parallel exchange measured on this host,
// and predicted for a topology from a recorded routing trace (src/parallel/).

import { readFileSync } from 'node:fs';
import { intFlag, rejectUnknown, type ParsedArgs } from './args.js';
import { benchAllToAll, probeTransports } from '../parallel/bench-all-to-all.js';
import { benchExpertOptimizer } from '../parallel/bench-optimizer.js';
import { ALGORITHMS, TOPOLOGY_PRESETS, loadTopology, readTrace, simulateTrace, formatSimulation, type Algorithm } from '../parallel/simulator.js';
import { formatHostCheck, parseShapes, runHostCheck } from '../parallel/host-check.js';
import { formatScaling, scalingTable } from '../parallel/scaling.js';

export const BENCH_ALL_TO_ALL_HELP = `moe bench all-to-all [--workers 1,2,4] [--overlap 1] [--tokens 2048] [--d 256] [--ff 512] [--experts 8]
                      [--rounds 5] [--probe-bytes 1048576] [--json]

One MoE layer (top-2 of --experts) trains on N worker threads (expert parallelism over shared
memory) for --rounds steps after a warm-up. Per N: bytes per exchange that cross between ranks and
that stay on a rank; --overlap 1,2,4 runs each N at those overlap degrees (each exchange in that
many chunks of every rank's experts, parallel.overlap); the median step time split into the expert arithmetic of the slowest rank
(compute) and the rest of the phases (exchange); the same layer in one process. Then a transport
probe: a round trip of --probe-bytes through shared memory between threads and through a child
process's IPC channel. Run it under flock /tmp/bench.lock on a shared machine.`;

export async function benchAllToAllCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['workers', 'overlap', 'tokens', 'd', 'ff', 'experts', 'rounds', 'probe-bytes', 'json', 'help'], 'bench all-to-all');
  const raw = args.flags.get('workers')?.[0] ?? '1,2,4';
  const workers = raw.split(',').map((w) => {
    const v = Number(w);
    if (!Number.isInteger(v) || v < 1 || v > 64) throw new Error(`bench all-to-all: --workers ${raw}: '${w}' is not an integer in [1, 64]`);
    return v;
  });
  const rawOverlap = args.flags.get('overlap')?.[0] ?? '1';
  const overlaps = rawOverlap.split(',').map((w) => {
    const v = Number(w);
    if (!Number.isInteger(v) || v < 1 || v > 64) throw new Error(`bench all-to-all: --overlap ${rawOverlap}: '${w}' is not an integer in [1, 64]`);
    return v;
  });
  const int = (k: string, def: number, min: number): number => intFlag(args, k, min, 'bench all-to-all') ?? def;
  const experts = int('experts', 8, 1);
  if (Math.max(...workers) > experts) throw new Error(`bench all-to-all: --workers ${raw} exceeds --experts ${experts}`);
  const opts = { workers, overlaps, tokens: int('tokens', 2048, 1), dModel: int('d', 256, 1), dFF: int('ff', 512, 1), experts, rounds: int('rounds', 5, 1) };
  const log = (l: string): void => { process.stderr.write(`${l}\n`); };
  const rows = benchAllToAll({ ...opts, log });
  const probe = await probeTransports(int('probe-bytes', 1 << 20, 4), 20);
  if (args.flags.has('json')) {
    console.log(JSON.stringify({ options: opts, rows, probe }, null, 2));
    return 0;
  }
  console.log(`all-to-all, T = ${opts.tokens}, d = ${opts.dModel}, h = ${opts.dFF}, E = ${experts}, top-2, ms per training step (4 exchanges), medians of ${opts.rounds}`);
  console.log('N  overlap  cross-rank MB/exchange  local MB/exchange  step ms  compute ms  exchange ms  one process ms');
  for (const r of rows) {
    console.log(`${String(r.workers).padEnd(3)}${String(r.overlap).padStart(7)}${(r.crossBytes / 1e6).toFixed(3).padStart(22)}${(r.localBytes / 1e6).toFixed(3).padStart(19)}`
      + `${r.stepMs.toFixed(2).padStart(9)}${r.computeMs.toFixed(2).padStart(12)}${r.exchangeMs.toFixed(2).padStart(13)}${r.oneProcessMs.toFixed(2).padStart(16)}`);
  }
  console.log(`transport probe, ${probe.bytes} bytes round trip: threads + SharedArrayBuffer ${probe.threadSharedMemoryMs.toFixed(3)} ms, `
    + `child process IPC ${probe.processIpcMs.toFixed(3)} ms (${(probe.processIpcMs / probe.threadSharedMemoryMs).toFixed(1)}x)`);
  return 0;
}

export const BENCH_EP_OPTIMIZER_HELP = `moe bench ep-optimizer [--config configs/udhr-lm-moe.json] [--workers 1,2] [--steps 3] [--json]

Where a training run's optimizer state lives with expert parallelism: for each N, the run's model
and first batches (from --config), one warm-up step, then --steps timed training steps (forward,
backward, clipping, optimizer step). N = 1 is one process; each N > 1 runs twice, with the experts'
optimizer state on the main thread and on the workers (what moe train --set parallel.experts=N
does). Prints bytes of optimizer state on the main thread and per worker, and median ms per step
and per optimizer step. Run it under flock /tmp/bench.lock on a shared machine.`;

export async function benchEpOptimizerCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['config', 'workers', 'steps', 'json', 'help'], 'bench ep-optimizer');
  const raw = args.flags.get('workers')?.[0] ?? '1,2';
  const workers = raw.split(',').map((w) => {
    const v = Number(w);
    if (!Number.isInteger(v) || v < 1 || v > 64) throw new Error(`bench ep-optimizer: --workers ${raw}: '${w}' is not an integer in [1, 64]`);
    return v;
  });
  const configPath = args.flags.get('config')?.[0] ?? 'configs/udhr-lm-moe.json';
  const steps = intFlag(args, 'steps', 1, 'bench ep-optimizer') ?? 3;
  const rows = await benchExpertOptimizer({ configPath, workers, steps, log: (l) => { process.stderr.write(`${l}\n`); } });
  if (args.flags.has('json')) {
    console.log(JSON.stringify({ config: configPath, steps, rows }, null, 2));
    return 0;
  }
  const r0 = rows[0]!;
  console.log(`${configPath}: ${r0.parameters} parameters, ${r0.expertParameters} in routed experts; medians of ${steps} steps`);
  console.log('N  experts\' state  main-thread state B  per worker B         step ms  optimizer ms');
  for (const r of rows) {
    console.log(`${String(r.workers).padEnd(3)}${r.experts.padEnd(16)}${String(r.mainStateBytes).padStart(19)}  ${(r.workerStateBytes.join(', ') || '-').padEnd(19)}`
      + `${r.stepMs.toFixed(0).padStart(8)}${r.optimizerStepMs.toFixed(0).padStart(14)}`);
  }
  return 0;
}

export const SIMULATE_HELP = `moe simulate ep --trace FILE.jsonl [--topology ${Object.keys(TOPOLOGY_PRESETS).join('|')}|FILE.json]
                [--devices N] [--d 256] [--ff 1024] [--bytes-per-value 2] [--json]
moe simulate ep scaling [--topology NAME|FILE.json] [--tokens 4096,16384] [--ranks 2,4,8,16,32,64]
                [--k 2] [--d 4096] [--bytes-per-value 2] [--json]
moe simulate ep check-host [--fit 512x256,2048x256] [--check 1024x128,1024x256,4096x128]
                [--workers 1,2,4] [--experts 8] [--rounds 3] [--algorithm pairwise] [--json]

Predicts the expert-parallel exchange of a routing trace (JSONL of token -> expert assignments per
step and layer, written by moe train --set parallel.trace=FILE) on a topology: tokens split evenly
over --devices devices (default: all of the topology's), experts too. For each algorithm
(${ALGORITHMS.join(', ')}): time per exchange (latency + bytes / bandwidth per round) and bytes on
intra- and inter-node links, averaged over the trace. A topology JSON has { name, source, devices,
devicesPerNode, intra: { bandwidthGBs, latencyUs }, inter: { bandwidthGBs, latencyUs } } and optionally
localCopyGBs (a device copies its own rows too, as threads over shared memory do), overheadUs
(a fixed cost per exchange) and computeTFlops (TFLOP/s of a device in the expert GEMMs: then the
busiest device's expert compute, forward and backward, is added for a predicted step time; the
hidden width comes from the trace or --ff; --d and --ff price the same routing at other widths).

scaling: time and bytes of one exchange of uniform top-k routing for every algorithm, T and N_d,
with time / (T/N_d) and time / (T/N_d log2 N_d) to read the growth from (the seed's T/N_d log N_d).

check-host: measures the exchange on this host's worker threads (as moe bench all-to-all) for
the --fit and --check shapes (TOKENSxD) at each N, fits a this-host topology (latency per round,
link bandwidth, local copy bandwidth, overhead per exchange: non-negative least squares in relative
error) on the --fit shapes, and prints the simulator's predicted exchange and step time against the
measured ones per point. Run it under flock /tmp/bench.lock on a shared machine.`;

function intList(args: ParsedArgs, key: string, def: string, min: number): number[] {
  const raw = args.flags.get(key)?.[0] ?? def;
  return raw.split(',').map((w) => {
    const v = Number(w);
    if (w.trim() === '' || !Number.isInteger(v) || v < min) throw new Error(`simulate ep: --${key} ${raw}: '${w}' is not an integer >= ${min}`);
    return v;
  });
}

function algorithmFlag(args: ParsedArgs): Algorithm {
  const a = args.flags.get('algorithm')?.[0] ?? 'pairwise';
  if (!(ALGORITHMS as readonly string[]).includes(a)) throw new Error(`simulate ep: --algorithm ${a}: expected one of ${ALGORITHMS.join(', ')}`);
  return a as Algorithm;
}

export function simulateCommand(args: ParsedArgs): number {
  if (args.positional[1] !== 'ep') throw new Error(`simulate: unknown simulation '${args.positional[1] ?? ''}' (available: ep)`);
  const mode = args.positional[2];
  if (mode !== undefined && mode !== 'scaling' && mode !== 'check-host') throw new Error(`simulate ep: unknown mode '${mode}' (available: scaling, check-host, or none with --trace)`);
  const common = ['topology', 'd', 'bytes-per-value', 'json', 'help'];
  rejectUnknown(args, mode === 'scaling' ? [...common, 'tokens', 'ranks', 'k'] : mode === 'check-host' ? ['json', 'help', 'fit', 'check', 'workers', 'experts', 'rounds', 'algorithm']
    : [...common, 'trace', 'devices', 'ff'], `simulate ep${mode ? ` ${mode}` : ''}`);
  const json = args.flags.has('json');
  if (mode === 'scaling') {
    const topo = loadTopology(args.flags.get('topology')?.[0] ?? 'h100-ib-cluster', (p) => readFileSync(p, 'utf8'));
    const o = {
      tokens: intList(args, 'tokens', '4096,16384', 1), devices: intList(args, 'ranks', '2,4,8,16,32,64', 2), k: intFlag(args, 'k', 1, 'simulate ep') ?? 2,
      rowBytes: (intFlag(args, 'd', 1, 'simulate ep') ?? 4096) * (intFlag(args, 'bytes-per-value', 1, 'simulate ep') ?? 2),
    };
    const rows = scalingTable(topo, o);
    console.log(json ? JSON.stringify({ topology: topo, options: o, rows }, null, 2) : formatScaling(topo, o, rows));
    return 0;
  }
  if (mode === 'check-host') {
    const workers = intList(args, 'workers', '1,2,4', 1);
    const experts = intFlag(args, 'experts', 1, 'simulate ep') ?? 8;
    if (Math.max(...workers) > experts) throw new Error(`simulate ep: --workers ${workers.join(',')} exceeds --experts ${experts}`);
    const log = (l: string): void => { process.stderr.write(`${l}\n`); };
    const r = runHostCheck({
      fit: parseShapes(args.flags.get('fit')?.[0] ?? '512x256,2048x256', '--fit'),
      check: parseShapes(args.flags.get('check')?.[0] ?? '1024x128,1024x256,4096x128', '--check'),
      workers, experts, rounds: intFlag(args, 'rounds', 1, 'simulate ep') ?? 3, algorithm: algorithmFlag(args), log,
    });
    console.log(json ? JSON.stringify(r, null, 2) : formatHostCheck(r));
    return 0;
  }
  const tracePath = args.flags.get('trace')?.[0];
  if (!tracePath) throw new Error('simulate ep: --trace FILE.jsonl is required (record one with moe train --set parallel.trace=FILE)');
  const topo = loadTopology(args.flags.get('topology')?.[0] ?? 'dgx-h100', (p) => readFileSync(p, 'utf8'));
  const devices = intFlag(args, 'devices', 1, 'simulate ep') ?? topo.devices;
  const d = intFlag(args, 'd', 1, 'simulate ep');
  const ff = intFlag(args, 'ff', 1, 'simulate ep');
  const bpv = intFlag(args, 'bytes-per-value', 1, 'simulate ep') ?? 2;
  const trace = readTrace(readFileSync(tracePath, 'utf8'), tracePath);
  const result = simulateTrace(trace, { ...topo, devices }, { ...(d ? { dModel: d } : {}), ...(ff ? { dFF: ff } : {}), bytesPerValue: bpv });
  console.log(args.flags.has('json') ? JSON.stringify(result, null, 2) : formatSimulation(result));
  return 0;
}
