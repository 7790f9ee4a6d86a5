// `moe eval`, `moe inspect` and `moe generate`: commands that use a trained checkpoint. They read
// the weights only (a shared checkpoint without optimizer.safetensors works) and turn library
// errors into messages about the user's files and flags.

import { loadWeightsWithGrowth, hasGrowSchedule } from '../models/checkpoint-growth.js';
import { join } from 'node:path';
import { type ParsedArgs, rejectUnknown } from './args.js';
import { generate, type ByteLM } from '../models/lm.js';
import { encodeBytes } from '../data/text.js';
import { validateRun, type RunConfig } from '../config/run.js';
import { buildRunModel, loadByteData, loadImageData, makeTask, resolveCheckpointDir } from '../train/run.js';
import { loadCheckpoint } from '../models/checkpoint.js';
import { noGrad } from '../tensor/autograd.js';
import { Tensor } from '../tensor/tensor.js';
import { BatchIterator } from '../data/batches.js';
import { SoftMoEClassifier } from '../models/softmoe-classifier.js';
import { combineSums } from '../moe/select.js';
import { MoELayer, activeParameterCount } from '../moe/layer.js';
import type { ImageClassifier, TaskKind } from '../models/registry.js';
import type { Module } from '../nn/module.js';

/** 'loss 0.3264, accuracy 88.70%': accuracies as percentages. */
function formatMetrics(r: Record<string, number>): string {
  return Object.entries(r).map(([k, v]) => `${k} ${k.endsWith('accuracy') ? `${(100 * v).toFixed(2)}%` : v.toFixed(4)}`).join(', ');
}

/**
 * What a loadModelWeights mismatch error says, without its function-name prefix and without its
 * closing advice for library callers ({ strict: false }), which is not advice for a command's user.
 */
export function weightsMismatchReason(e: unknown): string {
  return (e as Error).message.replace(/^loadModelWeights: /, '').replace(/; pass \{ strict: false \}.*$/, '');
}

/** The model of a checkpoint with its weights; the optimizer state is neither read nor needed. */
function loadTrained(command: string, dir: string): { config: RunConfig; model: Module; kind: TaskKind; checkpointDir: string } {
  const ckpt = loadCheckpoint(resolveCheckpointDir(dir), { optimizer: false });
  let config: RunConfig;
  try {
    config = validateRun(ckpt.config);
  } catch (e) {
    throw new Error(`${command}: ${join(ckpt.dir, 'config.json')}: ${(e as Error).message}`, { cause: e });
  }
  const { model, task: kind } = buildRunModel(config);
  try {
    // a run with a grow schedule saved more experts than its config builds: grow to the file's count
    loadWeightsWithGrowth(model, ckpt.model, { grow: hasGrowSchedule(config.model) });
  } catch (e) {
    const why = weightsMismatchReason(e);
    throw new Error(`${command}: the weights in ${join(ckpt.dir, 'model.safetensors')} do not fit the model that ${join(ckpt.dir, 'config.json')} describes `
      + `(was config.json edited, or were the files copied from different runs?): ${why}`, { cause: e });
  }
  return { config, model, kind, checkpointDir: ckpt.dir };
}

export const EVAL_HELP = `moe eval --checkpoint DIR [--split test|val] [--json]

Loss and accuracy of a checkpoint on the test split (default) or the validation split of the data
its run config names. DIR is a run directory or its checkpoint/; only the weights are read, so a
shared checkpoint without optimizer.safetensors works. --json prints one JSON object {"split", ...}.`;

export async function evalCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['checkpoint', 'split', 'help', 'json'], 'eval');
  const dir = args.flags.get('checkpoint')?.[0];
  if (!dir) throw new Error('eval: --checkpoint DIR is required');
  const split = (args.flags.get('split')?.[0] ?? 'test') as 'test' | 'val';
  if (split !== 'test' && split !== 'val') throw new Error(`eval: --split must be test or val, got ${split}`);
  const { config, model, kind } = loadTrained('eval', dir);
  const { task } = await makeTask(config, model, kind);
  const r = task.evaluate(split);
  if (!r) throw new Error(`eval: the run has no ${split} split (data.valFraction is 0)`);
  if (args.flags.has('json')) console.log(JSON.stringify({ split, ...r }));
  else console.log(`${config.name} ${split}: ${formatMetrics(r)}`);
  return 0;
}

export const INSPECT_HELP = `moe inspect DIR [--examples N] [--json]

Total and active parameters, parameters per module, and per-expert statistics of a checkpoint on
its first N test examples (default 1000 images, or 64 windows of data.seqLen bytes for a language
model): each MoE layer's tokens per expert, mean router probability, entropy, load and drops; for
Soft MoE, each expert's share of the combine weights.`;

/** The first N examples of the test split (else validation, else training), in the model's input layout. */
async function firstExamples(config: RunConfig, kind: TaskKind, n: number): Promise<{ x: Tensor; what: string }> {
  if (kind === 'language-model') {
    const bytes = await loadByteData(config.data);
    const [name, data] = bytes.test ? ['test', bytes.test] : bytes.val ? ['validation', bytes.val] : ['training', bytes.train];
    const T = config.data.seqLen;
    const windows = Math.min(n, Math.floor(data.length / T));
    if (windows < 1) throw new Error(`inspect: the ${name} split holds ${data.length} bytes, less than one window of data.seqLen = ${T}`);
    const ids = new Int32Array(windows * T);
    for (let i = 0; i < ids.length; i++) ids[i] = data[i]!;
    return { x: new Tensor(ids, [windows, T]), what: `${windows} ${name} windows of ${T} bytes${windows < n ? ` (all the split holds; --examples asked for ${n})` : ''}` };
  }
  const data = loadImageData(config.data, config.train.seed);
  const count = Math.min(n, data.test.n);
  const batch = new BatchIterator(data.test, { batchSize: count, shuffle: false }).epoch(0).next().value!;
  return { x: batch.x, what: `${count} test images${count < n ? ` (all the split holds; --examples asked for ${n})` : ''}` };
}

export async function inspectCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['help', 'json', 'examples'], 'inspect');
  const dir = args.positional[1];
  if (!dir) throw new Error('inspect: give a checkpoint directory (moe inspect DIR)');
  const rawExamples = args.flags.get('examples')?.[0];
  const examples = rawExamples === undefined ? undefined : Number(rawExamples);
  if (examples !== undefined && !(Number.isInteger(examples) && examples >= 1)) {
    throw new Error(`inspect: --examples ${rawExamples}: expected a positive integer (how many test examples to route)`);
  }
  const { config, model, kind } = loadTrained('inspect', dir);
  const lines: string[] = [`${config.name}: model ${config.model.type}`, `total parameters: ${model.numParameters()}`];
  const byModule = new Map<string, number>();
  for (const [n, p] of model.namedParameters()) {
    const top = n.split('.')[0]!;
    byModule.set(top, (byModule.get(top) ?? 0) + p.size);
  }
  lines.push(`by module: ${[...byModule].map(([n, c]) => `${n} ${c}`).join(', ')}`);
  model.eval();
  const moeLayers = model.namedModules().filter((e): e is [string, MoELayer] => e[1] instanceof MoELayer);
  if (moeLayers.length > 0) {
    const k = (config.model['k'] as number | undefined) ?? 2;
    const active = activeParameterCount(model, k);
    lines.push(`active parameters per token: ${active} (router, ${k} of each layer's ${moeLayers[0]![1].config.numExperts} experts, everything else)`);
    // the examples through the model in eval mode, as one batch; every MoE layer keeps its router metrics
    const { x, what } = await firstExamples(config, kind, examples ?? (kind === 'language-model' ? 64 : 1000));
    noGrad(() => {
      if (kind === 'language-model') (model as ByteLM).forward(x);
      else if (kind === 'image-classification') (model as ImageClassifier).classify(x);
      else throw new Error(`inspect: routing statistics for ${kind} models are not implemented`);
    });
    lines.push(`router statistics over ${what}:`);
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
    const { x, what } = await firstExamples(config, kind, examples ?? 1000);
    const { combine } = noGrad(() => model.moe.weights(model.patchify(x)));
    const cs = combineSums(combine, n, model.moe.slotsPerExpert);
    const B = x.shape[0]!;
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
    lines.push(`per expert over ${what} (share of combine weight C, and how often it ranks first by Csum):`);
    for (let j = 0; j < n; j++) lines.push(`  expert ${String(j).padStart(3)}: C share ${(100 * share[j]!).toFixed(2)}%, first for ${top1[j]} images`);
  }
  if (args.flags.has('json')) console.log(JSON.stringify({ lines }));
  else console.log(lines.join('\n'));
  return 0;
}

/** The byte generation starts from when there is no prompt: a newline, the start of a line of the training text. */
export const START_BYTE = 10;

export const GENERATE_HELP = `moe generate --checkpoint DIR [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]

Samples bytes from a trained byte-level language model (model type byte-lm): the prompt's UTF-8
bytes, then N new bytes (default 200), each drawn from softmax(logits / T) restricted to the K most
likely bytes (T = 0: greedy). The same seed gives the same text. Without --prompt (or with an
empty one) the text starts from nothing: the model is conditioned on one newline byte (the start
of a line), which is not printed. A prompt longer than the model's context (model.maxSeqLen bytes)
is cut to its last maxSeqLen bytes, with a note on stderr.`;

export async function generateCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['checkpoint', 'prompt', 'tokens', 'temperature', 'top-k', 'seed', 'help'], 'generate');
  const dir = args.flags.get('checkpoint')?.[0];
  if (!dir) throw new Error('generate: --checkpoint DIR is required');
  const num = (key: string, def: number, check: (v: number) => boolean, what: string): number => {
    const raw = args.flags.get(key)?.[0];
    if (raw === undefined) return def;
    const v = Number(raw);
    if (raw.trim() === '' || !check(v)) throw new Error(`generate: --${key} ${raw}: expected ${what}`);
    return v;
  };
  const tokens = num('tokens', 200, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
  const temperature = num('temperature', 0.8, (v) => v >= 0 && Number.isFinite(v), 'a number >= 0');
  const topK = num('top-k', 40, (v) => Number.isInteger(v) && v >= 1 && v <= 256, 'an integer in [1, 256]');
  const seed = num('seed', 0, Number.isInteger, 'an integer');
  const { config, model, kind } = loadTrained('generate', dir);
  if (kind !== 'language-model') throw new Error(`generate: the checkpoint holds a ${config.model.type} (${kind}), not a language model`);
  const lm = model as ByteLM;
  let prompt = encodeBytes(args.flags.get('prompt')?.[0] ?? '');
  const context = lm.config.maxSeqLen;
  if (prompt.length > context) {
    process.stderr.write(`generate: the prompt is ${prompt.length} bytes, longer than the model's context of ${context} bytes (model.maxSeqLen); it is cut to its last ${context} bytes\n`);
    prompt = prompt.subarray(prompt.length - context);
  }
  const fromNothing = prompt.length === 0;
  const out = generate(lm, fromNothing ? Uint8Array.of(START_BYTE) : prompt, { maxNewTokens: tokens, temperature, topK, seed });
  // sampled bytes may end inside a character: decode leniently for display
  process.stdout.write(`${new TextDecoder('utf-8', { fatal: false }).decode(fromNothing ? out.subarray(1) : out)}\n`);
  return 0;
}
