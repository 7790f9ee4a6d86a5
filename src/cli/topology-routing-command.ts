// `moe experiment topology-routing`: options parsed here, the experiment in src/experiments/topology-routing.ts.

import { rejectUnknown, type ParsedArgs } from './args.js';
import { runTopologyRouting } from '../experiments/topology-routing.js';
import { int, one, quickFlag } from './variant-experiments.js';

export const TOPOLOGY_ROUTING_HELP = `
  topology-routing [--quick] [--out DIR] [--steps N] [--seed S]
      Device-limited routing and the topology loss (docs/routers.md): a byte-level MoE LM (E = 16,
      k = 4) trains N steps on 4 UDHR languages with plain top-4, at most M = 2 and M = 1 of 4
      devices per token, the topology loss at weights 0.1 and 1, and M = 2 with the loss, with
      batches mixed over languages and sharded (one language per device); validation bits/byte against
      the bytes its recorded routing sends over slow (inter-node) links and the predicted exchange
      time of moe simulate ep on 2 nodes of 2 H100s. Default N = 200 (--quick: 30).
      Default --out docs/results/topology-routing[-quick].
`;

/** Runs the experiment; null when `name` is not topology-routing. */
export async function topologyRoutingExperiment(name: string, args: ParsedArgs, command: string): Promise<number | null> {
  if (name !== 'topology-routing') return null;
  rejectUnknown(args, ['quick', 'out', 'steps', 'seed', 'help'], `experiment ${name}`);
  const quick = quickFlag(args);
  const out = one(args, 'out');
  const steps = int(args, 'steps', 1);
  const seed = int(args, 'seed', 0);
  const r = await runTopologyRouting({
    quick, command, ...(out !== undefined ? { out } : {}), ...(steps !== undefined ? { steps } : {}), ...(seed !== undefined ? { seed } : {}),
  });
  console.log(`topology-routing: ${r.runs.length} runs in ${r.seconds.toFixed(1)} s; ${r.out}/results.md`);
  return 0;
}
