// `moe experiment topology-routing`: what device-limited routing and the topology loss cost in
// validation loss and save on slow links. A byte-level MoE LM (E = 16, k = 4) trains on UDHR with
// its experts placed on N = 4 devices (4 each) in 2 nodes; each run records its routing (the trace of
// `moe train --set parallel.trace`), and the simulator of `moe simulate ep` turns the trace of its
// last quarter of steps into bytes per link and predicted exchange time on a multi-node topology.
// Two data settings: `mixed` (every device's sequences drawn from all languages, so a token's
// content says nothing about its device) and `sharded` (device r's sequences all come from its own
// language, as when data-parallel shards differ), which is what gives the router something to use.

import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { ByteLM } from '../models/lm.js';
import { MoELayer } from '../moe/layer.js';
import { Adam, clipGradNorm } from '../train/optim.js';
import { lmLoss, LanguageModelTask } from '../train/lm-task.js';
import { loadUdhrCorpus } from '../data/udhr-corpus.js';
import { randomWindows, deriveSeed } from '../data/batches.js';
import { Rng } from '../tensor/rng.js';
import { add } from '../ops/index.js';
import { Tensor } from '../tensor/tensor.js';
import type { RouterConfig } from '../moe/routers/index.js';
import { recordRouting } from '../parallel/trace.js';
import { exchangeCost, readTrace, simulateTrace, TOPOLOGY_PRESETS, type Topology, type TraceRecord } from '../parallel/simulator.js';
import { evenSplit, exchangeLayout, ownerOf, rowMatrix } from '../parallel/layout.js';
import { writeFileAtomic } from '../io/atomic.js';
import { markdownTable } from '../report/table.js';
import { formatSeconds } from './common.js';

export interface TopologyRoutingOptions {
  quick?: boolean;
  out?: string;
  /** Training steps per variant (default 300; quick 30). */
  steps?: number;
  seed?: number;
  /** Validation windows (default 64; quick 32). */
  evalWindows?: number;
  command?: string;
  log?: (line: string) => void;
}

const DEVICES = 4;
const PER_NODE = 2;
const CLUSTER = TOPOLOGY_PRESETS['h100-ib-cluster']!;
/** The H100 InfiniBand cluster's links, cut to 2 nodes of 2 GPUs (4 experts each). */
export const TOPOLOGY: Topology = {
  ...CLUSTER, name: 'h100-ib-2x2', devices: DEVICES, devicesPerNode: PER_NODE,
  source: `${CLUSTER.name} preset's links (NVLink 4 ${CLUSTER.intra.bandwidthGBs} GB/s, InfiniBand ${CLUSTER.inter.bandwidthGBs} GB/s per GPU each way) on 2 nodes of 2 devices`,
};
/** Per-byte link costs of the topology loss, relative to the inter-node link: 1 / bandwidth. */
const INTRA_COST = CLUSTER.inter.bandwidthGBs / CLUSTER.intra.bandwidthGBs;
/** Rows are projected to this width in bf16 for the second time column (a realistic hidden size). */
const PROJECT_D = 4096;

interface Variant { name: string; doc: string; maxDevices: number; topologyWeight: number; settings: readonly Setting[] }
type Setting = 'mixed' | 'sharded';
/** One language per device; devices 0-1 (node 0) Latin script, 2-3 (node 1) Cyrillic and Greek. */
const DEVICE_LANGUAGES = ['eng', 'deu_1996', 'rus', 'ell_monotonic'];

const VARIANTS: Variant[] = [
  { name: 'top-k', doc: 'plain top-4 (device-limited with M = N = 4: topk bit for bit)', maxDevices: 4, topologyWeight: 0, settings: ['mixed', 'sharded'] },
  { name: 'M=2', doc: 'each token\'s 4 experts on at most 2 of the 4 devices (device score: sum of its best 2 probabilities)', maxDevices: 2, topologyWeight: 0, settings: ['mixed', 'sharded'] },
  { name: 'M=1', doc: 'all 4 experts on one device (device score: sum of its best 4)', maxDevices: 1, topologyWeight: 0, settings: ['mixed', 'sharded'] },
  { name: 'loss 0.1', doc: 'plain top-4 + topology loss, weight 0.1', maxDevices: 4, topologyWeight: 0.1, settings: ['sharded'] },
  { name: 'loss 1', doc: 'plain top-4 + topology loss, weight 1', maxDevices: 4, topologyWeight: 1, settings: ['mixed', 'sharded'] },
  { name: 'M=2 + loss 1', doc: 'both: at most 2 devices, topology loss weight 1', maxDevices: 2, topologyWeight: 1, settings: ['sharded'] },
];

export interface TopologyRoutingRun {
  setting: Setting;
  variant: string;
  valBitsPerByte: number;
  finalTrainLoss: number;
  /** Shares of the trace window's rows (token, expert) whose expert is on another node / device than the token. */
  offNodeShare: number;
  offDeviceShare: number;
  /** Max / mean rows per device over the trace window (the expert compute's imbalance). */
  deviceLoadMaxOverMean: number;
  /** Simulator, per training step (4 exchanges per MoE layer), at the model's width in float32. */
  interNodeMB: number;
  intraNodeMB: number;
  pairwiseMs: number;
  hierarchicalMs: number;
  /** The same routing with rows of PROJECT_D bf16 values. */
  pairwiseMsProjected: number;
  hierarchicalMsProjected: number;
  /** Deduplicated dispatch (a token goes once to each device it uses): inter-node MB per step at the model's width, times at PROJECT_D bf16. */
  interNodeMBDedup: number;
  pairwiseMsProjectedDedup: number;
  hierarchicalMsProjectedDedup: number;
  seconds: number;
}

export interface TopologyRoutingResult {
  experiment: 'topology-routing';
  command: string;
  config: Record<string, unknown>;
  runs: TopologyRoutingRun[];
  seconds: number;
  out: string;
}

/** From the trace: rows leaving the token's node / device, and max / mean rows received per device (the expert compute's imbalance). */
function traceShares(trace: TraceRecord[]): { offNode: number; offDevice: number; imbalance: number } {
  const rows = new Float64Array(DEVICES);
  let total = 0;
  let offNode = 0;
  let offDevice = 0;
  for (const r of trace) {
    const m = rowMatrix(exchangeLayout(Int32Array.from(r.tokenOfRow), Int32Array.from(r.groupSizes), r.tokens, DEVICES));
    for (let j = 0; j < DEVICES; j++) {
      for (let i = 0; i < DEVICES; i++) {
        const n = m[i]![j]!;
        rows[j]! += n;
        total += n;
        if (i !== j) offDevice += n;
        if (Math.floor(i / PER_NODE) !== Math.floor(j / PER_NODE)) offNode += n;
      }
    }
  }
  const mean = total / DEVICES;
  return { offNode: offNode / Math.max(1, total), offDevice: offDevice / Math.max(1, total), imbalance: mean > 0 ? Math.max(...rows) / mean : 1 };
}

/** The batch of a step: mixed, B windows of the joined corpus; sharded, B / N windows of each device's language, device-major. */
function batchOf(setting: Setting, all: Uint8Array, perDevice: Uint8Array[], B: number, T: number, rng: Rng): { x: Tensor; y: Tensor } {
  if (setting === 'mixed') return randomWindows(all, { batchSize: B, seqLen: T, rng });
  const x = new Int32Array(B * T);
  const y = new Int32Array(B * T);
  perDevice.forEach((bytes, r) => {
    const w = randomWindows(bytes, { batchSize: B / DEVICES, seqLen: T, rng });
    x.set(w.x.data as Int32Array, (r * B * T) / DEVICES);
    y.set(w.y.data as Int32Array, (r * B * T) / DEVICES);
  });
  return { x: new Tensor(x, [B, T]), y: new Tensor(y, [B, T]) };
}

/**
 * Per training step, the exchange when a token is sent once to each device that holds any of its
 * experts (DeepSeek-V3's dispatch; the device fans it out to its experts and sums their outputs
 * before the combine sends one row back), which moe-ts's layout (one row per assignment) does not do.
 */
function dedupExchange(trace: TraceRecord[], rowBytes: number): { interMB: number; pairwiseMs: number; hierarchicalMs: number } {
  const steps = new Set(trace.map((r) => r.step)).size;
  let inter = 0;
  let pw = 0;
  let hi = 0;
  for (const r of trace) {
    const experts = evenSplit(r.groupSizes.length, DEVICES);
    const shards = evenSplit(r.tokens, DEVICES);
    const seen = new Set<number>();
    const m = Array.from({ length: DEVICES }, () => new Array<number>(DEVICES).fill(0));
    let row = 0;
    r.groupSizes.forEach((n, e) => {
      const dst = ownerOf(experts, e);
      for (let i = 0; i < n; i++, row++) {
        const t = r.tokenOfRow[row]!;
        if (seen.has(t * DEVICES + dst)) continue;
        seen.add(t * DEVICES + dst);
        m[ownerOf(shards, t)]![dst]! += rowBytes;
      }
    });
    const scale = PROJECT_D * 2 / rowBytes;
    const mp = m.map((a) => a.map((b) => b * scale));
    inter += (4 * exchangeCost(m, TOPOLOGY, 'pairwise').interBytes) / steps;
    pw += (4 * exchangeCost(mp, TOPOLOGY, 'pairwise').seconds) / steps;
    hi += (4 * exchangeCost(mp, TOPOLOGY, 'hierarchical').seconds) / steps;
  }
  return { interMB: inter / 1e6, pairwiseMs: pw * 1e3, hierarchicalMs: hi * 1e3 };
}

export async function runTopologyRouting(opts: TopologyRoutingOptions = {}): Promise<TopologyRoutingResult> {
  const t0 = performance.now();
  const quick = opts.quick ?? false;
  const steps = opts.steps ?? (quick ? 30 : 200);
  const seed = opts.seed ?? 0;
  const out = opts.out ?? (quick ? 'docs/results/topology-routing-quick' : 'docs/results/topology-routing');
  const log = opts.log ?? ((l: string) => console.log(l));
  const model = { dModel: 48, layers: 2, heads: 4, maxSeqLen: 64, numExperts: 16, k: 4, dFF: 48, loadBalanceCoef: 0.01 };
  const train = { batchSize: 8, seqLen: 64, lr: 3e-3, clipNorm: 1, evalWindows: opts.evalWindows ?? (quick ? 32 : 64) };
  const corpus = await loadUdhrCorpus({ languages: DEVICE_LANGUAGES, valFraction: 0.1 });
  const perDevice = await Promise.all(DEVICE_LANGUAGES.map(async (l) => (await loadUdhrCorpus({ languages: [l], valFraction: 0.1 })).train));
  const tmp = join(tmpdir(), `moe-topology-routing-${process.pid}`);
  mkdirSync(tmp, { recursive: true });
  const runs: TopologyRoutingRun[] = [];
  try {
    for (const [setting, v] of (['mixed', 'sharded'] as const).flatMap((st) => VARIANTS.filter((x) => x.settings.includes(st)).map((x) => [st, x] as const))) {
      const tr = performance.now();
      const router: RouterConfig = {
        type: 'device-limited', k: model.k, devices: DEVICES, devicesPerNode: PER_NODE, maxDevices: v.maxDevices,
        topologyLoss: v.topologyWeight > 0, intraNodeCost: INTRA_COST, interNodeCost: 1,
      };
      const lm = new ByteLM({ ...model, router }, seed);
      const layers = lm.namedModules().map(([, m]) => m).filter((m): m is MoELayer => m instanceof MoELayer);
      // the byte-LM schema has no routerLossCoefs field: set the loss's weight on each layer's config
      for (const l of layers) l.config.routerLossCoefs['topology'] = v.topologyWeight;
      const tracePath = join(tmp, `${setting}-${v.name.replace(/[^a-z0-9]+/gi, '-')}.jsonl`);
      const recorder = recordRouting(lm, tracePath);
      const opt = new Adam(lm.namedParameters(), { lr: train.lr });
      const rng = new Rng(deriveSeed(seed, 31));
      let acc = 0;
      let n = 0;
      for (let s = 0; s < steps; s++) {
        lm.reseedAll(deriveSeed(seed, s));
        const { x, y } = batchOf(setting, corpus.train, perDevice, train.batchSize, train.seqLen, rng);
        const o = lm.forward(x);
        const task = lmLoss(o.logits, y);
        (o.auxLoss ? add(task, o.auxLoss) : task).backward();
        clipGradNorm(lm.parameters(), train.clipNorm);
        opt.step();
        opt.zeroGrad();
        if (s >= steps - Math.max(1, Math.floor(steps / 10))) { acc += task.item(); n++; }
      }
      recorder.close();
      const evalTask = new LanguageModelTask(lm, { train: corpus.train, val: corpus.val, test: null }, { batchSize: train.batchSize, seqLen: train.seqLen, stepsPerEpoch: 1, seed, evalWindows: train.evalWindows });
      const val = evalTask.evaluateBytes(corpus.val).bitsPerByte;
      // the trained routing: the last quarter of the training steps
      const trace = readTrace(readFileSync(tracePath, 'utf8'), tracePath).filter((r) => r.step > steps - Math.max(1, Math.floor(steps / 4)));
      const sim = simulateTrace(trace, TOPOLOGY, { bytesPerValue: 4 });
      const proj = simulateTrace(trace, TOPOLOGY, { dModel: PROJECT_D, bytesPerValue: 2 });
      const dedup = dedupExchange(trace, model.dModel * 4);
      const shares = traceShares(trace);
      const r: TopologyRoutingRun = {
        setting, variant: v.name, valBitsPerByte: val, finalTrainLoss: acc / Math.max(1, n),
        offNodeShare: shares.offNode, offDeviceShare: shares.offDevice, deviceLoadMaxOverMean: shares.imbalance,
        interNodeMB: sim.perStep.pairwise.interBytes / 1e6, intraNodeMB: sim.perStep.pairwise.intraBytes / 1e6,
        pairwiseMs: sim.perStep.pairwise.seconds * 1e3, hierarchicalMs: sim.perStep.hierarchical.seconds * 1e3,
        pairwiseMsProjected: proj.perStep.pairwise.seconds * 1e3, hierarchicalMsProjected: proj.perStep.hierarchical.seconds * 1e3,
        interNodeMBDedup: dedup.interMB, pairwiseMsProjectedDedup: dedup.pairwiseMs, hierarchicalMsProjectedDedup: dedup.hierarchicalMs,
        seconds: (performance.now() - tr) / 1000,
      };
      runs.push(r);
      log(`  ${setting} ${v.name}: val ${val.toFixed(3)} bits/byte, off-node ${(100 * r.offNodeShare).toFixed(1)}%, inter-node ${r.interNodeMB.toFixed(3)} MB/step `
        + `(deduplicated ${r.interNodeMBDedup.toFixed(3)}), pairwise at d=${PROJECT_D} bf16 ${r.pairwiseMsProjected.toFixed(3)} ms (deduplicated ${r.pairwiseMsProjectedDedup.toFixed(3)}) (${formatSeconds(r.seconds)})`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const seconds = (performance.now() - t0) / 1000;
  const result: TopologyRoutingResult = {
    experiment: 'topology-routing', command: opts.command ?? 'moe experiment topology-routing', seconds, out, runs,
    config: { quick, steps, seed, languages: corpus.languages, deviceLanguages: DEVICE_LANGUAGES, model, train, devices: DEVICES, devicesPerNode: PER_NODE, topology: TOPOLOGY, intraNodeCost: INTRA_COST, projectD: PROJECT_D, variants: VARIANTS },
  };
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), topologyRoutingMarkdown(result));
  return result;
}

export function topologyRoutingMarkdown(r: TopologyRoutingResult): string {
  const c = r.config as { steps: number; model: Record<string, number>; train: Record<string, number>; languages: string[] };
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  return [
    '# Device-limited routing and the topology loss: validation loss against slow-link bytes',
    '',
    `Command: \`${r.command}\` (${formatSeconds(r.seconds)} on this machine).`,
    '',
    `Byte-level MoE LM (d = ${c.model['dModel']}, ${c.model['layers']} MoE blocks, E = ${c.model['numExperts']}, k = ${c.model['k']}, expert width ${c.model['dFF']}, load-balance coefficient ${c.model['loadBalanceCoef']}) `
    + `on UDHR ${c.languages.join(', ')} (validation: the joined validation split of the four); ${c.steps} steps of Adam (lr ${c.train['lr']}, batch ${c.train['batchSize']} x ${c.train['seqLen']} bytes = ${c.train['batchSize']! * c.train['seqLen']!} tokens per step), one seed. `
    + `Experts on ${DEVICES} devices (${c.model['numExperts']! / DEVICES} each), 2 devices per node; tokens split over the devices by position (2 sequences each). `
    + `*mixed*: every sequence is a random window of the joined corpus, so a token's content says nothing about its device; `
    + `*sharded*: device r's 2 sequences come from its own language (${DEVICE_LANGUAGES.join(', ')}: node 0 holds the Latin-script, node 1 the Cyrillic and Greek texts), as when data-parallel shards differ. `
    + `Topology: ${TOPOLOGY.source}; latencies as the preset (${TOPOLOGY.intra.latencyUs} / ${TOPOLOGY.inter.latencyUs} us, assumed). `
    + `Topology-loss costs: 0 on the token's device, ${INTRA_COST.toFixed(3)} inside its node, 1 across nodes (1 / bandwidth).`,
    '',
    '- val: bits per byte on the validation split. off-node / off-device: share of the (token, expert) rows in the trace window whose expert sits on another node / device than the token.',
    '- The simulator columns use the routing trace of the last quarter of the training steps, per training step (4 exchanges per MoE block: dispatch and combine, forward and backward). '
    + '*per assignment*: moe-ts\'s exchange (src/parallel/layout.ts, `moe simulate ep`): one row per (token, expert), so a token with 3 experts on one device sends 3 rows there. '
    + '*dedup*: a token is sent once to each device it uses, which fans it out to its experts and sums their outputs before the combine (DeepSeek-V3\'s dispatch; computed here from the same trace, not implemented in src/parallel). '
    + `Bytes at the model's width in float32; times with rows of ${PROJECT_D} bf16 values (the same routing at a realistic hidden size; at d = 48 every time is latency: see results.json). `
    + 'load max/mean: rows received by the busiest device over the mean (the expert compute imbalance, which the simulator does not time).',
    '',
    markdownTable(
      ['data', 'variant', 'val bits/byte', 'train loss', 'off-node', 'off-device', 'inter-node MB, per assignment', 'inter-node MB, dedup', `pairwise ms, per assignment`, 'pairwise ms, dedup', 'hierarchical ms, dedup', 'load max/mean', 'wall'],
      r.runs.map((x) => [x.setting, x.variant, x.valBitsPerByte.toFixed(3), x.finalTrainLoss.toFixed(3), pct(x.offNodeShare), pct(x.offDeviceShare), x.interNodeMB.toFixed(3), x.interNodeMBDedup.toFixed(3),
        x.pairwiseMsProjected.toFixed(3), x.pairwiseMsProjectedDedup.toFixed(3), x.hierarchicalMsProjectedDedup.toFixed(3), x.deviceLoadMaxOverMean.toFixed(2), formatSeconds(x.seconds)]),
    ),
    '',
    ...VARIANTS.map((v) => `- \`${v.name}\`: ${v.doc}`),
    '',
  ].join('\n');
}
