// `moe experiment continual | straight-through | depth | depth-causal | attention-moe`: the MoE-variant experiments of issue 15, dispatched from
// experiment-commands.ts (parsing here, the experiments in src/experiments/).

import { rejectUnknown, type ParsedArgs } from './args.js';
import { runContinual } from '../experiments/continual.js';
import { runStraightThrough } from '../experiments/straight-through.js';
import { runDepth } from '../experiments/depth.js';
import { runAttentionMoE } from '../experiments/attention-moe.js';
import { runDepthCausal } from '../experiments/depth-causal.js';

export const VARIANT_EXPERIMENTS = ['continual', 'straight-through', 'depth', 'depth-causal', 'attention-moe'] as const;

export const VARIANT_EXPERIMENT_HELP = `
  continual [--quick] [--out DIR] [--seed S] [--steps N]
      Continual MoE (docs/variants.md): a byte-level MoE LM trains N steps on UDHR languages
      eng, fra, deu, spa, then N steps on rus, ell, arb, hin; with no growth, with 4 experts added
      at the switch (trainable, or old ones frozen), and with 8 experts from the start. Forgetting
      of the first group, learning of the second, share of routing to the new experts.
      Default N = 150 (--quick: 60, batch 8). Default --out docs/results/continual[-quick].

  straight-through [--quick] [--out DIR] [--steps N] [--seeds S]
      Trains a k = 1 byte-level MoE LM on UDHR eng, fra, deu, spa for N steps with the gate-only
      gradient (topk), the straight-through estimator (plain and Gumbel) and the differentiable
      top-k; validation bits/byte and training loss, seeds 0..S-1 (default N = 150, S = 2; --quick: N = 40).
      Default --out docs/results/straight-through[-quick].

  depth [--quick] [--out DIR] [--steps N] [--every M] [--capacities 1,0.5,0.25,0.125]
      Mixture-of-Depths: the byte-level MoE LM (4 blocks, every other one routed by depth) trained
      N steps at capacities 1, 0.5, 0.25, 0.125: forward FLOPs per token against validation
      bits/byte, and the share of word starts, word-internal bytes and spaces the routed blocks run.
      --every M: route every M-th block (default 2; 1: every block).
      Default N = 200 (--quick: 50). Default --out docs/results/depth[-quick].

  depth-causal [--out DIR] [--steps N]
      Mixture-of-Depths decoded causally: the depth byte LM (blocks 2 and 4 at capacity 0.5) trained N
      steps with and without the predictor of the top-c choice; validation bits/byte under the
      teacher-forced top-c selection and under the predictor's causal one (what KV-cached generation
      does). Default N = 200, --out docs/results/depth-causal.

  attention-moe [--quick] [--out DIR] [--steps N] [--seeds S]
      SwitchHead attention-MoE against dense multi-head attention at nearly equal parameters, and a
      narrow attention at SwitchHead's FLOPs: a byte-level LM (2 blocks, dense MLPs) on UDHR eng,
      fra, deu, spa for N steps, seeds 0..S-1; validation bits/byte and the share of attention FLOPs
      per token saved (default N = 200, S = 2; --quick: N = 40, S = 1).
      Default --out docs/results/attention-moe[-quick].
`;

/** The value of an option given at most once (shared with the other experiment commands). */
export function one(args: ParsedArgs, key: string): string | undefined {
  const v = args.flags.get(key);
  if (v && v.length > 1) throw new Error(`experiment: option --${key} given ${v.length} times`);
  return v?.[0];
}

export function int(args: ParsedArgs, key: string, min: number): number | undefined {
  const v = one(args, key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new Error(`experiment: option --${key}: '${v}' is not an integer >= ${min}`);
  return n;
}

/** --quick, which takes no value. */
export function quickFlag(args: ParsedArgs): boolean {
  const q = one(args, 'quick');
  if (q !== undefined && !['true', '1', 'yes', ''].includes(q)) throw new Error(`experiment: option --quick takes no value (got '${q}')`);
  return q !== undefined;
}

/** Runs a variant experiment; null when `name` is not one of them. */
export async function variantExperiment(name: string, args: ParsedArgs, command: string): Promise<number | null> {
  if (!(VARIANT_EXPERIMENTS as readonly string[]).includes(name)) return null;
  rejectUnknown(args, ['quick', 'out', 'steps', 'help', ...(name === 'continual' ? ['seed'] : name === 'straight-through' || name === 'attention-moe' ? ['seeds'] : name === 'depth-causal' ? [] : ['every', 'capacities'])], `experiment ${name}`);
  const out = one(args, 'out');
  const steps = int(args, 'steps', 1);
  const quick = quickFlag(args);
  if (name === 'depth') {
    const every = int(args, 'every', 1);
    const capList = one(args, 'capacities');
    const capacities = capList?.split(',').map((c) => {
      const v = Number(c);
      if (c.trim() === '' || !(v > 0 && v <= 1)) throw new Error(`experiment depth: --capacities: '${c}' in '${capList}' is not a number in (0, 1]`);
      return v;
    });
    const r = await runDepth({
      quick, command, ...(out !== undefined ? { out } : {}), ...(steps !== undefined ? { steps } : {}),
      ...(every !== undefined ? { depthEvery: every } : {}), ...(capacities ? { capacities } : {}),
    });
    console.log(`depth: ${r.runs.length} capacities in ${r.seconds.toFixed(1)} s; ${r.out}/results.md`);
    return 0;
  }
  if (name === 'depth-causal') {
    if (quick) throw new Error('experiment depth-causal: --quick is not an option (use --steps N)');
    const r = await runDepthCausal({ command, ...(out !== undefined ? { out } : {}), ...(steps !== undefined ? { steps } : {}) });
    console.log(`depth-causal: ${r.rows.length} evaluations in ${r.seconds.toFixed(1)} s; ${r.out}/results.md`);
    return 0;
  }
  if (name === 'attention-moe' || name === 'straight-through') {
    const seeds = int(args, 'seeds', 1);
    const run = name === 'attention-moe' ? runAttentionMoE : runStraightThrough;
    const r = await run({
      quick, command, ...(out !== undefined ? { out } : {}), ...(steps !== undefined ? { steps } : {}), ...(seeds !== undefined ? { seeds } : {}),
    });
    console.log(`${name}: ${r.runs.length} runs in ${r.seconds.toFixed(1)} s; ${r.out}/results.md`);
    return 0;
  }
  const seed = int(args, 'seed', 0);
  const r = await runContinual({
    quick, command, ...(out !== undefined ? { out } : {}), ...(seed !== undefined ? { seed } : {}), ...(steps !== undefined ? { steps } : {}),
  });
  console.log(`continual: ${r.conditions.length} conditions in ${r.seconds.toFixed(1)} s; ${r.out}/results.md`);
  return 0;
}
