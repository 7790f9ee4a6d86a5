// One training run of the specialisation / stability / rare-language studies: a byte-level MoE LM
// trained on the labelled UDHR corpus, with the routing it learned recorded per layer, language
// and byte class, snapshots of top-1 routing during training, and a cache so parts share runs.
//
// B = batch, T = seqLen, E = experts, L = languages.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ByteLM, type LMConfig } from '../../models/lm.js';
import type { Routing } from '../../moe/routers/types.js';
import type { Router } from '../../moe/routers/types.js';
import { Tensor } from '../../tensor/tensor.js';
import { Rng, deriveSeed } from '../../tensor/rng.js';
import { noGrad } from '../../tensor/autograd.js';
import { add } from '../../ops/index.js';
import { Adam, clipGradNorm } from '../../train/optim.js';
import { warmupCosine } from '../../train/schedule.js';
import { lmLoss } from '../../train/lm-task.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { languageSamplingProbs, sampleLanguageBatch, type MultilingualCorpus } from '../../data/multilingual-corpus.js';
import { BYTE_CLASSES, byteClasses } from './byte-classes.js';

export interface RunSpec {
  /** Byte-LM config (moe); see src/models/lm.ts. */
  model: Partial<LMConfig>;
  steps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  /** Language sampling temperature (1 = proportional to training bytes). */
  temperature: number;
  /** Steps (0 = before training) at which top-1 routing of the probe windows is recorded. */
  snapshotSteps: number[];
  /** Validation windows per language for the usage matrices and losses. */
  evalWindowsPerLanguage: number;
  /** Of them, the first this many per language are the probe windows of the snapshots. */
  probeWindowsPerLanguage: number;
  /** The corpus's languages, low-resource set and ratio (so the cache key covers the data). */
  languages: string[];
  lowResource: string[];
  lowRatio: number;
}

export interface RoutingTables {
  /** [layer][language][expert]: top-k assignments of validation tokens. */
  language: number[][][];
  /** [layer][byte class][expert] (classes: BYTE_CLASSES). */
  byteClass: number[][][];
}

export interface RunRecord {
  name: string;
  seed: number;
  specHash: string;
  spec: RunSpec;
  trainSeconds: number;
  /** Mean training loss (nats/byte) over the last 10% of steps. */
  finalTrainLoss: number;
  /** Validation loss (nats/byte) per language code. */
  valLoss: Record<string, number>;
  /** Routing of the validation windows before training and after. */
  init: RoutingTables;
  final: RoutingTables;
  /** [layer][expert]: training tokens' top-k assignments (the "training counts" of rare experts). */
  trainCounts: number[][];
  /** Training windows drawn per language (index = language id). */
  trainWindowsPerLanguage: number[];
  /** Snapshot steps and, per layer, the share of probe tokens whose top-1 expert changed since the previous snapshot (index i: snapshot i-1 -> i; 0 for i = 0). */
  snapshots: { steps: number[]; changedSincePrevious: number[][]; changedVsFinal: number[][]; changedSincePreviousByResource: Record<'high' | 'low', number[][]> };
}

/** Hash of what makes two runs the same (the record's file name carries it). */
export function specHash(spec: RunSpec): string {
  return createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 10);
}

/**
 * Calls fn with every MoE layer's router reporting each routing it computes; restores the routers
 * afterwards. The hook wraps the instances' route methods: the layer keeps no routing, and an
 * analysis needs the assignments themselves, not only the metrics.
 */
export function withRoutingHook<R>(model: ByteLM, onRouting: (layer: number, r: Routing) => void, fn: () => R): R {
  const routers: Router[] = model.moeLayers().map((m) => m.router);
  const originals = routers.map((r) => r.route);
  routers.forEach((r, l) => {
    const orig = originals[l]!;
    r.route = (x, opts) => {
      const out = orig.call(r, x, opts);
      onRouting(l, out);
      return out;
    };
  });
  try {
    return fn();
  } finally {
    routers.forEach((r, l) => { r.route = originals[l]!; });
  }
}

/** Top-1 expert of each of T tokens: the assignment with the largest gate. */
export function top1(r: Routing): Int32Array {
  const best = new Int32Array(r.tokens).fill(-1);
  const gate = new Float64Array(r.tokens).fill(-Infinity);
  const g = r.gates.data;
  for (let a = 0; a < r.token.length; a++) {
    const t = r.token[a]!;
    if (g[a]! > gate[t]!) {
      gate[t] = g[a]!;
      best[t] = r.expert[a]!;
    }
  }
  return best;
}

interface EvalWindows {
  x: Int32Array;
  y: Int32Array;
  lang: Int32Array;
  /** Byte class of every input position [N * T]. */
  cls: Int32Array;
  /** Window indices of the probe windows. */
  probe: Int32Array;
}

/** Non-overlapping validation windows per language from the split's start (as languageWindows), with byte classes and probe flags. */
function evalWindows(corpus: MultilingualCorpus, spec: RunSpec): EvalWindows {
  const T = spec.seqLen;
  const xs: number[] = [];
  const ys: number[] = [];
  const cls: number[] = [];
  const lang: number[] = [];
  const probe: number[] = [];
  for (const l of corpus.languages) {
    const b = l.val;
    const c = byteClasses(b);
    for (let s = 0, n = 0; s + T < b.length && n < spec.evalWindowsPerLanguage; s += T, n++) {
      if (n < spec.probeWindowsPerLanguage) probe.push(lang.length);
      for (let t = 0; t < T; t++) {
        xs.push(b[s + t]!);
        ys.push(b[s + t + 1]!);
        cls.push(c[s + t]!);
      }
      lang.push(l.id);
    }
  }
  return { x: Int32Array.from(xs), y: Int32Array.from(ys), lang: Int32Array.from(lang), cls: Int32Array.from(cls), probe: Int32Array.from(probe) };
}

const zeros3 = (a: number, b: number, c: number): number[][][] => Array.from({ length: a }, () => Array.from({ length: b }, () => new Array<number>(c).fill(0)));

/** Routing tables, per-language loss and top-1 of every token per layer, in eval mode without gradients. */
function evaluate(model: ByteLM, corpus: MultilingualCorpus, w: EvalWindows, T: number): { tables: RoutingTables; lossSum: Float64Array; lossCount: Float64Array; top1: Int32Array[] } {
  const E = model.config.numExperts;
  const layers = model.moeLayers().length;
  const L = corpus.languages.length;
  const tables: RoutingTables = { language: zeros3(layers, L, E), byteClass: zeros3(layers, BYTE_CLASSES.length, E) };
  const N = w.lang.length;
  const top = Array.from({ length: layers }, () => new Int32Array(N * T));
  const lossSum = new Float64Array(L);
  const lossCount = new Float64Array(L);
  const chunk = 32;
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => {
      for (let w0 = 0; w0 < N; w0 += chunk) {
        const B = Math.min(chunk, N - w0);
        const off = w0 * T;
        const ids = new Tensor(w.x.slice(off, off + B * T), [B, T]);
        const logits = withRoutingHook(model, (layer, r) => {
          for (let a = 0; a < r.token.length; a++) {
            const t = r.token[a]!; // 0 .. B*T-1 within this chunk
            const e = r.expert[a]!;
            tables.language[layer]![w.lang[w0 + Math.floor(t / T)]!]![e]!++;
            tables.byteClass[layer]![w.cls[off + t]!]![e]!++;
          }
          top[layer]!.set(top1(r), off);
        }, () => model.forward(ids).logits.data); // [B, T, 256]
        for (let i = 0; i < B * T; i++) {
          const row = i * 256;
          let m = -Infinity;
          for (let v = 0; v < 256; v++) m = Math.max(m, logits[row + v]!);
          let s = 0;
          for (let v = 0; v < 256; v++) s += Math.exp(logits[row + v]! - m);
          const lang = w.lang[w0 + Math.floor(i / T)]!;
          lossSum[lang]! += m + Math.log(s) - logits[row + w.y[off + i]!]!;
          lossCount[lang]!++;
        }
      }
    });
  } finally {
    model.train(wasTraining);
  }
  return { tables, lossSum, lossCount, top1: top };
}

/** Share of probe tokens whose top-1 differs between two snapshots, per layer, over the given windows. */
function changedShare(a: Int32Array[], b: Int32Array[], windows: ArrayLike<number>, T: number): number[] {
  return a.map((la, l) => {
    const lb = b[l]!;
    let changed = 0;
    let n = 0;
    for (let i = 0; i < windows.length; i++) {
      const off = windows[i]! * T;
      for (let t = 0; t < T; t++, n++) if (la[off + t] !== lb[off + t]) changed++;
    }
    return n > 0 ? changed / n : NaN;
  });
}

/** Trains one run, or reads it back from `cacheDir` when a run of the same spec and seed is there. */
export function trainedRun(corpus: MultilingualCorpus, name: string, spec: RunSpec, seed: number, cacheDir: string, log: (line: string) => void = () => {}): RunRecord {
  const hash = specHash(spec);
  const path = join(cacheDir, `${name}-${hash}-s${seed}.json`);
  if (existsSync(path)) {
    const rec = JSON.parse(readFileSync(path, 'utf8')) as RunRecord;
    if (rec.specHash !== hash || rec.seed !== seed) throw new Error(`multilingual: ${path} does not hold run ${name} seed ${seed} of spec ${hash}; delete it to retrain`);
    log(`${name} seed ${seed}: finished run found in ${path}`);
    return rec;
  }
  if (spec.languages.join() !== corpus.languages.map((l) => l.code).join()) throw new Error('trainedRun: spec.languages differs from the corpus');
  const T = spec.seqLen;
  const model = new ByteLM({ ...spec.model, maxSeqLen: Math.max(T, spec.model.maxSeqLen ?? 0) }, seed);
  const layers = model.moeLayers().length;
  if (layers === 0) throw new Error('trainedRun: the model has no MoE layer (ffn must be moe)');
  const E = model.config.numExperts;
  const w = evalWindows(corpus, spec);
  const snaps: Int32Array[][] = [];
  const snapSteps = [...spec.snapshotSteps].sort((a, b) => a - b);
  const init = evaluate(model, corpus, w, T);
  // snapshots keep every window's top-1; changes are measured over the probe windows only
  if (snapSteps[0] === 0) snaps.push(init.top1);

  const opt = new Adam(model.namedParameters(), { lr: spec.lr });
  const schedule = warmupCosine({ lr: spec.lr, warmupSteps: Math.max(1, Math.round(spec.steps * 0.05)), totalSteps: spec.steps + 1, minLr: spec.lr / 10 });
  const probs = languageSamplingProbs(corpus, spec.temperature);
  const rng = new Rng(deriveSeed(seed, 11));
  const trainCounts = Array.from({ length: layers }, () => new Array<number>(E).fill(0));
  const trainWindows = new Array<number>(corpus.languages.length).fill(0);
  const tail: number[] = [];
  const t0 = performance.now();
  for (let step = 1; step <= spec.steps; step++) {
    const batch = sampleLanguageBatch(corpus, { batchSize: spec.batchSize, seqLen: T, rng, probs });
    for (const l of batch.lang) trainWindows[l]!++;
    opt.lr = schedule(step - 1);
    const out = withRoutingHook(model, (layer, r) => {
      const c = trainCounts[layer]!;
      for (const e of r.expert) c[e]!++;
    }, () => model.forward(batch.x));
    const ce = lmLoss(out.logits, batch.y);
    const loss = out.auxLoss ? add(ce, out.auxLoss) : ce;
    loss.backward();
    clipGradNorm(model.parameters(), 1);
    opt.step();
    opt.zeroGrad();
    const l = ce.data[0]!;
    if (!Number.isFinite(l)) throw new Error(`multilingual ${name} seed ${seed}: training loss is ${l} at step ${step}`);
    if (step > spec.steps * 0.9) tail.push(l);
    if (snapSteps.includes(step)) snaps.push(evaluate(model, corpus, w, T).top1);
    if (step % 50 === 0 || step === spec.steps) log(`${name} seed ${seed}: step ${step}/${spec.steps} loss ${l.toFixed(3)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
  const trainSeconds = (performance.now() - t0) / 1000;
  const fin = evaluate(model, corpus, w, T);
  const byResource = (res: 'high' | 'low') => Int32Array.from(Array.from(w.probe).filter((i) => corpus.languages[w.lang[i]!]!.resource === res));
  const changed = (windows: ArrayLike<number>) => snaps.map((s, i) => (i === 0 ? new Array<number>(layers).fill(0) : changedShare(snaps[i - 1]!, s, windows, T)));
  const rec: RunRecord = {
    name, seed, specHash: hash, spec, trainSeconds,
    finalTrainLoss: tail.reduce((a, b) => a + b, 0) / Math.max(1, tail.length),
    valLoss: Object.fromEntries(corpus.languages.map((l) => [l.code, fin.lossSum[l.id]! / fin.lossCount[l.id]!])),
    init: init.tables, final: fin.tables, trainCounts, trainWindowsPerLanguage: trainWindows,
    snapshots: {
      steps: snapSteps.filter((s) => s <= spec.steps),
      changedSincePrevious: changed(w.probe),
      changedVsFinal: snaps.map((s) => changedShare(s, fin.top1, w.probe, T)),
      changedSincePreviousByResource: { high: changed(byResource('high')), low: changed(byResource('low')) },
    },
  };
  mkdirSync(cacheDir, { recursive: true });
  writeFileAtomic(path, `${JSON.stringify(rec)}\n`);
  return rec;
}
