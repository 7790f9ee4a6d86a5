// Where experts and tokens live when a layer is spread over devices: the placement the
// device-limited router and the topology loss assume. It is the expert-parallel layout of
// src/parallel/layout.ts (experts split contiguously over N devices, tokens by position into N
// contiguous shards, i.e. a batch slice each), written again here because moe/ sits below
// parallel/ (test/topology-routing.test.ts checks that the two agree).

import { checkInt, checkRange } from '../util.js';

/** [parts + 1] boundaries of n items split into `parts` contiguous runs as even as possible. */
export function contiguousSplit(n: number, parts: number): Int32Array {
  const out = new Int32Array(parts + 1);
  for (let p = 0; p <= parts; p++) out[p] = Math.floor((p * n) / parts);
  return out;
}

/** The part of each of n items under contiguousSplit(n, parts) [n]. */
export function partOfEach(n: number, parts: number): Int32Array {
  const b = contiguousSplit(n, parts);
  const out = new Int32Array(n);
  for (let p = 0; p < parts; p++) out.fill(p, b[p]!, b[p + 1]!);
  return out;
}

export interface DevicePlacementOptions {
  /** Devices N the experts are split over (default 1). */
  devices?: number;
  /** Devices per node (default N: one node). Must divide N. */
  devicesPerNode?: number;
  /** Cost of sending a token to an expert on another device of the same node (default 0.1). */
  intraNodeCost?: number;
  /** Cost of sending a token to an expert on another node (default 1). */
  interNodeCost?: number;
}

/** A validated placement: experts per device and the cost of each (source device, expert) pair. */
export class DevicePlacement {
  readonly devices: number;
  readonly devicesPerNode: number;
  readonly intraNodeCost: number;
  readonly interNodeCost: number;
  /** Device of each expert [E]. */
  readonly deviceOfExpert: Int32Array;
  /** First expert of each device [N + 1]. */
  readonly expertStart: Int32Array;

  constructor(owner: string, readonly numExperts: number, o: DevicePlacementOptions) {
    this.devices = o.devices ?? 1;
    checkInt(owner, 'devices', this.devices, 1, numExperts);
    this.devicesPerNode = o.devicesPerNode ?? this.devices;
    checkInt(owner, 'devicesPerNode', this.devicesPerNode, 1, this.devices);
    if (this.devices % this.devicesPerNode !== 0) throw new Error(`${owner}: devicesPerNode = ${this.devicesPerNode} must divide devices = ${this.devices}`);
    this.intraNodeCost = o.intraNodeCost ?? 0.1;
    checkRange(owner, 'intraNodeCost', this.intraNodeCost, 0, Number.MAX_VALUE);
    this.interNodeCost = o.interNodeCost ?? 1;
    checkRange(owner, 'interNodeCost', this.interNodeCost, 0, Number.MAX_VALUE);
    this.expertStart = contiguousSplit(numExperts, this.devices);
    this.deviceOfExpert = partOfEach(numExperts, this.devices);
  }

  /** Experts on the smallest devices first: the most a token restricted to m devices can surely choose. */
  minExpertsOn(m: number): number {
    const sizes = Array.from({ length: this.devices }, (_, r) => this.expertStart[r + 1]! - this.expertStart[r]!).sort((a, b) => a - b);
    return sizes.slice(0, m).reduce((a, b) => a + b, 0);
  }

  /** Link cost from device a to device b: 0 on the same device, else intra- or inter-node. */
  linkCost(a: number, b: number): number {
    if (a === b) return 0;
    return Math.floor(a / this.devicesPerNode) === Math.floor(b / this.devicesPerNode) ? this.intraNodeCost : this.interNodeCost;
  }

  /** Source device of each of T tokens [T] (contiguous shards by position). */
  sourceDevices(T: number): Int32Array {
    return partOfEach(T, this.devices);
  }

  /** [T * E] cost of sending token t to expert e, row-major (the topology loss's weights). */
  costMatrix(T: number): Float64Array {
    const E = this.numExperts;
    const src = this.sourceDevices(T);
    const byDevice = Array.from({ length: this.devices }, (_, a) => Float64Array.from({ length: E }, (_, e) => this.linkCost(a, this.deviceOfExpert[e]!)));
    const out = new Float64Array(T * E);
    for (let t = 0; t < T; t++) out.set(byDevice[src[t]!]!, t * E);
    return out;
  }
}
