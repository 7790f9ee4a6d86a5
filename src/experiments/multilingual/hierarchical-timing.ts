// Measured inference time per token of flat and hierarchical routing: the router alone and the
// whole byte LM, for a batch forward and for KV-cached decoding; cases interleaved round by round
// so that load on a shared machine hits both alike; medians after warm-up, with the load average.

import { cpus, loadavg } from 'node:os';
import { ByteLM, generate, type LMConfig } from '../../models/lm.js';
import { Tensor } from '../../tensor/tensor.js';
import { Rng } from '../../tensor/rng.js';
import { noGrad } from '../../tensor/autograd.js';
import { getBackend } from '../../kernels/registry.js';

export interface TimingRequest {
  /** Variant name -> model config (random weights, seed 0: timing does not depend on training). */
  models: Record<string, Partial<LMConfig>>;
  batchSize: number;
  seqLen: number;
  /** Bytes generated per decode measurement (after a 16-byte prompt). */
  decodeTokens: number;
  rounds: number;
  warmupRounds: number;
}

export interface CaseTiming {
  /** Microseconds per token: median and minimum over the measured rounds. */
  median: number;
  min: number;
  samples: number[];
}

export interface TimingResult {
  /** variant -> case -> timing; cases routerBatch, routerDecode (one token), modelBatch, modelDecode. */
  timings: Record<string, Record<string, CaseTiming>>;
  loadavgBefore: number[];
  loadavgAfter: number[];
  backend: string;
  cpu: string;
  cpus: number;
  request: TimingRequest;
}

function stat(xs: number[]): CaseTiming {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, samples: xs };
}

/** Runs every (case, variant) once per round, alternating which variant goes first. */
export function measureRouting(req: TimingRequest): TimingResult {
  const loadavgBefore = loadavg();
  const names = Object.keys(req.models);
  if (names.length === 0) throw new Error('measureRouting: no models');
  const { batchSize: B, seqLen: T } = req;
  const rng = new Rng(11);
  const ids = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) ids[i] = 32 + rng.int(95);
  const idsT = new Tensor(ids, [B, T]);
  const prompt = Uint8Array.from(ids.subarray(0, 16));
  const built = names.map((n) => {
    const model = new ByteLM({ ...req.models[n]!, maxSeqLen: Math.max(T, 16 + req.decodeTokens) }, 0).eval();
    const d = model.config.dModel;
    const router = model.moeLayers()[0]?.router;
    if (!router) throw new Error(`measureRouting: model '${n}' has no MoE block`);
    const xb = Tensor.empty([B * T, d]);
    rng.fillUniform(xb.data as Float32Array, -1, 1);
    const x1 = Tensor.empty([1, d]);
    rng.fillUniform(x1.data as Float32Array, -1, 1);
    return { n, cases: {
      routerBatch: { tokens: B * T, reps: 5, fn: () => { router.route(xb); } },
      routerDecode: { tokens: 1, reps: 200, fn: () => { router.route(x1); } },
      modelBatch: { tokens: B * T, reps: 1, fn: () => { model.forward(idsT); } },
      modelDecode: { tokens: req.decodeTokens, reps: 1, fn: () => { generate(model, prompt, { maxNewTokens: req.decodeTokens }); } },
    } };
  });
  const times: Record<string, Record<string, number[]>> = Object.fromEntries(names.map((n) => [n, {}]));
  const caseNames = Object.keys(built[0]!.cases) as Array<keyof (typeof built)[0]['cases']>;
  for (let round = 0; round < req.warmupRounds + req.rounds; round++) {
    for (const c of caseNames) {
      const order = round % 2 === 0 ? built : [...built].reverse();
      for (const b of order) {
        const { tokens, reps, fn } = b.cases[c];
        const t0 = performance.now();
        noGrad(() => { for (let i = 0; i < reps; i++) fn(); });
        const us = ((performance.now() - t0) * 1000) / reps / tokens;
        if (round >= req.warmupRounds) (times[b.n]![c] ??= []).push(us);
      }
    }
  }
  const timings = Object.fromEntries(names.map((n) => [n, Object.fromEntries(caseNames.map((c) => [c, stat(times[n]![c]!)]))]));
  return { timings, loadavgBefore, loadavgAfter: loadavg(), backend: getBackend().name, cpu: cpus()[0]?.model ?? 'unknown', cpus: cpus().length, request: req };
}
