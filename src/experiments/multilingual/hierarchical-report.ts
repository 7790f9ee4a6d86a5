// results.md and PNG plots of the hierarchical-vs-flat part of the multilingual study.

import { join } from 'node:path';
import { lineChart, writePlot } from '../../report/plot.js';
import { formatNumber, markdownTable } from '../../report/table.js';
import { formatSeconds, meanStd } from '../common.js';
import type { HierarchicalResult } from './hierarchical.js';

const f = (x: number, digits = 4) => formatNumber(x, digits);
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Published configurations (d, E, k, matrices per expert, expert width) for the router-share table. */
export const REFERENCE_MODELS = [
  { name: 'Switch-Base-128', d: 768, E: 128, k: 1, m: 2, dFF: 3072 },
  { name: 'Mixtral 8x7B', d: 4096, E: 8, k: 2, m: 3, dFF: 14336 },
  { name: 'DeepSeek-V3 (routed)', d: 7168, E: 256, k: 8, m: 3, dFF: 2048 },
  { name: 'Qwen3-30B-A3B', d: 2048, E: 128, k: 8, m: 3, dFF: 768 },
] as const;

export function hierarchicalMarkdown(r: HierarchicalResult, wallSeconds: number): string {
  const c = r.config;
  const t = c.train;
  const lines: string[] = [];
  lines.push('# Multilingual study, part 3: hierarchical vs flat routing', '');
  lines.push(`Command: \`${r.command}\``, '');
  lines.push(`Training time (sum over cells): ${formatSeconds(r.seconds)}; this invocation: ${formatSeconds(wallSeconds)} (resumed cells and a saved timing.json are not redone). Load average at the end: ${r.loadavg.map((x) => x.toFixed(2)).join(', ')}. The machine (2 vCPUs) is shared with other engineers: times are medians of interleaved rounds, and ratios within a round are what to read.`, '');
  lines.push(`Setup: byte LM, d = ${c.dModel}, ${c.layers} blocks, E = ${c.numExperts} experts of width ${c.dFF} per block, k = ${c.k}. Variants: flat top-k (gate [E, d]); hierarchical, G = ${c.groups} learned clusters of ${c.numExperts / c.groups} experts (cluster gate [G, d] + expert gate [E, d]: ${c.groups} x d more parameters per block, otherwise equal); hierarchical-family, the same router supervised in training by each window's language family (family index mod G; several families share a cluster), routing by its own cluster gate in evaluation. ${t.steps} steps of ${t.batchSize} x ${t.seqLen} bytes, Adam, warmup-cosine peak ${t.lr}; seeds {${c.seeds.join(', ')}}; ${c.languages.length} languages (low-resource: ${c.lowResource.join(', ') || 'none'}); validation loss in nats per byte over up to ${t.evalWindowsPerLanguage} windows per language.`, '');

  lines.push('## Quality after equal training', '');
  const variants = Object.keys(c.variants);
  lines.push(markdownTable(['variant', 'mean val loss', 'std over seeds', 'gap vs flat', 'gap, high-resource', 'gap, low-resource', 'better', 'worse', 'overlap'], variants.map((v) => {
    const s = meanStd(r.cells.filter((x) => x.name === v).map((x) => x.meanVal));
    const g = r.gaps.filter((x) => x.variant === v);
    const mg = (xs: typeof g) => (xs.length ? f(xs.reduce((a, x) => a + x.gap, 0) / xs.length, 3) : '-');
    const cnt = (w: string) => (v === 'flat' ? '-' : g.filter((x) => x.verdict === w).length);
    return [v, f(s.mean), f(s.std, 2), v === 'flat' ? '-' : mg(g), v === 'flat' ? '-' : mg(g.filter((x) => x.resource === 'high')), v === 'flat' ? '-' : mg(g.filter((x) => x.resource === 'low')), cnt('better'), cnt('worse'), cnt('overlap')];
  })));
  lines.push('', 'gap = mean loss of the variant - mean loss of flat (> 0: worse than flat). A language is "better"/"worse" when every seed of the variant is below/above every seed of flat.', '');

  lines.push('## Routing FLOPs', '');
  lines.push('Multiply-adds per token of the forward pass at the training window, summed over blocks (flops.ts). The router scores d E (flat) or d (G + E/G) (hierarchical).', '');
  const flatTotal = r.macs['flat']!.total;
  lines.push(markdownTable(['variant', 'router', 'experts', 'attention', 'head', 'total', 'router share', 'flat total / total'], variants.map((v) => {
    const m = r.macs[v]!;
    return [v, m.router, m.ffn, m.attentionProj + m.attentionMix, m.head, m.total, pct(m.router / m.total), f(flatTotal / m.total, 3)];
  })));
  const share = r.shareGrid.find((x) => x.E === c.numExperts && x.dFF === c.dFF);
  lines.push('', `Within one MoE layer of this model the router is ${pct(c.numExperts / (c.numExperts + 2 * c.k * c.dFF))} of the multiply-adds flat and ${pct((c.groups + c.numExperts / c.groups) / (c.groups + c.numExperts / c.groups + 2 * c.k * c.dFF))} hierarchical${share ? '' : ''}.`, '');

  if (r.timing) {
    const tm = r.timing;
    lines.push('## Measured inference time', '');
    lines.push(`Microseconds per token, median (minimum) over ${tm.request.rounds} rounds after ${tm.request.warmupRounds} warm-up rounds, flat and hierarchical alternating within each round; random weights (seed 0). ${tm.backend} backend, ${tm.cpus} x ${tm.cpu}; ${r.timingLocked ? `run under \`flock ${r.timingLocked}\`` : 'run without a lock'}; load average before ${tm.loadavgBefore.map((x) => x.toFixed(2)).join(', ')}, after ${tm.loadavgAfter.map((x) => x.toFixed(2)).join(', ')} (shared machine: other engineers' jobs ran at the same time).`, '');
    const caseDoc: Record<string, string> = {
      routerBatch: `router alone, ${tm.request.batchSize * tm.request.seqLen} tokens`,
      routerDecode: 'router alone, 1 token',
      modelBatch: `whole model forward, ${tm.request.batchSize} x ${tm.request.seqLen}`,
      modelDecode: `whole model, KV-cached decoding of ${tm.request.decodeTokens} bytes`,
    };
    lines.push(markdownTable(['case', 'flat', 'hierarchical', 'hierarchical / flat (medians)'], Object.keys(tm.timings['flat']!).map((k) => {
      const a = tm.timings['flat']![k]!;
      const b = tm.timings['hierarchical']![k]!;
      return [caseDoc[k] ?? k, `${f(a.median, 3)} (${f(a.min, 3)})`, `${f(b.median, 3)} (${f(b.min, 3)})`, f(b.median / a.median, 3)];
    })));
    lines.push('');
  }

  lines.push('## When could two-level routing make inference 40% faster?', '');
  lines.push('If time followed multiply-adds, replacing d E by d (G + E/G) in an MoE layer speeds the layer up by (E + k m dFF) / (G + E/G + k m dFF) (m = matrices per expert; d cancels). 1.4x needs the flat router to be over 29% of the layer and most of it saved. The bound below (G = the divisor of E nearest sqrt(E), k and m as in this model) is for the MoE layer alone; attention and the head only dilute it.', '');
  const dffs = [...new Set(r.shareGrid.map((x) => x.dFF))];
  lines.push(markdownTable(['E \\ expert width', ...dffs.map(String)], [...new Set(r.shareGrid.map((x) => x.E))].map((E) =>
    [E, ...dffs.map((d) => { const x = r.shareGrid.find((y) => y.E === E && y.dFF === d)!; return `${f(x.maxLayerSpeedup, 3)}x (router ${pct(x.flatShare)})`; })])));
  lines.push('', 'Published models (router share of the MoE layer flat, and the bound with G = sqrt(E)):', '');
  lines.push(markdownTable(['model', 'd', 'E', 'k', 'expert width', 'router share', 'bound'], REFERENCE_MODELS.map((m) => {
    const flat = m.E / (m.E + m.k * m.m * m.dFF);
    const G = Math.round(Math.sqrt(m.E));
    return [m.name, m.d, m.E, m.k, m.dFF, pct(flat), `${f((m.E + m.k * m.m * m.dFF) / (G + m.E / G + m.k * m.m * m.dFF), 4)}x`];
  })));

  lines.push('', '## Per language', '');
  lines.push(markdownTable(['language', 'family', 'resource', 'flat (seeds)', ...variants.filter((v) => v !== 'flat').flatMap((v) => [`${v} (seeds)`, 'gap'])],
    c.languages.map((code) => {
      const gs = r.gaps.filter((g) => g.code === code);
      const g0 = gs[0];
      return [code, g0?.family ?? '', g0?.resource ?? '', g0 ? g0.flat.map((v) => v.toFixed(3)).join(' / ') : '', ...gs.flatMap((g) => [g.other.map((v) => v.toFixed(3)).join(' / '), f(g.gap, 3)])];
    })));
  lines.push('', '## Cells', '');
  lines.push(markdownTable(['cell', 'seed', 'active', 'total', 'router MACs / token', 'final train loss', 'mean val loss', 'train s'],
    r.cells.map((x) => [x.name, x.seed, x.activeParams, x.totalParams, x.routerMacsPerToken, f(x.finalTrainLoss), f(x.meanVal), x.trainSeconds.toFixed(1)])));
  const fams = [...new Set(r.gaps.map((g) => g.family))];
  lines.push('', `Plots: speedup-bound.png (the FLOP bound above against E), gap-by-family.png (families: ${fams.map((x, i) => `${i} ${x}`).join(', ')}).`, '');
  return `${lines.join('\n')}\n`;
}

export async function hierarchicalPlots(r: HierarchicalResult, out: string): Promise<void> {
  await writePlot(join(out, 'speedup-bound'), lineChart({
    title: 'MoE-layer speedup bound of two-level routing if time followed FLOPs', series: 'expert width',
    x: { field: 'E', title: 'experts E', scale: 'log' }, y: { field: 'bound', title: 'flat / hierarchical multiply-adds' },
    data: r.shareGrid.map((x) => ({ E: x.E, 'expert width': String(x.dFF).padStart(4, ' '), bound: x.maxLayerSpeedup })),
  }));
  const families = [...new Set(r.gaps.map((g) => g.family))];
  const rows = families.flatMap((fam, i) => [...new Set(r.gaps.map((g) => g.variant))].map((v) => {
    const g = r.gaps.filter((x) => x.family === fam && x.variant === v);
    return { family: i, variant: v, gap: g.reduce((s, x) => s + x.gap, 0) / g.length };
  }));
  if (rows.length > 0) {
    await writePlot(join(out, 'gap-by-family'), lineChart({
      title: 'loss - flat loss per family (> 0: worse than flat; indices in results.md)', series: 'variant',
      x: { field: 'family', title: 'family (index)' }, y: { field: 'gap', title: 'gap (nats/byte)' }, data: rows, width: 640,
    }));
  }
}
