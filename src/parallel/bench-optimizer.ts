// `moe bench ep-optimizer`: where a training run's optimizer state lives and what its steps cost,
// with one process and with the experts' state on N workers (sharded-optimizer.ts): bytes of
// optimizer state on the main thread and on each worker, ms per training step and per optimizer
// step, for a run configuration (default configs/udhr-lm-moe.json).

import { readFileSync } from 'node:fs';
import { validateRun } from '../config/run.js';
import { buildRunModel, makeOptimizer, makeTask } from '../train/run.js';
import { clipGradNorm, type Optimizer } from '../train/optim.js';
import { attachExpertParallel, type ExpertParallel } from './expert-parallel.js';
import { ExpertShardedOptimizer, optimizerStateBytes } from './sharded-optimizer.js';

export interface OptimizerBenchRow {
  workers: number;
  /** Where the experts' optimizer state lives. */
  experts: 'main thread' | 'workers';
  parameters: number;
  expertParameters: number;
  mainStateBytes: number;
  workerStateBytes: number[];
  stepMs: number;
  optimizerStepMs: number;
}

export interface OptimizerBenchOptions {
  configPath: string;
  workers: number[];
  /** Timed steps after one warm-up step (medians reported). */
  steps: number;
  log?: (line: string) => void;
}

const median = (a: number[]): number => a.slice().sort((x, y) => x - y)[a.length >> 1]!;

export async function benchExpertOptimizer(o: OptimizerBenchOptions): Promise<OptimizerBenchRow[]> {
  const config = validateRun(JSON.parse(readFileSync(o.configPath, 'utf8')) as unknown);
  const rows: OptimizerBenchRow[] = [];
  const variants: Array<[number, 'main thread' | 'workers']> = o.workers.flatMap((N) => (N === 1 ? [[1, 'main thread']] : [[N, 'main thread'], [N, 'workers']]) as Array<[number, 'main thread' | 'workers']>);
  for (const [N, where] of variants) {
    const { model, task: kind } = buildRunModel(config);
    const { task } = await makeTask(config, model, kind);
    let opt: Optimizer = makeOptimizer(model, config.optim);
    let ep: ExpertParallel | null = null;
    try {
      if (N > 1) {
        ep = attachExpertParallel(model, { workers: N });
        if (where === 'workers') opt = new ExpertShardedOptimizer(opt, ep);
      }
      const params = model.parameters();
      const batches = task.batches(0)[Symbol.iterator]();
      const step: number[] = [];
      const optMs: number[] = [];
      for (let i = 0; i <= o.steps; i++) {
        const next = batches.next();
        if (next.done) throw new Error(`bench ep-optimizer: the configuration has ${i} batches per epoch, fewer than --steps ${o.steps} + 1`);
        const t0 = performance.now();
        const out = task.step(next.value);
        out.loss.backward();
        if (config.optim.clipNorm) clipGradNorm(params, config.optim.clipNorm);
        const t1 = performance.now();
        opt.step();
        opt.zeroGrad();
        const t2 = performance.now();
        if (i > 0) { step.push(t2 - t0); optMs.push(t2 - t1); }
      }
      const sharded = opt instanceof ExpertShardedOptimizer ? opt : null;
      if (sharded) sharded.state(); // gathers, and records each worker's bytes
      const row: OptimizerBenchRow = {
        workers: N, experts: where, parameters: model.numParameters(),
        expertParameters: model.namedParameters().filter(([n]) => n.includes('.experts.')).reduce((a, [, p]) => a + p.size, 0),
        mainStateBytes: sharded ? sharded.mainStateBytes() : optimizerStateBytes(opt.state()),
        workerStateBytes: sharded ? sharded.workerStateBytes : [],
        stepMs: median(step), optimizerStepMs: median(optMs),
      };
      rows.push(row);
      o.log?.(`N = ${N}, experts' state on the ${where}: step ${row.stepMs.toFixed(0)} ms, optimizer ${row.optimizerStepMs.toFixed(0)} ms`);
    } finally {
      await ep?.close();
    }
  }
  return rows;
}
