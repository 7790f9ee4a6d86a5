// Report layer: Markdown tables and Vega-Lite plots (SVG + PNG).

export { formatNumber, markdownTable, type TableOptions } from './table.js';
export {
  lineChart, renderSvg, renderPng, writePlot, FONT_STACK,
  type VegaLiteSpec, type LineChartOptions, type AxisSpec, type ScaleKind, type PngOptions,
} from './plot.js';
