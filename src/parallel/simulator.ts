// `moe simulate ep`: predicted time and bytes per link of the expert-parallel all-to-all on a
// topology, for a recorded routing trace. Tokens are split evenly over D devices (a data-parallel
// shard each) and experts too (layout.ts, the same layout the worker threads use); each exchange
// is a D x D byte matrix, run by one of four algorithms under an alpha-beta cost (per message
// latency + bytes / bandwidth of the link it crosses):
//   pairwise      D-1 rounds, device r sends straight to r+s in round s (NCCL's all-to-all)
//   ring          blocks hop along a ring; a block to offset o crosses o links
//   bruck         ceil(log2 D) rounds; round k forwards every block whose offset has bit k set
//   hierarchical  intra-node pairwise aggregating by destination local index, then inter-node
//                 pairwise between devices of equal local index (Tutel / DeepSpeed's 2D all-to-all)

import { exchangeLayout, rowMatrix } from './layout.js';

export interface LinkSpec {
  /** Bandwidth per device and direction, GB/s (1e9 bytes/s). */
  bandwidthGBs: number;
  /** Latency per message, microseconds. */
  latencyUs: number;
}

export interface Topology {
  name: string;
  /** Where the figures come from. */
  source: string;
  devices: number;
  devicesPerNode: number;
  intra: LinkSpec;
  inter: LinkSpec;
  /**
   * Optional, for transports that copy every row (shared memory between threads: a row that stays
   * on its rank is copied like one that leaves it): GB/s of a device's copy of its own rows, paid
   * in parallel by all devices. GPU presets leave it out (a GPU permutes its own rows in its kernels).
   */
  localCopyGBs?: number;
  /** Optional fixed cost of one exchange, microseconds (phase hand-offs and barriers on the host). */
  overheadUs?: number;
  /**
   * Optional TFLOP/s a device achieves in the expert GEMMs: with it (and the experts' hidden width
   * from the trace or --ff) the simulator adds the busiest device's expert compute to the step.
   */
  computeTFlops?: number;
}

export const TOPOLOGY_PRESETS: Record<string, Topology> = {
  'dgx-h100': {
    name: 'dgx-h100', devices: 8, devicesPerNode: 8,
    source: 'NVIDIA DGX H100 datasheet / H100 SXM datasheet: NVLink 4 at 900 GB/s per GPU (both directions, so 450 GB/s each way) through NVSwitch; '
      + 'latency 3 us per message is an assumed order of magnitude for NCCL, not a published figure; '
      + 'expert GEMMs at 400 TFLOP/s assumed (~40% of the H100 SXM datasheet\'s 989 TFLOPS dense BF16)',
    intra: { bandwidthGBs: 450, latencyUs: 3 },
    inter: { bandwidthGBs: 450, latencyUs: 3 },
    computeTFlops: 400,
  },
  'h100-ib-cluster': {
    name: 'h100-ib-cluster', devices: 256, devicesPerNode: 8,
    source: 'NVIDIA DGX H100 datasheet: 8 GPUs on NVLink 4 (450 GB/s each way per GPU) and 8x ConnectX-7 400 Gb/s NDR InfiniBand per node (50 GB/s per GPU each way); '
      + '32 nodes; latencies (3 us NVLink, 8 us InfiniBand with NCCL) are assumed orders of magnitude; '
      + 'expert GEMMs at 400 TFLOP/s assumed (~40% of the H100 SXM datasheet\'s 989 TFLOPS dense BF16)',
    intra: { bandwidthGBs: 450, latencyUs: 3 },
    inter: { bandwidthGBs: 50, latencyUs: 8 },
    computeTFlops: 400,
  },
  host: {
    name: 'host', devices: 4, devicesPerNode: 4,
    source: 'this 2-vCPU AVX2 EPYC host, worker threads over shared memory, fitted by moe simulate ep check-host on 2026-12-01 '
      + '(T x d = 512x256, 2048x256 at N = 1, 2, 4, E = 8) while the machine ran at load average ~16: the figures include waiting for a core, '
      + 'so they are several times slower than a quiet machine\'s; refit with check-host (docs/results/expert-parallel.md)',
    intra: { bandwidthGBs: 0.135, latencyUs: 0 },
    inter: { bandwidthGBs: 0.135, latencyUs: 0 },
    localCopyGBs: 0.174,
    overheadUs: 8420,
  },
};

export const ALGORITHMS = ['pairwise', 'ring', 'bruck', 'hierarchical'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** A preset's name or a JSON file's text (read by the caller's readFile), validated. */
export function loadTopology(nameOrPath: string, readFile: (path: string) => string): Topology {
  const preset = TOPOLOGY_PRESETS[nameOrPath];
  if (preset) return preset;
  if (!nameOrPath.endsWith('.json')) throw new Error(`topology '${nameOrPath}': not a preset (${Object.keys(TOPOLOGY_PRESETS).join(', ')}) nor a .json file`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFile(nameOrPath));
  } catch (e) {
    throw new Error(`topology ${nameOrPath}: ${(e as Error).message}`);
  }
  return validateTopology(raw, nameOrPath);
}

export function validateTopology(raw: unknown, where: string): Topology {
  const o = raw as Record<string, unknown>;
  if (typeof raw !== 'object' || raw === null) throw new Error(`${where}: expected a JSON object`);
  const num = (v: unknown, key: string, int: boolean): number => {
    if (typeof v !== 'number' || !(v > 0) || (int && !Number.isInteger(v))) throw new Error(`${where}: ${key} must be a positive ${int ? 'integer' : 'number'}, got ${JSON.stringify(v)}`);
    return v;
  };
  const link = (v: unknown, key: string): LinkSpec => {
    const l = (v ?? {}) as Record<string, unknown>;
    return { bandwidthGBs: num(l['bandwidthGBs'], `${key}.bandwidthGBs`, false), latencyUs: num(l['latencyUs'], `${key}.latencyUs`, false) };
  };
  const overhead = o['overheadUs'];
  if (overhead !== undefined && !(typeof overhead === 'number' && overhead >= 0)) throw new Error(`${where}: overheadUs must be a number >= 0, got ${JSON.stringify(overhead)}`);
  return {
    name: typeof o['name'] === 'string' ? o['name'] : where, source: typeof o['source'] === 'string' ? o['source'] : '(no source given)',
    devices: num(o['devices'], 'devices', true), devicesPerNode: num(o['devicesPerNode'], 'devicesPerNode', true),
    intra: link(o['intra'], 'intra'), inter: link(o['inter'], 'inter'),
    ...(o['localCopyGBs'] !== undefined ? { localCopyGBs: num(o['localCopyGBs'], 'localCopyGBs', false) } : {}),
    ...(o['computeTFlops'] !== undefined ? { computeTFlops: num(o['computeTFlops'], 'computeTFlops', false) } : {}),
    ...(overhead !== undefined ? { overheadUs: overhead as number } : {}),
  };
}

export interface ExchangeCost {
  /** Seconds for one exchange. */
  seconds: number;
  /** Bytes carried by intra-node and inter-node links (a block crossing h links counts h times). */
  intraBytes: number;
  interBytes: number;
  /** Bytes carried by each directed link, [from][to] (device pairs; a relayed block counts on every link it crosses). */
  linkBytes: number[][];
  /** Messages sent (the latency terms paid in sequence are in seconds). */
  rounds: number;
}

/**
 * Cost of one all-to-all of bytes[r][j] (r sends to j) on topo's first bytes.length devices: the
 * algorithm's link time, plus, where the topology gives them, its fixed overhead and the copy of
 * each device's own rows (the slowest device's; all copy at once).
 */
export function exchangeCost(bytes: number[][], topo: Topology, algo: Algorithm): ExchangeCost {
  const out = linkCost(bytes, topo, algo);
  out.seconds += (topo.overheadUs ?? 0) * 1e-6;
  if (topo.localCopyGBs !== undefined) {
    let most = 0;
    bytes.forEach((row, r) => { most = Math.max(most, row[r]!); });
    out.seconds += most / (topo.localCopyGBs * 1e9);
  }
  return out;
}

/** The link part of exchangeCost: rounds of messages between devices under the alpha-beta cost. */
function linkCost(bytes: number[][], topo: Topology, algo: Algorithm): ExchangeCost {
  const D = bytes.length;
  const P = topo.devicesPerNode;
  const node = (r: number): number => Math.floor(r / P);
  const link = (a: number, b: number): LinkSpec => (node(a) === node(b) ? topo.intra : topo.inter);
  const cost = (a: number, b: number, n: number): number => link(a, b).latencyUs * 1e-6 + n / (link(a, b).bandwidthGBs * 1e9);
  const out: ExchangeCost = { seconds: 0, intraBytes: 0, interBytes: 0, linkBytes: Array.from({ length: D }, () => new Array<number>(D).fill(0)), rounds: 0 };
  const carry = (a: number, b: number, n: number): void => {
    if (node(a) === node(b)) out.intraBytes += n; else out.interBytes += n;
    out.linkBytes[a]![b]! += n;
  };
  if (D <= 1) return out;
  switch (algo) {
    case 'pairwise':
      for (let s = 1; s < D; s++) {
        let t = 0;
        for (let r = 0; r < D; r++) {
          const j = (r + s) % D;
          t = Math.max(t, cost(r, j, bytes[r]![j]!));
          carry(r, j, bytes[r]![j]!);
        }
        out.seconds += t;
        out.rounds++;
      }
      return out;
    case 'ring': {
      const load = new Array<number>(D).fill(0);
      for (let r = 0; r < D; r++) {
        for (let j = 0; j < D; j++) {
          for (let h = r; h !== j; h = (h + 1) % D) { load[h] = load[h]! + bytes[r]![j]!; carry(h, (h + 1) % D, bytes[r]![j]!); }
        }
      }
      // D - 1 pipelined steps: every step pays a latency, the busiest link sets the bandwidth term
      let lat = 0;
      let bw = 0;
      for (let h = 0; h < D; h++) {
        const l = link(h, (h + 1) % D);
        lat = Math.max(lat, l.latencyUs * 1e-6);
        bw = Math.max(bw, load[h]! / (l.bandwidthGBs * 1e9));
      }
      out.seconds = (D - 1) * lat + bw;
      out.rounds = D - 1;
      return out;
    }
    case 'bruck':
      for (let k = 0; 1 << k < D; k++) {
        const send = new Array<number>(D).fill(0);
        for (let s = 0; s < D; s++) {
          for (let t = 0; t < D; t++) {
            const off = (t - s + D) % D;
            if (off & (1 << k)) {
              const h = (s + (off & ((1 << k) - 1))) % D;
              send[h] = send[h]! + bytes[s]![t]!;
            }
          }
        }
        let tk = 0;
        for (let h = 0; h < D; h++) {
          const to = (h + (1 << k)) % D;
          tk = Math.max(tk, cost(h, to, send[h]!));
          carry(h, to, send[h]!);
        }
        out.seconds += tk;
        out.rounds++;
      }
      return out;
    case 'hierarchical': {
      const nodes = Math.ceil(D / P);
      const local = (r: number): number => r % P;
      const size = (n: number): number => Math.min(P, D - n * P);
      // phase 1: within each node, device (n, a) hands device (n, b) everything bound for local index b anywhere
      let t1 = 0;
      for (let s = 1; s < P; s++) {
        let t = 0;
        for (let r = 0; r < D; r++) {
          const n = node(r);
          if (s >= size(n)) continue;
          const b = (local(r) + s) % size(n);
          let sum = 0;
          for (let j = 0; j < D; j++) if (local(j) === b) sum += bytes[r]![j]!;
          t = Math.max(t, cost(r, n * P + b, sum));
          carry(r, n * P + b, sum);
        }
        if (t > 0) { t1 += t; out.rounds++; }
      }
      // phase 2: device (n, b) sends node m's share for local index b to device (m, b)
      let t2 = 0;
      for (let s = 1; s < nodes; s++) {
        let t = 0;
        for (let r = 0; r < D; r++) {
          const n = node(r);
          const m = (n + s) % nodes;
          const dst = m * P + local(r);
          if (dst >= D) continue;
          let sum = 0;
          for (let src = n * P; src < Math.min(D, (n + 1) * P); src++) sum += bytes[src]![dst]!;
          t = Math.max(t, cost(r, dst, sum));
          carry(r, dst, sum);
        }
        t2 += t;
        out.rounds++;
      }
      out.seconds = t1 + t2;
      return out;
    }
  }
}

/** One record of a routing trace: one MoE layer's forward in one training step (plan order). */
export interface TraceRecord {
  step: number;
  layer: string;
  tokens: number;
  dModel: number;
  /** Rows per expert after capacity [E]. */
  groupSizes: number[];
  /** Token of each kept row, experts in order [A']. */
  tokenOfRow: number[];
  /** The experts' hidden width and activation (traces from before 2026-12-01 lack them: give --ff). */
  dFF?: number;
  activation?: string;
}

export function readTrace(text: string, where: string): TraceRecord[] {
  const out: TraceRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let r: TraceRecord;
    try {
      r = JSON.parse(line) as TraceRecord;
    } catch {
      throw new Error(`${where}:${i + 1}: not JSON`);
    }
    if (!Array.isArray(r.groupSizes) || !Array.isArray(r.tokenOfRow) || !Number.isInteger(r.tokens) || !Number.isInteger(r.dModel)) {
      throw new Error(`${where}:${i + 1}: a trace record needs tokens, dModel, groupSizes and tokenOfRow`);
    }
    out.push(r);
  });
  if (out.length === 0) throw new Error(`${where}: the trace is empty`);
  return out;
}

export interface SimulationResult {
  topology: Topology;
  devices: number;
  steps: number;
  /** Per algorithm, per training step (every layer: forward dispatch + combine, backward dispatch + combine). */
  perStep: Record<Algorithm, { seconds: number; intraBytes: number; interBytes: number; linkBytes: number[][] }>;
  /**
   * Expert compute per training step: each layer's busiest device (the most rows) runs forward and
   * backward (3x the forward's FLOPs) at the topology's computeTFlops, layers one after another;
   * null without computeTFlops or a hidden width. The predicted step is this plus an algorithm's
   * exchange time (no overlap between them).
   */
  computeSeconds: number | null;
}

/**
 * Mean per training step over the trace; each record's layer exchanges 4 times: the dispatch and the
 * combine (the dispatch's transpose) in the forward, and again for the gradients in the backward.
 */
export function simulateTrace(trace: TraceRecord[], topo: Topology, opts: { dModel?: number; dFF?: number; bytesPerValue: number }): SimulationResult {
  const D = topo.devices;
  const zero = (): number[][] => Array.from({ length: D }, () => new Array<number>(D).fill(0));
  const perStep = Object.fromEntries(ALGORITHMS.map((a) => [a, { seconds: 0, intraBytes: 0, interBytes: 0, linkBytes: zero() }])) as SimulationResult['perStep'];
  const steps = new Set(trace.map((r) => r.step)).size;
  let computeSeconds: number | null = topo.computeTFlops === undefined ? null : 0;
  for (const rec of trace) {
    const E = rec.groupSizes.length;
    if (D > E) throw new Error(`simulate: ${D} devices for ${E} experts (layer ${rec.layer}); give --devices at most ${E}`);
    const rowBytes = (opts.dModel ?? rec.dModel) * opts.bytesPerValue;
    const m = rowMatrix(exchangeLayout(Int32Array.from(rec.tokenOfRow), Int32Array.from(rec.groupSizes), rec.tokens, D)).map((r) => r.map((n) => n * rowBytes));
    // the dispatch sends m (token owner -> expert owner), the combine its transpose back; the backward does both again
    const mT = m.map((row, i) => row.map((_, j) => m[j]![i]!));
    const h = opts.dFF ?? rec.dFF;
    if (computeSeconds !== null && h === undefined) computeSeconds = null;
    if (computeSeconds !== null) {
      // rows device j's experts receive: column j of the byte matrix, in rows
      const most = Math.max(...m.map((_, j) => m.reduce((a, row) => a + row[j]!, 0) / rowBytes));
      const matrices = rec.activation === 'swiglu' ? 3 : 2;
      computeSeconds += (3 * most * 2 * (opts.dModel ?? rec.dModel) * h! * matrices) / (topo.computeTFlops! * 1e12) / steps;
    }
    for (const a of ALGORITHMS) {
      for (const c of [exchangeCost(m, topo, a), exchangeCost(mT, topo, a)]) {
        perStep[a].seconds += (2 * c.seconds) / steps;
        perStep[a].intraBytes += (2 * c.intraBytes) / steps;
        perStep[a].interBytes += (2 * c.interBytes) / steps;
        c.linkBytes.forEach((row, i) => row.forEach((b, j) => { perStep[a].linkBytes[i]![j]! += (2 * b) / steps; }));
      }
    }
  }
  return { topology: topo, devices: D, steps, perStep, computeSeconds };
}

export function formatSimulation(r: SimulationResult): string {
  const lines = [`${r.topology.name}: ${r.devices} devices, ${r.topology.devicesPerNode} per node; ${r.steps} steps of the trace`, `  (${r.topology.source})`];
  const c = r.computeSeconds;
  lines.push(c === null
    ? 'expert compute: not priced (the topology has no computeTFlops, or the trace no hidden width: give --ff)'
    : `expert compute ${(c * 1e3).toFixed(4)} ms/step (each layer's busiest device, forward + backward); step = compute + exchange`);
  lines.push(`algorithm      ms/step   intra-node MB/step   inter-node MB/step   busiest link MB/step${c === null ? '' : '   step ms'}`);
  for (const a of ALGORITHMS) {
    const p = r.perStep[a];
    const [most, from, to] = busiest(p.linkBytes);
    lines.push(`${a.padEnd(13)}${(p.seconds * 1e3).toFixed(4).padStart(9)}${(p.intraBytes / 1e6).toFixed(3).padStart(21)}${(p.interBytes / 1e6).toFixed(3).padStart(21)}`
      + `${(most / 1e6).toFixed(3).padStart(14)} (${from}->${to})${c === null ? '' : `${((c + p.seconds) * 1e3).toFixed(4).padStart(12)}`}`);
  }
  // every link of the direct exchange (NCCL's pairwise); --json gives every algorithm's
  if (r.devices <= 16) {
    lines.push('pairwise, MB/step per link (row: from device, column: to device; - = the device itself)');
    lines.push(`      ${Array.from({ length: r.devices }, (_, j) => String(j).padStart(9)).join('')}`);
    r.perStep.pairwise.linkBytes.forEach((row, i) => lines.push(`${String(i).padStart(6)}${row.map((b, j) => (i === j ? '-' : (b / 1e6).toFixed(3)).padStart(9)).join('')}`));
  }
  return lines.join('\n');
}

/** The most bytes on one directed link, and the link. */
function busiest(links: number[][]): [number, number, number] {
  let best: [number, number, number] = [0, 0, 0];
  links.forEach((row, i) => row.forEach((b, j) => { if (b > best[0]) best = [b, i, j]; }));
  return best;
}

/** The byte matrix of T tokens routed top-k uniformly at random (expected counts) over D devices. */
export function uniformBytes(T: number, D: number, k: number, rowBytes: number): number[][] {
  const perPair = (T / D) * (k / D) * rowBytes;
  return Array.from({ length: D }, () => new Array<number>(D).fill(perPair));
}
