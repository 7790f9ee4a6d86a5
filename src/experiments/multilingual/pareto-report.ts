// results.md and PNG plots of the Pareto / scaling-law part of the multilingual study.

import { join } from 'node:path';
import { lineChart, writePlot } from '../../report/plot.js';
import { formatNumber, markdownTable } from '../../report/table.js';
import { formatSeconds, meanStd } from '../common.js';
import type { ParetoResult } from './pareto.js';

const f = (x: number, digits = 4) => formatNumber(x, digits);

/** Mean over seeds of each (kind, size): the points of the frontier. */
export function frontierRows(r: ParetoResult): Array<{ kind: string; d: number; N: number; trainFlops: number; inferenceFlopsPerToken: number; loss: number; lossStd: number; totalParams: number }> {
  const rows = [];
  for (const kind of ['moe', 'dense']) {
    for (const d of r.config.sizes) {
      const cs = r.cells.filter((c) => c.name === `${kind}-d${d}`);
      if (cs.length === 0) continue;
      const l = meanStd(cs.map((c) => c.meanVal));
      rows.push({ kind, d, N: cs[0]!.activeNonEmbedding, totalParams: cs[0]!.totalParams, trainFlops: cs[0]!.trainFlops, inferenceFlopsPerToken: cs[0]!.inferenceFlopsPerToken, loss: l.mean, lossStd: l.std });
    }
  }
  return rows;
}

export function paretoMarkdown(r: ParetoResult, wallSeconds: number): string {
  const c = r.config;
  const t = c.train;
  const lines: string[] = [];
  lines.push('# Multilingual study, part 2: MoE vs dense on the quality-compute frontier', '');
  lines.push(`Command: \`${r.command}\``, '');
  lines.push(`Training time (sum over cells): ${formatSeconds(r.seconds)}; this invocation: ${formatSeconds(wallSeconds)} (resumed cells not re-trained). Load average at the end: ${r.loadavg.map((x) => x.toFixed(2)).join(', ')} (2 vCPUs shared with other engineers).`, '');
  lines.push(`Setup: byte LM, ${c.layers} blocks, rotary heads of width 16, d in {${c.sizes.join(', ')}}; MoE: E = ${c.numExperts}, k = ${c.k}, expert width d, top-k router, balance 0.01, z-loss 0.001; dense: one MLP of width k d (the same active parameters, less the router's d E per block). ${t.steps} steps of ${t.batchSize} x ${t.seqLen} bytes (${t.steps * t.batchSize * t.seqLen} tokens), Adam, warmup-cosine peak ${t.lr}; seeds {${c.seeds.join(', ')}}. ${c.languages.length} languages (low-resource, 1/20 of the training text: ${c.lowResource.join(', ') || 'none'}); windows drawn in proportion to training bytes. Validation: articles held out in every language, up to ${t.evalWindowsPerLanguage} windows of ${t.seqLen} per language; loss in nats per byte, averaged over languages with equal weight.`, '');
  lines.push('FLOPs are counted from the config (src/experiments/multilingual/flops.ts): matrix products only, 2 FLOPs per multiply-add; training = 3 x forward x tokens at the training window; inference = forward per token with a KV cache, mean context (T + 1) / 2.', '');
  lines.push('## Frontier (mean over seeds)', '');
  lines.push(markdownTable(['model', 'd', 'N active (no emb.)', 'total params', 'train FLOPs', 'inference FLOPs / token', 'val loss', 'std over seeds'],
    frontierRows(r).map((x) => [x.kind, x.d, x.N, x.totalParams, x.trainFlops.toExponential(3), x.inferenceFlopsPerToken.toExponential(3), f(x.loss), f(x.lossStd, 2)])));
  lines.push('', '## Scaling law L = a N^-alpha', '');
  lines.push('Points: every (size, seed) cell, its loss averaged over languages. alpha +- SE: least squares in log-log space (SE from the residuals, n - 2 degrees of freedom; with 2 seeds per size the residual includes seed noise). Bootstrap: languages resampled with replacement 1000 times, alpha refitted; the spread says how much alpha depends on which languages the corpus holds. With floor: L = c + a N^-alpha, c profiled; with 3-4 sizes c and alpha trade off, so read it as a sensitivity check.', '');
  lines.push(markdownTable(['model', 'N', 'alpha', 'SE', 'bootstrap 95% (languages)', 'a', 'R^2', 'with floor: c', 'alpha'],
    r.fits.map((x) => [x.kind, x.n, f(x.fit.alpha), f(x.fit.alphaSE, 2), `[${f(x.bootstrap.ci95[0], 3)}, ${f(x.bootstrap.ci95[1], 3)}]`, f(x.fit.a, 3), f(x.fit.r2, 3),
      x.withFloor ? f(x.withFloor.c, 3) : '-', x.withFloor ? f(x.withFloor.alpha, 3) : '-'])));
  for (const n of ['activeNonEmbedding', 'activeParams'] as const) {
    const m = r.fits.find((x) => x.kind === 'moe' && x.n === n);
    const d = r.fits.find((x) => x.kind === 'dense' && x.n === n);
    if (m && d) lines.push('', `alpha(MoE) - alpha(dense), N = ${n}: ${f(m.fit.alpha - d.fit.alpha, 3)} +- ${f(Math.hypot(m.fit.alphaSE, d.fit.alphaSE), 2)} (SEs combined as independent).`);
  }
  lines.push('', '## Where MoE beats dense (per language, same size)', '');
  lines.push('gap = mean dense loss - mean MoE loss (> 0: MoE better). A language counts for MoE when every MoE seed beats every dense seed, for dense conversely, else "overlap".', '');
  const bySize = r.config.sizes.map((d) => {
    const g = r.gaps.filter((x) => x.size === d);
    const cnt = (v: string) => g.filter((x) => x.verdict === v).length;
    const mean = (xs: typeof g) => (xs.length ? xs.reduce((s, x) => s + x.gap, 0) / xs.length : NaN);
    return [d, f(mean(g), 3), f(mean(g.filter((x) => x.resource === 'high')), 3), f(mean(g.filter((x) => x.resource === 'low')), 3), cnt('moe'), cnt('dense'), cnt('overlap')];
  });
  lines.push(markdownTable(['d', 'mean gap', 'gap, high-resource', 'gap, low-resource', 'MoE better', 'dense better', 'overlap'], bySize));
  const largest = Math.max(...r.config.sizes);
  const families = [...new Set(r.gaps.map((g) => g.family))];
  lines.push('', `### By family, d = ${largest}`, '');
  lines.push(markdownTable(['family', 'languages', 'mean gap', 'MoE better', 'dense better'], families.map((fam) => {
    const g = r.gaps.filter((x) => x.size === largest && x.family === fam);
    return [fam, g.length, f(g.reduce((s, x) => s + x.gap, 0) / g.length, 3), g.filter((x) => x.verdict === 'moe').length, g.filter((x) => x.verdict === 'dense').length];
  })));
  lines.push('', `### Per language, d = ${largest}`, '');
  lines.push(markdownTable(['language', 'family', 'script', 'resource', 'MoE (seeds)', 'dense (seeds)', 'gap', 'verdict'],
    r.gaps.filter((x) => x.size === largest).map((x) => [x.code, x.family, x.script, x.resource, x.moe.map((v) => v.toFixed(3)).join(' / '), x.dense.map((v) => v.toFixed(3)).join(' / '), f(x.gap, 3), x.verdict])));
  lines.push('', '## Cells', '');
  lines.push(markdownTable(['cell', 'seed', 'N active (no emb.)', 'active', 'total', 'final train loss', 'mean val loss', 'train s'],
    r.cells.map((x) => [x.name, x.seed, x.activeNonEmbedding, x.activeParams, x.totalParams, f(x.finalTrainLoss), f(x.meanVal), x.trainSeconds.toFixed(1)])));
  lines.push('', 'Plots: frontier-train-flops.png, frontier-inference-flops.png, gap-by-resource.png.', '');
  return `${lines.join('\n')}\n`;
}

export async function paretoPlots(r: ParetoResult, out: string): Promise<void> {
  const rows = frontierRows(r);
  await writePlot(join(out, 'frontier-train-flops'), lineChart({
    title: 'Validation loss (mean over languages and seeds) vs training FLOPs', series: 'kind',
    x: { field: 'trainFlops', title: 'training FLOPs', scale: 'log' }, y: { field: 'loss', title: 'val loss (nats/byte)' }, data: rows,
  }));
  await writePlot(join(out, 'frontier-inference-flops'), lineChart({
    title: 'Validation loss vs inference FLOPs per token', series: 'kind',
    x: { field: 'inferenceFlopsPerToken', title: 'inference FLOPs / token', scale: 'log' }, y: { field: 'loss', title: 'val loss (nats/byte)' }, data: rows,
  }));
  const gapRows = r.config.sizes.flatMap((d) => (['high', 'low'] as const).flatMap((res) => {
    const g = r.gaps.filter((x) => x.size === d && x.resource === res);
    if (g.length === 0) return [];
    return [{ d, resource: res, gap: g.reduce((s, x) => s + x.gap, 0) / g.length }];
  }));
  await writePlot(join(out, 'gap-by-resource'), lineChart({
    title: 'dense loss - MoE loss (> 0: MoE better), mean over languages', series: 'resource',
    x: { field: 'd', title: 'd (model width)', scale: 'log' }, y: { field: 'gap', title: 'gap (nats/byte)' }, data: gapRows,
  }));
}
