// The inference cost model bench: the least-squares fit recovers known coefficients, falls back to
// one term when the other would be negative, and the bench's bytes and expert counts follow the
// routing (a tiny model, two batch sizes; no timing is asserted).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fitCostModel, fitRoofline, benchCostModel } from '../bench/cost-model.js';
import { presetConfig, randomHFTensors } from '../src/models/moe-decoder-create.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { decoderConfigToHF } from '../src/models/moe-decoder-config.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';

test('fitCostModel recovers t = bytes / bw + flops / tp exactly from exact points', () => {
  const msPerByte = 1 / 20e6; // 20 GB/s
  const msPerFlop = 1 / 50e6; // 50 GFLOP/s
  const pts = [[24e6, 4e7], [37e6, 9e7], [59e6, 1.7e8], [89e6, 3.5e8], [118e6, 6.9e8]].map(([bytes, flops]) => ({
    bytes: bytes!, flops: flops!, ms: bytes! * msPerByte + flops! * msPerFlop,
  }));
  const f = fitCostModel(pts);
  assert.ok(Math.abs(f.msPerByte / msPerByte - 1) < 1e-9, `msPerByte ${f.msPerByte}`);
  assert.ok(Math.abs(f.msPerFlop / msPerFlop - 1) < 1e-9, `msPerFlop ${f.msPerFlop}`);
});

test('fitCostModel keeps both terms non-negative: time that falls with FLOPs is fitted by bytes alone', () => {
  // ms = bytes - 0.5 flops exactly: the unconstrained fit would give a negative FLOP term
  const pts = [{ bytes: 10, flops: 2, ms: 9 }, { bytes: 20, flops: 4, ms: 18 }, { bytes: 30, flops: 2, ms: 29 }];
  const f = fitCostModel(pts);
  assert.equal(f.msPerFlop, 0);
  // bytes alone: sum(bytes * ms) / sum(bytes^2) = 1320 / 1400
  assert.ok(Math.abs(f.msPerByte - 1320 / 1400) < 1e-12, `msPerByte ${f.msPerByte}`);
});

test('benchCostModel on a tiny model: distinct experts, bytes and FLOPs grow with the batch', () => {
  const c = presetConfig('olmoe', 'tiny');
  const model = fromHF(decoderConfigToHF(c), new MemoryTensorSource(randomHFTensors(c, 1)));
  const r = benchCostModel(model, { batches: [1, 4], promptTokens: 4, steps: 3 });
  assert.equal(r.points.length, 2);
  const [one, four] = r.points as [typeof r.points[0], typeof r.points[0]];
  assert.equal(one.distinctExperts, c.topK, 'one token uses exactly k experts per layer');
  assert.ok(four.distinctExperts >= c.topK && four.distinctExperts <= Math.min(4 * c.topK, c.numExperts));
  assert.ok(four.bytesPerStep > one.bytesPerStep && four.flopsPerStep > 3.9 * one.flopsPerStep);
  for (const p of r.points) assert.ok(Number.isFinite(p.predictedMs) && p.stepMs > 0);
  assert.ok(r.fit.bandwidthGBs > 0 && r.fit.throughputGflops > 0);
  assert.equal(model.onRouting, undefined, 'the routing hook is restored');
});

test('fitRoofline recovers t = fixed + max(bytes / bw, flops / tp) from exact points on both sides of the ridge', () => {
  const msPerByte = 1 / 16e6; // 16 GB/s
  const msPerFlop = 1 / 80e6; // 80 GFLOP/s
  const fixed = 3;
  // bytes-bound at small batches, FLOP-bound at large ones (the ridge in between)
  const pts = [[180e6, 3e8], [300e6, 7e8], [500e6, 1.4e9], [760e6, 2.7e9], [1030e6, 5.4e9]].map(([bytes, flops]) => ({
    bytes: bytes!, flops: flops!, ms: fixed + Math.max(bytes! * msPerByte, flops! * msPerFlop),
  }));
  const f = fitRoofline(pts);
  // the grid is 1% apart: the fit lands within a grid step of the truth
  assert.ok(Math.abs(f.msPerByte / msPerByte - 1) < 0.011, `bandwidth ${1 / (f.msPerByte * 1e6)} GB/s`);
  assert.ok(Math.abs(f.msPerFlop / msPerFlop - 1) < 0.011, `throughput ${1 / (f.msPerFlop * 1e6)} GFLOP/s`);
  assert.ok(Math.abs(f.fixedMs - fixed) < 1, `fixed ${f.fixedMs} ms`);
  // and the linear sum cannot fit the same points as well
  const lin = fitCostModel(pts);
  const linErr = pts.reduce((s, p) => s + ((lin.msPerByte * p.bytes + lin.msPerFlop * p.flops - p.ms) / p.ms) ** 2, 0);
  assert.ok(f.sqRelError < linErr, `roofline ${f.sqRelError} vs linear ${linErr}`);
});
