// `moe bench cost-model`: fits time per decode step = bytes / bandwidth + FLOPs / throughput to
// steps measured at several batch sizes (bench/cost-model.ts), and prints the error per point.

import { intFlag, rejectUnknown, type ParsedArgs } from '../src/cli/args.js';
import { loadLM } from '../src/models/load-lm.js';
import { dtypeFlag } from '../src/cli/generate-command.js';
import { benchCostModel, formatCostModelReport } from './cost-model.js';

export const BENCH_COST_MODEL_HELP = `moe bench cost-model --model DIR|FILE.gguf [--batch 1,2,4,8,16] [--prompt-tokens 32] [--steps 12]
                      [--dtype f32|f16|bf16|q8_0|q4_0] [--seed S] [--json]

The inference cost model of the seed document, time per step = bytes loaded / bandwidth + FLOPs /
throughput, fitted (least squares, both terms >= 0) to decode steps of the model measured on this
machine: for each batch size B, B sequences are prefilled with random prompts, then --steps decode
steps of all B run together (medians after a warm-up step). Bytes per step count the non-expert
weights, each expert that any of the B tokens chose (once: tokens routed to the same expert share
its grouped GEMM), the LM head and the KV caches read; FLOPs are 2 per weight a token uses plus
attention. Prints the fitted bandwidth and throughput next to this run's bandwidth probe, and per
batch size the measured and predicted time and the error. --json prints the whole report.`;

export async function benchCostModelCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['model', 'batch', 'prompt-tokens', 'steps', 'dtype', 'seed', 'json', 'help'], 'bench cost-model');
  const path = args.flags.get('model')?.[0];
  if (!path) throw new Error('bench cost-model: --model DIR|FILE.gguf is required');
  const int = (key: string, min: number): number | undefined => intFlag(args, key, min, 'bench cost-model');
  const rawBatch = args.flags.get('batch')?.[0];
  const batches = rawBatch?.split(',').map((b) => {
    const v = Number(b);
    if (!Number.isInteger(v) || v < 1 || v > 256) throw new Error(`bench cost-model: --batch ${rawBatch}: '${b}' is not an integer in [1, 256]`);
    return v;
  });
  if (batches && batches.length < 2) throw new Error('bench cost-model: --batch needs at least two batch sizes to fit two terms');
  const promptTokens = int('prompt-tokens', 1);
  const steps = int('steps', 2);
  const seed = int('seed', 0);
  const log = (l: string): void => { process.stderr.write(`${l}\n`); };
  const lm = await loadLM(path, dtypeFlag(args, 'bench cost-model'));
  log(`loaded ${path} (${lm.model.config.family}, ${lm.dtype})`);
  const report = benchCostModel(lm.model, {
    ...(batches ? { batches } : {}),
    ...(promptTokens !== undefined ? { promptTokens } : {}),
    ...(steps !== undefined ? { steps } : {}),
    ...(seed !== undefined ? { seed } : {}),
    log,
  });
  console.log(args.flags.has('json') ? JSON.stringify(report) : formatCostModelReport(report));
  return 0;
}
