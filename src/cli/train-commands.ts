// `moe train`, `moe eval` and `moe inspect`.

import { basename, dirname, join, resolve } from 'node:path';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { rejectUnknown, type ParsedArgs } from './args.js';
import { generate, type ByteLM } from '../models/lm.js';
import { encodeBytes } from '../data/text.js';
import { lineChart, writePlot } from '../report/plot.js';
import { fsErrorMessage } from '../io/atomic.js';
import { loadRunConfig, describeRunConfig, validateRun, applySets } from '../config/run.js';
import { modelNames, modelSpec } from '../models/registry.js';
import { describe } from '../config/schema.js';
import { buildRunModel, loadImageData, makeTask, resolveCheckpointDir, runTraining } from '../train/run.js';
import { resolveResume } from '../train/rundir.js';
import { loadCheckpoint, loadModelWeights } from '../train/checkpoint.js';
import { noGrad } from '../tensor/autograd.js';
import { BatchIterator } from '../data/batches.js';
import { SoftMoEClassifier } from '../models/softmoe-classifier.js';
import { combineSums } from '../moe/select.js';
import { MoELayer, activeParameterCount } from '../moe/layer.js';
import type { TaskBatch } from '../train/trainer.js';

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
    const saved = loadCheckpoint(where.checkpointDir).config as Record<string, unknown>;
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
  const r = await runTraining(config, { out, ...(resume ? { resume } : {}), ...(force ? { force } : {}), log });
  if (r.nothingToDo) {
    console.log(`${config.name}: ${resume} has already finished its ${config.train.epochs} epochs (step ${r.state.step}); nothing to do. `
      + `To train longer: moe train --resume ${resume} --set train.epochs=${Math.max(config.train.epochs, r.state.epoch) + 1} (or more)`);
    return 0;
  }
  const test = r.test ? formatMetrics(r.test) : 'n/a';
  console.log(`${config.name}: ${r.state.step} steps in ${r.seconds.toFixed(1)} s; test ${test}; checkpoint in ${out}`);
  return 0;
}

export async function evalCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['checkpoint', 'split', 'help', 'json'], 'eval');
  const dir = args.flags.get('checkpoint')?.[0];
  if (!dir) throw new Error('eval: --checkpoint DIR is required');
  const ckpt = loadCheckpoint(resolveCheckpointDir(dir));
  const config = validateRun(ckpt.config);
  const { model, task: kind } = buildRunModel(config);
  loadModelWeights(model, ckpt.model);
  const split = (args.flags.get('split')?.[0] ?? 'test') as 'test' | 'val';
  if (split !== 'test' && split !== 'val') throw new Error(`eval: --split must be test or val, got ${split}`);
  const { task } = await makeTask(config, model, kind);
  const r = task.evaluate(split);
  if (!r) throw new Error(`eval: the run has no ${split} split (data.valFraction is 0)`);
  if (args.flags.has('json')) console.log(JSON.stringify({ split, ...r }));
  else console.log(`${config.name} ${split}: ${formatMetrics(r)}`);
  return 0;
}

export async function inspectCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['help', 'json', 'examples'], 'inspect');
  const dir = args.positional[1];
  if (!dir) throw new Error('inspect: give a checkpoint directory (moe inspect DIR)');
  const ckpt = loadCheckpoint(resolveCheckpointDir(dir));
  const config = validateRun(ckpt.config);
  const { model, task: kind } = buildRunModel(config);
  loadModelWeights(model, ckpt.model);
  const lines: string[] = [`${config.name}: model ${config.model.type}`, `total parameters: ${model.numParameters()}`];
  const byModule = new Map<string, number>();
  for (const [n, p] of model.namedParameters()) {
    const top = n.split('.')[0]!;
    byModule.set(top, (byModule.get(top) ?? 0) + p.size);
  }
  lines.push(`by module: ${[...byModule].map(([n, c]) => `${n} ${c}`).join(', ')}`);
  const moeLayers = model.namedModules().filter((e): e is [string, MoELayer] => e[1] instanceof MoELayer);
  if (moeLayers.length > 0) {
    const k = (config.model['k'] as number | undefined) ?? 2;
    const active = activeParameterCount(model, k);
    lines.push(`active parameters per token: ${active} (router, ${k} of each layer's ${moeLayers[0]![1].config.numExperts} experts, everything else)`);
    // one batch (the first of epoch 0) through the model in eval mode; every MoE layer keeps its router metrics
    model.eval();
    const { task } = await makeTask(config, model, kind);
    const batch = (task.batches(0) as Iterable<TaskBatch>)[Symbol.iterator]().next().value as TaskBatch;
    noGrad(() => task.step(batch));
    for (const [name, layer] of moeLayers) {
      const m = layer.lastMetrics;
      if (m === null) continue;
      lines.push(`${name}: tokens per expert ${m.tokensPerExpert.join(' ')}; mean prob ${m.meanProb.map((p) => p.toFixed(3)).join(' ')}`);
      lines.push(`  router entropy ${m.entropy.toFixed(3)} (of the mean ${m.entropyOfMean.toFixed(3)}, max ${m.maxEntropy.toFixed(3)}), load CV ${m.loadCV.toFixed(3)}, max/mean ${m.maxOverMean.toFixed(2)}, dropped ${(100 * m.dropFraction).toFixed(1)}%, dead experts ${m.deadExperts.length ? m.deadExperts.join(' ') : 'none'}`);
    }
  }
  if (model instanceof SoftMoEClassifier) {
    const n = model.moe.numExperts;
    const perExpert = model.moe.experts.paramsPerExpert();
    // Soft MoE runs every expert on every input: all parameters are active
    lines.push(`experts: ${n} x ${perExpert} parameters (hidden ${model.hidden}); Soft MoE is dense per input: active = total`);
    const data = loadImageData(config.data, config.train.seed);
    const limit = Number(args.flags.get('examples')?.[0] ?? 1000);
    const it = new BatchIterator(data.test, { batchSize: Math.min(limit, data.test.n), shuffle: false });
    const batch = it.epoch(0).next().value!;
    model.eval();
    const { combine } = noGrad(() => model.moe.weights(model.patchify(batch.x)));
    const cs = combineSums(combine, n, model.moe.slotsPerExpert);
    const B = batch.x.shape[0]!;
    const share = new Float64Array(n);
    const top1 = new Int32Array(n);
    for (let b = 0; b < B; b++) {
      let best = 0;
      for (let j = 0; j < n; j++) {
        share[j]! += cs[b * n + j]! / (B * model.tokens);
        if (cs[b * n + j]! > cs[b * n + best]!) best = j;
      }
      top1[best]!++;
    }
    lines.push(`per expert over ${B} test images (share of combine weight C, and how often it ranks first by Csum):`);
    for (let j = 0; j < n; j++) lines.push(`  expert ${String(j).padStart(3)}: C share ${(100 * share[j]!).toFixed(2)}%, first for ${top1[j]} images`);
  }
  if (args.flags.has('json')) console.log(JSON.stringify({ lines }));
  else console.log(lines.join('\n'));
  return 0;
}

export const GENERATE_HELP = `moe generate --checkpoint DIR [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]

Samples bytes from a trained byte-level language model (model type byte-lm): the prompt's UTF-8
bytes, then N new bytes (default 200), each drawn from softmax(logits / T) restricted to the K most
likely bytes (T = 0: greedy). The same seed gives the same text.`;

export async function generateCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['checkpoint', 'prompt', 'tokens', 'temperature', 'top-k', 'seed', 'help'], 'generate');
  const dir = args.flags.get('checkpoint')?.[0];
  if (!dir) throw new Error('generate: --checkpoint DIR is required');
  const ckpt = loadCheckpoint(resolveCheckpointDir(dir));
  const config = validateRun(ckpt.config);
  const { model, task } = buildRunModel(config);
  if (task !== 'language-model') throw new Error(`generate: the checkpoint holds a ${config.model.type} (${task}), not a language model`);
  loadModelWeights(model, ckpt.model);
  const num = (key: string, def: number, check: (v: number) => boolean, what: string): number => {
    const raw = args.flags.get(key)?.[0];
    if (raw === undefined) return def;
    const v = Number(raw);
    if (!check(v)) throw new Error(`generate: --${key} ${raw}: expected ${what}`);
    return v;
  };
  const tokens = num('tokens', 200, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
  const temperature = num('temperature', 0.8, (v) => v >= 0 && Number.isFinite(v), 'a number >= 0');
  const topK = num('top-k', 40, (v) => Number.isInteger(v) && v >= 1 && v <= 256, 'an integer in [1, 256]');
  const seed = num('seed', 0, Number.isInteger, 'an integer');
  const prompt = encodeBytes(args.flags.get('prompt')?.[0] ?? '');
  const out = generate(model as ByteLM, prompt, { maxNewTokens: tokens, temperature, topK, seed });
  // sampled bytes may end inside a character: decode leniently for display
  process.stdout.write(`${new TextDecoder('utf-8', { fatal: false }).decode(out)}\n`);
  return 0;
}

export const PLOT_HELP = `moe plot RUN_DIR... --out FILE [--metric loss] [--split val|test|train] [--title TEXT] [--log-y]

Draws one curve per run from each run's metrics.jsonl: the metric of evaluation records of the
split against the step (train: the per-step training values). Writes FILE.svg and FILE.png.`;

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
  const split = args.flags.get('split')?.[0] ?? 'val';
  if (!['val', 'test', 'train'].includes(split)) throw new Error(`plot: --split must be val, test or train, got ${split}`);
  const rows: Array<Record<string, unknown>> = [];
  for (const dir of runs) {
    const file = join(dir, 'metrics.jsonl');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      throw new Error(`plot: ${file}: cannot read (is ${dir} a run directory?)`);
    }
    const name = basename(dir.replace(/\/+$/, ''));
    let n = 0;
    text.split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new Error(`plot: ${file}:${i + 1}: not valid JSON`);
      }
      const wanted = split === 'train' ? rec['type'] === 'step' : rec['type'] === 'eval' && rec['split'] === split;
      if (wanted && typeof rec[metric] === 'number') {
        rows.push({ step: rec['step'], value: rec[metric], run: name });
        n++;
      }
    });
    if (n === 0) throw new Error(`plot: ${file} has no ${split} records with a number '${metric}'`);
  }
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
