// Heatmap plots (Vega-Lite rect marks) of label x expert tables, written as SVG + PNG by src/report/plot.ts.

import { writePlot, type VegaLiteSpec } from '../../report/plot.js';

export interface HeatmapOptions {
  title: string;
  /** Row labels, top to bottom (kept in this order). */
  rows: string[];
  /** Column labels, left to right. */
  cols: string[];
  /** values[row][col]. */
  values: number[][];
  rowTitle: string;
  colTitle: string;
  colorTitle: string;
}

export function heatmapSpec(o: HeatmapOptions): VegaLiteSpec {
  if (o.values.length !== o.rows.length) throw new Error(`heatmap "${o.title}": ${o.values.length} value rows for ${o.rows.length} labels`);
  const data: Record<string, unknown>[] = [];
  o.values.forEach((r, i) => {
    if (r.length !== o.cols.length) throw new Error(`heatmap "${o.title}": row ${i} has ${r.length} values for ${o.cols.length} columns`);
    r.forEach((v, j) => {
      if (!Number.isFinite(v)) throw new Error(`heatmap "${o.title}": value [${i}][${j}] is ${v}`);
      data.push({ row: o.rows[i], col: o.cols[j], value: v });
    });
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: o.title,
    width: Math.max(120, 22 * o.cols.length),
    height: Math.max(80, 13 * o.rows.length),
    data: { values: data },
    mark: 'rect',
    encoding: {
      x: { field: 'col', type: 'ordinal', title: o.colTitle, sort: o.cols },
      y: { field: 'row', type: 'ordinal', title: o.rowTitle, sort: o.rows },
      color: { field: 'value', type: 'quantitative', title: o.colorTitle, scale: { scheme: 'viridis' } },
    },
  };
}

export async function writeHeatmap(pathWithoutExt: string, o: HeatmapOptions): Promise<string> {
  return (await writePlot(pathWithoutExt, heatmapSpec(o))).png;
}
