// `moe bench soft-moe`: one training step (forward, backward, Adam) of the paper's Soft MoE patch
// classifier at n = 16 .. 512 experts with the total parameters fixed (h = floor(784 / n)),
// medians after warm-up with the sizes interleaved, and each time's ratio to the first n; both the
// paper's slot-side order (the code path before the reassociation) and what the layer picks.

import { Rng, Tensor, ops, getBackend, profileKernels, train, models, type KernelProfile } from '../src/index.js';
import { formatTable, median } from './timing.js';

export interface SoftMoECase {
  numExperts: number;
  /** The layer's formulation: 'slots' (the paper's order, the old code path) or 'auto' (what forward picks). */
  formulation: 'slots' | 'tokens' | 'auto';
  /** What 'auto' picked at this n. */
  ran: 'slots' | 'tokens';
  hidden: number;
  parameters: number;
  /** Median ms of one forward + backward + optimizer step. */
  stepMs: number;
  runs: number;
  /** stepMs over the stepMs of the first n with the same formulation. */
  ratio: number;
  /** Time per kernel in one profiled step (ms). */
  kernels: KernelProfile;
}

export interface SoftMoEReport {
  backend: string;
  batch: number;
  tokens: number;
  tokenDim: number;
  cases: SoftMoECase[];
}

interface Setup {
  n: number;
  formulation: 'slots' | 'tokens' | 'auto';
  model: models.SoftMoEClassifier;
  opt: train.Adam;
  step: () => void;
}

export function benchSoftMoE(opts: {
  experts?: number[]; formulations?: ('slots' | 'tokens' | 'auto')[]; batch?: number; rounds?: number; log?: (l: string) => void;
} = {}): SoftMoEReport {
  const ns = opts.experts ?? [16, 64, 256, 512];
  const B = opts.batch ?? 256;
  const rounds = opts.rounds ?? 9;
  const log = opts.log ?? (() => {});
  const rng = new Rng(0);
  // pixels in [0, 1) and random labels: the time of a step does not depend on what the data mean
  const images = Tensor.empty([B, 784]);
  const px = images.data as Float32Array;
  for (let i = 0; i < px.length; i++) px[i] = rng.next();
  const labels = new Int32Array(B);
  for (let i = 0; i < B; i++) labels[i] = Math.floor(rng.next() * 10);

  const formulations = opts.formulations ?? ['slots', 'auto'];
  const setups: Setup[] = ns.flatMap((n) => formulations.map((formulation) => {
    // the paper's grid (docs/results/soft-moe-paper.md): 4 patches of 14x14, one slot per expert
    const model = new models.SoftMoEClassifier({ numExperts: n, hidden: null, patch: 14, slotsPerExpert: 1, normalize: true, imageSize: 28, classes: 10 }, 1);
    model.moe.formulation = formulation;
    const opt = new train.Adam(model.namedParameters(), { lr: 1e-3 });
    const step = (): void => {
      const loss = ops.crossEntropy(model.forward(images).logits, labels);
      loss.backward();
      opt.step();
      opt.zeroGrad();
    };
    return { n, formulation, model, opt, step };
  }));

  // warm-up: one step each, then rounds with every size once per round, so that drift in the
  // shared machine's load spreads over all sizes alike
  for (const s of setups) s.step();
  const times = setups.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    setups.forEach((s, i) => {
      const t0 = performance.now();
      s.step();
      times[i]!.push(performance.now() - t0);
    });
  }
  const cases: SoftMoECase[] = setups.map((s, i) => {
    const { profile } = profileKernels(() => s.step());
    return {
      numExperts: s.n, formulation: s.formulation, ran: s.model.moe.chooseFormulation(s.model.tokens), hidden: s.model.hidden, parameters: s.model.numParameters(),
      stepMs: median(times[i]!), runs: times[i]!.length, ratio: 0, kernels: profile,
    };
  });
  for (const c of cases) {
    const base = cases.find((b) => b.formulation === c.formulation)!;
    c.ratio = c.stepMs / base.stepMs;
    log(`n=${c.numExperts} ${c.formulation} (${c.ran}): ${c.stepMs.toFixed(1)} ms/step (${c.ratio.toFixed(2)}x n=${base.numExperts})`);
  }
  const first = setups[0]!.model;
  return { backend: getBackend().name, batch: B, tokens: first.tokens, tokenDim: first.tokenDim, cases };
}

export function formatSoftMoEReport(r: SoftMoEReport): string {
  const base = r.cases[0]!.numExperts;
  const rows = r.cases.map((c) => [String(c.numExperts), c.formulation === 'auto' ? `auto: ${c.ran}` : c.formulation === 'slots' ? 'slots (old)' : 'tokens', String(c.hidden), String(c.parameters),
    c.stepMs.toFixed(1), `${c.ratio.toFixed(2)}x`, String(c.runs)]);
  const top = (c: SoftMoECase): string => {
    const total = Object.values(c.kernels).reduce((s, p) => s + p.ms, 0);
    return Object.entries(c.kernels).sort((a, b) => b[1].ms - a[1].ms).slice(0, 6)
      .map(([n, p]) => `${n} ${p.ms.toFixed(1)} (${p.calls})`).join(', ') + `; kernels total ${total.toFixed(1)} ms`;
  };
  return [
    `Soft MoE classifier training step (forward + backward + Adam), backend ${r.backend}: batch ${r.batch}, `
      + `${r.tokens} tokens of ${r.tokenDim}, one slot per expert, h = floor(784 / n), float32`,
    formatTable(['n', 'formulation', 'h', 'params', 'ms/step', `vs n=${base}, same formulation`, 'runs'], rows),
    '',
    'kernel ms in one profiled step (calls):',
    ...r.cases.map((c) => `  n=${c.numExperts} ${c.formulation}: ${top(c)}`),
  ].join('\n');
}
