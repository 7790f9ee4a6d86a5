// Plots: Vega-Lite line-chart specs, rendered to SVG (vega, no canvas) and PNG (resvg), written atomically.

import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { rmSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * A Vega-Lite spec, typed loosely: vega-lite's own TopLevelSpec is a huge union that would leak into our
 * declarations and slow the compiler, and specs here are built by code and checked by vega-lite at render time.
 */
export type VegaLiteSpec = { [key: string]: unknown };

export type ScaleKind = 'linear' | 'log';

export interface AxisSpec {
  field: string;
  title: string;
  scale?: ScaleKind;
}

export interface LineChartOptions {
  title: string;
  x: AxisSpec;
  y: AxisSpec;
  /** Field whose value picks the line colour (one line per value). */
  series: string;
  /** Field whose value picks the dash pattern, e.g. solid vs dashed by method. */
  dash?: string;
  data: Record<string, unknown>[];
  width?: number;
  height?: number;
}

/**
 * Font stack for every chart: browsers viewing the SVG pick the first they have; resvg walks the same list
 * against the system fonts, so PNG text renders wherever any of these (Debian: fonts-dejavu-core) is installed.
 */
export const FONT_STACK = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif';
const FALLBACK_FAMILY = 'DejaVu Sans';

/** A line chart: x/y quantitative, one coloured line per `series` value, optionally dashed by `dash`. */
export function lineChart(opts: LineChartOptions): VegaLiteSpec {
  const { title, x, y, series, dash, data } = opts;
  if (data.length === 0) throw new Error(`lineChart "${title}": no data rows`);
  const fields = [x.field, y.field, series, ...(dash === undefined ? [] : [dash])];
  // Vega-Lite draws nothing (silently) for a misspelled field or a non-positive value on a log axis;
  // fail here instead, naming the row, so a broken report is caught when it is built.
  data.forEach((row, i) => {
    for (const f of fields) {
      if (!(f in row)) throw new Error(`lineChart "${title}": row ${i} has no field "${f}" (has ${Object.keys(row).join(', ')})`);
    }
    for (const axis of [x, y]) {
      const v = row[axis.field];
      if (v === null) continue; // a gap in the line
      if (typeof v !== 'number') throw new Error(`lineChart "${title}": row ${i} field "${axis.field}" is ${typeof v}, expected a number`);
      if (axis.scale === 'log' && !(v > 0)) throw new Error(`lineChart "${title}": row ${i} field "${axis.field}" is ${v}, but its axis is log-scaled`);
    }
  });
  const axisEncoding = (a: AxisSpec): Record<string, unknown> => ({
    field: a.field,
    type: 'quantitative',
    title: a.title,
    scale: a.scale === 'log' ? { type: 'log' } : { zero: false },
  });
  const encoding: Record<string, unknown> = {
    x: axisEncoding(x),
    y: axisEncoding(y),
    color: { field: series, type: 'nominal', title: series },
  };
  if (dash !== undefined) encoding.strokeDash = { field: dash, type: 'nominal', title: dash };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: opts.width ?? 480,
    height: opts.height ?? 300,
    data: { values: data },
    mark: { type: 'line', strokeWidth: 2 },
    encoding,
  };
}

/** Defaults merged under every spec's own config. */
const BASE_CONFIG = {
  font: FONT_STACK,
  // Without canvas vega estimates text widths generously, so the default limits would cut legend labels short.
  legend: { labelLimit: 0 },
  axis: { labelLimit: 0 },
};

/** Compile a Vega-Lite spec and render it to an SVG string with vega's headless (canvas-free) renderer. */
export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  // Loaded on first use: vega costs ~0.5 s to import, which `import 'moe-ts'` should not pay.
  const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
  let vgSpec;
  try {
    vgSpec = vl.compile(spec as unknown as Parameters<typeof vl.compile>[0], { config: BASE_CONFIG }).spec;
  } catch (e) {
    throw new Error(`renderSvg: invalid Vega-Lite spec: ${(e as Error).message}`, { cause: e });
  }
  try {
    const view = new vega.View(vega.parse(vgSpec), { renderer: 'none' });
    const svg = await view.toSVG();
    view.finalize();
    return svg;
  } catch (e) {
    throw new Error(`renderSvg: vega could not render the spec: ${(e as Error).message}`, { cause: e });
  }
}

type ResvgModule = typeof import('@resvg/resvg-js');
let resvgModule: ResvgModule | undefined;

function resvg(): ResvgModule {
  // Lazy and synchronous: the native binding only loads when a PNG is wanted, and renderPng stays sync.
  resvgModule ??= createRequire(import.meta.url)('@resvg/resvg-js') as ResvgModule;
  return resvgModule;
}

export interface PngOptions {
  /** Output width in pixels; height follows the aspect ratio. Default: twice the SVG's size, for sharp text. */
  width?: number;
}

/** Rasterise an SVG to PNG bytes with resvg, using the system fonts. */
export function renderPng(svg: string, opts: PngOptions = {}): Uint8Array {
  const { Resvg } = resvg();
  const r = new Resvg(svg, {
    fitTo: opts.width === undefined ? { mode: 'zoom', value: 2 } : { mode: 'width', value: opts.width },
    background: 'white',
    // The generic 'sans-serif' at the end of FONT_STACK maps to resvg's sansSerifFamily, which defaults to
    // Arial; point it at a font Debian ships so text never silently disappears.
    font: { loadSystemFonts: true, defaultFontFamily: FALLBACK_FAMILY, sansSerifFamily: FALLBACK_FAMILY },
    logLevel: 'off',
  });
  return new Uint8Array(r.render().asPng());
}

/**
 * Render `spec` and write `<base>.svg` and `<base>.png`. Both are rendered before anything touches the disk,
 * and each file is written to a temp file beside it and renamed, so readers never see a partial plot and a
 * failure leaves no files behind.
 */
export async function writePlot(pathWithoutExt: string, spec: VegaLiteSpec, png: PngOptions = {}): Promise<{ svg: string; png: string }> {
  const svg = await renderSvg(spec);
  const pngBytes = renderPng(svg, png);
  const out = { svg: `${pathWithoutExt}.svg`, png: `${pathWithoutExt}.png` };
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = (p: string) => join(dirname(p), `.${basename(p)}.${tag}.tmp`);
  const staged: [string, string][] = [];
  try {
    for (const [path, bytes] of [[out.svg, svg], [out.png, pngBytes]] as const) {
      const t = tmp(path);
      staged.push([t, path]);
      writeFileSync(t, bytes);
    }
    for (const [t, path] of staged) renameSync(t, path);
  } catch (e) {
    for (const [t] of staged) rmSync(t, { force: true });
    throw e;
  }
  return out;
}
