// `moe train` and `moe plot` (eval, inspect and generate live in model-commands.ts).

import { dirname, join, resolve } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { rejectUnknown, type ParsedArgs } from './args.js';
import { lineChart, writePlot } from '../report/plot.js';
import { fsErrorMessage } from '../io/atomic.js';
import { chooseSplit, readRunLog, splitRows, tornLineNote } from './plot-split.js';
import { loadRunConfig, describeRunConfig, validateRun, applySets } from '../config/run.js';
import { modelNames, modelSpec } from '../models/registry.js';
import { describe } from '../config/schema.js';
import { runTraining } from '../train/run.js';
import { resolveResume } from '../train/rundir.js';
import { readCheckpointConfig } from '../models/checkpoint.js';
import { weightsMismatchReason } from './model-commands.js';

export const TRAIN_HELP = `moe train --config FILE [--set section.key=value ...] [--out DIR] [--force]
moe train --resume RUN [--set section.key=value ...] [--out NEW_DIR]

Trains a model from a JSON config (see configs/). Unknown keys and wrong types are errors that
name the key. --set overrides one value (repeatable), e.g. --set optim.lr=3e-4 --set
model.numExperts=32. --out DIR chooses the run directory (default runs/<name>), which receives
config.json, metrics.jsonl (one JSON object per step and per evaluation) and the checkpoint
(model.safetensors, optimizer.safetensors, state.json) after every epoch. A new run refuses a
non-empty directory; --force replaces the run there. One process at a time writes a run
directory (a lock file, .moe.lock, names it).
--resume RUN continues a run from its checkpoint with its saved config (same losses as an
uninterrupted run; --set may change values, e.g. train.epochs; a warmup schedule keeps its
original length); its metrics.jsonl is first cut back to the checkpoint. With --out NEW_DIR the
run continues in NEW_DIR and RUN is left as it was.
A progress bar shows steps, ETA, loss, accuracy and router statistics on a terminal; plain lines
otherwise. Ends with the test accuracy.
Divergence: training stops (exit 2) at the step that fails, counted as in metrics.jsonl, when
the loss is not finite or above 10^4 times the first loss of this run (floored at 1), when the
gradients are not finite, or when a NaN reaches the forward pass; a loss above 100 times the
first warns once. optim.clipNorm = 0 or null: no clipping.

Models: ${modelNames().join(', ')} (moe train --help model.<name> lists a model's options).

`;

export function trainHelp(topic?: string): string {
  if (topic?.startsWith('model.')) {
    const spec = modelSpec(topic.slice('model.'.length));
    return `${spec.name}: ${spec.doc}\n${describe(spec.schema, 'model.').join('\n')}`;
  }
  return TRAIN_HELP + describeRunConfig();
}

/** 'loss 0.3264, accuracy 88.70%': accuracies as percentages. */
function formatMetrics(r: Record<string, number>): string {
  return Object.entries(r).map(([k, v]) => `${k} ${k.endsWith('accuracy') ? `${(100 * v).toFixed(2)}%` : v.toFixed(4)}`).join(', ');
}

/** Dotted keys whose values differ between two configs (for a refusal that says what would change). */
function differingKeys(a: unknown, b: unknown, prefix = ''): string[] {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObj(a) && isObj(b)) {
    return [...new Set([...Object.keys(a), ...Object.keys(b)])].flatMap((k) => differingKeys(a[k], b[k], `${prefix}${k}.`));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix.slice(0, -1)];
}

export async function trainCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['config', 'set', 'resume', 'out', 'force', 'help'], 'train');
  const sets = args.flags.get('set') ?? [];
  const resume = args.flags.get('resume')?.[0];
  const configPath = args.flags.get('config')?.[0];
  const outFlag = args.flags.get('out')?.[0];
  const force = args.flags.has('force');
  if (!configPath && !resume) throw new Error('train: --config FILE is required (or --resume DIR)');
  let config;
  let out: string;
  if (resume) {
    const where = resolveResume(resume);
    // only its config is needed here (not the weights: another writer may be replacing them, and
    // this run is refused by the lock below if so); runTraining reads the whole checkpoint under the lock
    const saved = readCheckpointConfig(where.checkpointDir) as Record<string, unknown>;
    const raw = structuredClone(saved);
    applySets(raw, sets);
    config = validateRun(raw);
    if (configPath) {
      // a resumed run keeps the configuration it was started with; a --config that says the same is harmless
      const given = loadRunConfig(configPath, sets);
      const diff = differingKeys(given, config);
      if (diff.length > 0) {
        throw new Error(`train: --config ${configPath} differs from the configuration of the run being resumed (${join(where.checkpointDir, 'config.json')}) in ${diff.slice(0, 8).join(', ')}${diff.length > 8 ? ', ...' : ''}. `
          + 'A resumed run keeps its configuration: drop --config and change values with --set (e.g. --set train.epochs=20), '
          + `or start a new run with --config ${configPath} --out NEW_DIR`);
      }
    }
    if (outFlag === undefined && where.runDir === null) {
      throw new Error(`train: --resume ${resume} is a checkpoint directory outside a run directory; give --out DIR for the continued run`);
    }
    out = outFlag ?? where.runDir!;
    if (force && resolve(out) === resolve(where.runDir ?? where.checkpointDir)) {
      throw new Error('train: --force starts a new run over an old one and --resume continues it: give one of them');
    }
  } else {
    config = loadRunConfig(configPath!, sets);
    out = outFlag ?? join('runs', config.name);
  }
  const log = (l: string) => process.stderr.write(`${l}\n`);
  let r: Awaited<ReturnType<typeof runTraining>>;
  try {
    r = await runTraining(config, { out, ...(resume ? { resume } : {}), ...(force ? { force } : {}), log });
  } catch (e) {
    // the library's mismatch message advises library callers ({ strict: false }); here the cause is a --set on resume
    if (!resume || !/^loadModelWeights: /.test((e as Error).message)) throw e;
    const why = weightsMismatchReason(e);
    const modelSets = sets.filter((s) => s.startsWith('model.'));
    throw new Error(`train: the checkpoint of ${resume} does not fit the model ${modelSets.length > 0 ? `after --set ${modelSets.join(' --set ')}` : 'its config.json describes'} (${why}). `
      + 'A resumed run keeps the shape of its model: drop those --set options, or start a new run with --config and --out', { cause: e });
  }
  if (r.nothingToDo) {
    console.log(`${config.name}: ${resume} has already finished its ${config.train.epochs} epochs (step ${r.state.step}); nothing to do. `
      + `To train longer: moe train --resume ${resume} --set train.epochs=${Math.max(config.train.epochs, r.state.epoch) + 1} (or more)`);
    return 0;
  }
  const test = r.test ? formatMetrics(r.test) : 'n/a';
  const steps = r.stepsRun === r.state.step ? `${r.state.step} steps` : `${r.stepsRun} steps (to step ${r.state.step})`;
  console.log(`${config.name}: ${steps} in ${r.seconds.toFixed(1)} s; test ${test}; checkpoint in ${out}`);
  return 0;
}

// eval, inspect and generate use a trained checkpoint: see model-commands.ts
export { evalCommand, inspectCommand, generateCommand, GENERATE_HELP, INSPECT_HELP } from './model-commands.js';

export const PLOT_HELP = `moe plot RUN_DIR... --out FILE [--metric loss] [--split val|test|train] [--title TEXT] [--log-y]

Draws one curve per run from each run's metrics.jsonl: the metric of evaluation records of the
split against the step (train: the per-step training values). Writes FILE.svg and FILE.png.
Without --split: val when every run has it, else train (a run with data.valFraction 0 logs no
val records), else test; a note on stderr says which.`;

/**
 * The base name (without extension) plot writes to, checked before any rendering: its folder must
 * exist, and it must not itself be a folder. A trailing .svg or .png is dropped (both are written).
 */
function plotOutBase(out: string): string {
  const base = out.replace(/\.(svg|png)$/i, '');
  if (out.endsWith('/') || (existsSync(base) && statSync(base).isDirectory())) {
    throw new Error(`plot: --out ${out} is a directory; give a file name without extension, e.g. --out ${join(out, 'loss')}`);
  }
  const dir = dirname(base);
  if (!existsSync(dir)) throw new Error(`plot: --out ${out}: the directory ${dir} does not exist (create it first)`);
  if (!statSync(dir).isDirectory()) throw new Error(`plot: --out ${out}: ${dir} is a file, not a directory`);
  return base;
}

export async function plotCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['out', 'metric', 'split', 'title', 'log-y', 'help'], 'plot');
  const runs = args.positional.slice(1);
  if (runs.length === 0) throw new Error('plot: give one or more run directories');
  const out = args.flags.get('out')?.[0];
  if (!out) throw new Error('plot: --out FILE is required (without extension)');
  const outBase = plotOutBase(out);
  const metric = args.flags.get('metric')?.[0] ?? 'loss';
  const logs = runs.map(readRunLog);
  for (const log of logs) {
    const torn = tornLineNote(log);
    if (torn) process.stderr.write(`${torn}\n`);
  }
  const { split, note } = chooseSplit(logs, args.flags.get('split')?.[0], metric);
  if (note) process.stderr.write(`${note}\n`);
  const rows = logs.flatMap((l) => splitRows(l, split, metric));
  const spec = lineChart({
    title: args.flags.get('title')?.[0] ?? `${split} ${metric}`,
    x: { field: 'step', title: 'training step' },
    y: { field: 'value', title: `${split} ${metric}`, ...(args.flags.has('log-y') ? { scale: 'log' as const } : {}) },
    series: 'run', data: rows,
  });
  let written: { svg: string; png: string };
  try {
    written = await writePlot(outBase, spec);
  } catch (e) {
    // writePlot stages temp files; an errno from them would name a file the user never asked for
    if (typeof (e as NodeJS.ErrnoException).code !== 'string') throw e;
    throw new Error(fsErrorMessage('plot: cannot write', `${outBase}.svg`, e), { cause: e });
  }
  console.log(`wrote ${written.svg} and ${written.png}`);
  return 0;
}
