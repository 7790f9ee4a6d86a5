// Why does dropping experts hurt a trained Soft MoE classifier, and why can Algorithm 1's choice
// hurt more than a random one? The classifier's logits are a sum of per-expert terms:
//
//   logits(X) = b + sum_j L_j(X),   L_j(X) = W · vec(C[:, j] ⊗ f_j(slot_j))   (one slot per expert)
//
// so keeping k experts keeps k of these terms. This module measures, per input, how the terms
// relate: how much they cancel (sum of their norms against the norm of their sum), and whether the
// experts Algorithm 1 keeps (largest Csum) are the ones with the largest terms. It reads the models
// an implicit-bias run saved (<run>/models/n<N>.safetensors), so it needs no retraining.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SoftMoEClassifier, type SoftMoEClassifierConfig } from '../models/softmoe-classifier.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { matmul, reshape, slice } from '../ops/index.js';
import { combineSums } from '../moe/select.js';
import { readSafetensorsFile } from '../io/safetensors.js';
import { loadModelWeights } from '../models/checkpoint.js';
import type { ImageSet } from '../data/batches.js';
import { writeFileAtomic } from '../io/atomic.js';
import { markdownTable } from '../report/table.js';
import { loadData, type AccuracyRecord, type ImplicitBiasConfig } from './implicit-bias.js';

/** Per-model statistics of the per-expert logit terms, means over the inputs measured. */
export interface ContributionStats {
  n: number;
  inputs: number;
  /** sum_j ||L_j|| / ||sum_j L_j||: 1 when all terms point the same way; large when they cancel. */
  cancellation: number;
  /** Median over inputs of the same ratio (the mean is pulled by inputs whose terms nearly cancel to 0). */
  cancellationMedian: number;
  /** Spearman rank correlation between Csum_j and ||L_j|| over the experts of one input (NaN for n = 2 ties), mean over inputs. */
  csumVsTermRank: number;
  /** Share of sum_j ||L_j|| held by the top quarter of experts by Csum (Algorithm 1 at k = n/4), and by the top quarter by ||L_j||. */
  termShareTopCsum: number;
  termShareTopTerm: number;
  /** ||b|| against the mean ||sum_j L_j||: how large the decoder's bias is next to what the experts add. */
  biasNorm: number;
  expertsNorm: number;
}

/** Per-input logit terms L [B, n, classes] and Csum [B, n] of a Soft MoE classifier with one slot per expert. */
export function expertLogitTerms(model: SoftMoEClassifier, images: Tensor): { terms: Float32Array; csum: Float64Array; B: number; n: number; classes: number } {
  const layer = model.moe;
  const n = layer.numExperts;
  if (layer.slotsPerExpert !== 1) throw new Error(`expertLogitTerms: needs one slot per expert, the model has ${layer.slotsPerExpert}`);
  const m = model.tokens;
  const d = model.tokenDim;
  const W = model.decoder.weight; // [classes, m*d]
  const classes = W.shape[0]!;
  return noGrad(() => {
    const tokens = model.patchify(images);
    const B = tokens.shape[0]!;
    const { x3, dispatch, combine } = layer.weights(tokens);
    const outs = reshape(layer.runExperts(matmul(dispatch, x3, { transA: true })), [B * n, d]); // f_j(slot_j)
    // Z_t = f_j(slot_j) · W_t^T for each token position t: [B*n, classes]
    const Z = Array.from({ length: m }, (_, t) => matmul(outs, slice(W, [0, t * d], [classes, d]), { transB: true }).data);
    const cd = combine.data; // [B, m, n]
    const terms = new Float32Array(B * n * classes);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < n; j++) {
        const o = (b * n + j) * classes;
        for (let t = 0; t < m; t++) {
          const c = cd[(b * m + t) * n + j]!;
          const z = Z[t]!;
          for (let q = 0; q < classes; q++) terms[o + q]! += c * z[o + q]!;
        }
      }
    }
    return { terms, csum: combineSums(combine, n, 1), B, n, classes };
  });
}

function ranks(v: ArrayLike<number>): Float64Array {
  const idx = Array.from({ length: v.length }, (_, i) => i).sort((a, b) => v[a]! - v[b]!);
  const r = new Float64Array(v.length);
  for (let i = 0; i < idx.length;) {
    let j = i;
    while (j + 1 < idx.length && v[idx[j + 1]!] === v[idx[i]!]) j++;
    for (let q = i; q <= j; q++) r[idx[q]!] = (i + j) / 2;
    i = j + 1;
  }
  return r;
}

function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let ma = 0, mb = 0;
  for (let i = 0; i < n; i++) { ma += a[i]!; mb += b[i]!; }
  ma /= n; mb /= n;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) { const x = a[i]! - ma, y = b[i]! - mb; sab += x * y; saa += x * x; sbb += y * y; }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : NaN;
}

/** Statistics of the per-expert logit terms of one model over a set of test images (in batches). */
export function contributionStats(model: SoftMoEClassifier, data: ImageSet, batchSize = 100): ContributionStats {
  const n = model.moe.numExperts;
  const quarter = Math.max(1, Math.floor(n / 4));
  const bias = model.decoder.bias;
  let biasNorm = 0;
  if (bias) for (const v of bias.data) biasNorm += v * v;
  biasNorm = Math.sqrt(biasNorm);
  const ratios: number[] = [];
  let rankSum = 0, rankCount = 0, shareCsum = 0, shareTerm = 0, expertsNorm = 0;
  const px = data.rows * data.cols * data.channels;
  for (let s = 0; s < data.n; s += batchSize) {
    const B = Math.min(batchSize, data.n - s);
    const images = new Tensor(data.images.slice(s * px, (s + B) * px), [B, px]);
    const { terms, csum, classes } = expertLogitTerms(model, images);
    for (let b = 0; b < B; b++) {
      const norms = new Float64Array(n);
      const total = new Float64Array(classes);
      for (let j = 0; j < n; j++) {
        let q2 = 0;
        for (let q = 0; q < classes; q++) { const v = terms[(b * n + j) * classes + q]!; q2 += v * v; total[q]! += v; }
        norms[j] = Math.sqrt(q2);
      }
      const sumNorms = norms.reduce((a, v) => a + v, 0);
      const normTotal = Math.sqrt(total.reduce((a, v) => a + v * v, 0));
      expertsNorm += normTotal;
      ratios.push(sumNorms / Math.max(normTotal, 1e-30));
      const cs = csum.subarray(b * n, (b + 1) * n);
      const rho = pearson(ranks(cs), ranks(norms));
      if (Number.isFinite(rho)) { rankSum += rho; rankCount++; }
      const byCsum = Array.from({ length: n }, (_, j) => j).sort((x, y) => cs[y]! - cs[x]!).slice(0, quarter);
      const byTerm = Array.from({ length: n }, (_, j) => j).sort((x, y) => norms[y]! - norms[x]!).slice(0, quarter);
      shareCsum += byCsum.reduce((a, j) => a + norms[j]!, 0) / Math.max(sumNorms, 1e-30);
      shareTerm += byTerm.reduce((a, j) => a + norms[j]!, 0) / Math.max(sumNorms, 1e-30);
    }
  }
  const N = data.n;
  const sorted = [...ratios].sort((a, b) => a - b);
  return {
    n, inputs: N,
    cancellation: ratios.reduce((a, v) => a + v, 0) / N,
    cancellationMedian: sorted[Math.floor(N / 2)]!,
    csumVsTermRank: rankCount > 0 ? rankSum / rankCount : NaN,
    termShareTopCsum: shareCsum / N,
    termShareTopTerm: shareTerm / N,
    biasNorm,
    expertsNorm: expertsNorm / N,
  };
}

/** The models an implicit-bias run saved, smallest n first. */
export function savedModels(runDir: string): { n: number; path: string }[] {
  const dir = join(runDir, 'models');
  if (!existsSync(dir)) throw new Error(`${dir} does not exist: run \`moe experiment implicit-bias\` with this --out first (runs from before models were saved have none)`);
  return readdirSync(dir).flatMap((f) => {
    const m = /^n(\d+)\.safetensors$/.exec(f);
    return m ? [{ n: Number(m[1]), path: join(dir, f) }] : [];
  }).sort((a, b) => a.n - b.n);
}

/** Loads a saved Soft MoE classifier; the file's metadata holds its config. */
export function loadSavedClassifier(path: string): SoftMoEClassifier {
  const file = readSafetensorsFile(path);
  const raw = file.metadata['config'];
  if (raw === undefined) throw new Error(`${path}: no 'config' in the safetensors metadata; not a model saved by moe experiment implicit-bias`);
  const model = new SoftMoEClassifier(JSON.parse(raw) as SoftMoEClassifierConfig, 0);
  loadModelWeights(model, file.tensors);
  model.eval();
  return model;
}

export interface ContributionsOptions {
  /** An implicit-bias output directory with models/ (its results.json gives the dataset and the accuracies). */
  run: string;
  /** Measure on the first N test examples (default all). */
  limitTest?: number | null;
  log?: (line: string) => void;
  command?: string;
}

export interface ContributionsResult {
  dataset: string;
  run: string;
  models: (ContributionStats & { allAccuracy: number | null })[];
  seconds: number;
}

/**
 * For every model an implicit-bias run saved: the per-expert logit-term statistics on its test set.
 * Writes <run>/contributions.json and contributions.md.
 */
export function runContributions(opts: ContributionsOptions): ContributionsResult {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const t0 = performance.now();
  const resultsPath = join(opts.run, 'results.json');
  const partialPath = join(opts.run, 'results.partial.json');
  const source = existsSync(resultsPath) ? resultsPath : partialPath;
  if (!existsSync(source)) throw new Error(`contributions: ${opts.run} has neither results.json nor results.partial.json; pass the --out of an implicit-bias run`);
  const saved = JSON.parse(readFileSync(source, 'utf8')) as { config: ImplicitBiasConfig; records?: AccuracyRecord[]; units?: { records: AccuracyRecord[] }[] };
  const c = saved.config;
  const records = saved.records ?? (saved.units ?? []).flatMap((u) => u.records);
  const { test } = loadData({ ...c, limitTest: opts.limitTest ?? c.limitTest });
  const models: ContributionsResult['models'] = [];
  for (const { n, path } of savedModels(opts.run)) {
    const stats = contributionStats(loadSavedClassifier(path), test);
    const all = records.find((r) => r.n === n && r.method === 'all');
    models.push({ ...stats, allAccuracy: all ? all.accuracy : null });
    log(`n=${n}: terms cancel ${stats.cancellation.toFixed(2)}x (median ${stats.cancellationMedian.toFixed(2)}), rank(Csum) vs rank(|L_j|) ${stats.csumVsTermRank.toFixed(3)}, `
      + `top n/4 by Csum hold ${(100 * stats.termShareTopCsum).toFixed(1)}% of sum |L_j| (top n/4 by |L_j|: ${(100 * stats.termShareTopTerm).toFixed(1)}%)`);
  }
  if (models.length === 0) throw new Error(`contributions: ${join(opts.run, 'models')} holds no n<N>.safetensors`);
  const result: ContributionsResult = { dataset: c.dataset, run: opts.run, models, seconds: (performance.now() - t0) / 1000 };
  writeFileAtomic(join(opts.run, 'contributions.json'), `${JSON.stringify(result, null, 1)}\n`);
  writeFileAtomic(join(opts.run, 'contributions.md'), contributionsMarkdown(result, test.n, opts.command));
  return result;
}

export function contributionsMarkdown(r: ContributionsResult, inputs: number, command?: string): string {
  const lines = [`# Per-expert logit terms of the Soft MoE classifiers on ${r.dataset}`, ''];
  if (command) lines.push('Command:', '', '```', command, '```', '');
  lines.push(`The logits are b + sum_j L_j with L_j = W vec(C[:, j] f_j(slot_j)), one term per expert; keeping k experts keeps k terms. Over ${inputs} test inputs: `
    + `"cancel" is sum_j |L_j| / |sum_j L_j| (1 = the terms all point the same way; larger = they cancel, so dropping some moves the logits far); `
    + `"rank corr." is the Spearman correlation, across one input's experts, between Csum_j (what Algorithm 1 ranks by) and |L_j| (what each expert adds to the logits), averaged over inputs; `
    + `"top n/4 by Csum" is the share of sum_j |L_j| held by the n/4 experts Algorithm 1 keeps at k = n/4, against the share the n/4 largest terms hold. |b| is the decoder bias next to the mean |sum_j L_j|. Time: ${r.seconds.toFixed(1)} s.`, '');
  lines.push(markdownTable(['n', 'all experts', 'cancel (mean)', 'cancel (median)', 'rank corr. Csum vs |L_j|', 'top n/4 by Csum', 'top n/4 by |L_j|', '|b|', 'mean |sum L_j|'],
    r.models.map((m) => [m.n, m.allAccuracy === null ? '' : `${(100 * m.allAccuracy).toFixed(2)}%`, m.cancellation.toFixed(2), m.cancellationMedian.toFixed(2),
      Number.isFinite(m.csumVsTermRank) ? m.csumVsTermRank.toFixed(3) : '', `${(100 * m.termShareTopCsum).toFixed(1)}%`, `${(100 * m.termShareTopTerm).toFixed(1)}%`,
      m.biasNorm.toFixed(2), m.expertsNorm.toFixed(2)]),
    { align: ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'] }));
  return `${lines.join('\n')}\n`;
}
