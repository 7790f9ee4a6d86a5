// How the all-to-all's time and bytes grow with tokens T and devices N_d, per algorithm, under the
// simulator's cost (`moe simulate ep --scaling`): the seed's claim that communication grows as
// T/N_d log N_d, tested on uniform top-k routing. The normalised columns say which shape fits:
// time / (T/N_d) is flat for an algorithm of that shape, time / (T/N_d log2 N_d) for the log one.

import { ALGORITHMS, exchangeCost, uniformBytes, type Algorithm, type Topology } from './simulator.js';

export interface ScalingRow {
  algorithm: Algorithm;
  tokens: number;
  devices: number;
  /** Seconds of one exchange (dispatch or combine). */
  seconds: number;
  rounds: number;
  /** Bytes a device puts on links in one exchange, forwarding included (carried bytes / N_d). */
  bytesPerDevice: number;
  /** Of which on inter-node links. */
  interBytesPerDevice: number;
}

export interface ScalingOptions {
  tokens: number[];
  devices: number[];
  k: number;
  /** Bytes of one token row (d * bytes per value). */
  rowBytes: number;
}

export function scalingTable(topo: Topology, o: ScalingOptions): ScalingRow[] {
  const rows: ScalingRow[] = [];
  for (const a of ALGORITHMS) {
    for (const D of o.devices) {
      if (!Number.isInteger(D) || D < 2) throw new Error(`scaling: devices ${D} must be an integer >= 2`);
      for (const T of o.tokens) {
        const c = exchangeCost(uniformBytes(T, D, o.k, o.rowBytes), { ...topo, devices: D }, a);
        rows.push({
          algorithm: a, tokens: T, devices: D, seconds: c.seconds, rounds: c.rounds,
          bytesPerDevice: (c.intraBytes + c.interBytes) / D, interBytesPerDevice: c.interBytes / D,
        });
      }
    }
  }
  return rows;
}

export function formatScaling(topo: Topology, o: ScalingOptions, rows: ScalingRow[]): string {
  const lines = [
    `${topo.name}: ${topo.devicesPerNode} devices per node, intra ${topo.intra.bandwidthGBs} GB/s ${topo.intra.latencyUs} us, inter ${topo.inter.bandwidthGBs} GB/s ${topo.inter.latencyUs} us; `
      + `uniform top-${o.k} routing, ${o.rowBytes} bytes per row, one exchange`,
    'algorithm     T        N_d  rounds  us/exchange  MB/device  inter MB/device  us/(T/N_d)  us/(T/N_d log2 N_d)',
  ];
  for (const r of rows) {
    const perShard = r.tokens / r.devices;
    const us = r.seconds * 1e6;
    lines.push(`${r.algorithm.padEnd(14)}${String(r.tokens).padEnd(9)}${String(r.devices).padStart(3)}${String(r.rounds).padStart(8)}`
      + `${us.toFixed(1).padStart(13)}${(r.bytesPerDevice / 1e6).toFixed(3).padStart(11)}${(r.interBytesPerDevice / 1e6).toFixed(3).padStart(17)}`
      + `${(us / perShard).toFixed(4).padStart(12)}${(us / (perShard * Math.log2(r.devices))).toFixed(4).padStart(21)}`);
  }
  return lines.join('\n');
}
