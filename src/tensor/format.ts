// Tensor values as text, in PyTorch's layout: `tensor([[ 0.1000, -2.0000], ...])`, elided past 1000 elements.
//
// The rules follow torch's printing (torch/_tensor_str.py, default print options): one format and
// width for every shown element; floats whose shown values are all whole print as `1.`; otherwise
// 4 decimals, or scientific notation when the shown magnitudes span more than 1000x or leave
// [1e-4, 1e8); rows wrap at 80 columns; tensors of more than 1000 elements show the first and last
// 3 entries of every longer dimension around `...`.

import type { DType, TypedArray } from './dtype.js';

export interface FormatOptions {
  /** Decimal places (torch: 4). */
  precision?: number;
  /** Elements above which a tensor is summarised (torch: 1000). */
  threshold?: number;
  /** Entries kept at each end of a summarised dimension (torch: 3). */
  edgeItems?: number;
  /** Columns before a row wraps (torch: 80). */
  lineWidth?: number;
}

interface Opts {
  precision: number;
  threshold: number;
  edgeItems: number;
  lineWidth: number;
}

/** Python's '{:.Ne}': a two-digit exponent at least ('1.0000e+03', not JavaScript's '1.0000e+3'). */
function sci(v: number, precision: number): string {
  const s = v.toExponential(precision);
  return s.replace(/e([+-])(\d)$/, 'e$10$2');
}

/** One formatter for all the shown values, so that columns line up. */
function makeFormatter(values: number[], dtype: DType, o: Opts): { fmt: (v: number) => string; width: number } {
  let fmt: (v: number) => string;
  if (dtype === 'int32') {
    fmt = (v) => String(v);
  } else {
    const finite = values.filter((v) => Number.isFinite(v));
    const nonzero = finite.filter((v) => v !== 0).map(Math.abs);
    const special = (v: number): string | null => (Number.isNaN(v) ? 'nan' : v === Infinity ? 'inf' : v === -Infinity ? '-inf' : null);
    if (finite.every((v) => Number.isInteger(v))) {
      const max = nonzero.length > 0 ? Math.max(...nonzero) : 0;
      const min = nonzero.length > 0 ? Math.min(...nonzero) : 0;
      if (nonzero.length > 0 && (max / min > 1000 || max > 1e8)) fmt = (v) => special(v) ?? sci(v, o.precision);
      else fmt = (v) => special(v) ?? `${v.toFixed(0)}.`;
    } else {
      const max = Math.max(...nonzero);
      const min = Math.min(...nonzero);
      if (max / min > 1000 || max > 1e8 || min < 1e-4) fmt = (v) => special(v) ?? sci(v, o.precision);
      else fmt = (v) => special(v) ?? v.toFixed(o.precision);
    }
  }
  const width = values.reduce((w, v) => Math.max(w, fmt(v).length), 0);
  return { fmt: (v) => fmt(v).padStart(width), width };
}

/** The indices shown of a dimension of size n: all, or when summarising the first and last `edge` around a -1 (the `...`). */
function shownIndices(n: number, summarize: boolean, edge: number): number[] {
  if (!(summarize && n > 2 * edge)) return [...Array(n).keys()];
  return [...Array(edge).keys(), -1, ...Array.from({ length: edge }, (_, i) => n - edge + i)];
}

/** The values that will be shown (every element, or the edges of each long dimension when summarising). */
function shownValues(data: TypedArray, shape: readonly number[], summarize: boolean, edge: number): number[] {
  const out: number[] = [];
  const walk = (dim: number, offset: number, stride: number): void => {
    const n = shape[dim]!;
    const inner = stride / n;
    for (const i of shownIndices(n, summarize, edge)) {
      if (i < 0) continue;
      if (dim === shape.length - 1) out.push(data[offset + i]!);
      else walk(dim + 1, offset + i * inner, inner);
    }
  };
  if (shape.length === 0) return [data[0]!];
  walk(0, 0, data.length);
  return out;
}

/** `tensor(...)` text of a tensor's values (without the shape/dtype suffix). */
export function formatValues(data: TypedArray, shape: readonly number[], dtype: DType, options: FormatOptions = {}): string {
  const o: Opts = { precision: options.precision ?? 4, threshold: options.threshold ?? 1000, edgeItems: options.edgeItems ?? 3, lineWidth: options.lineWidth ?? 80 };
  const prefix = 'tensor(';
  if (data.length === 0) return `${prefix}[])`;
  const summarize = data.length > o.threshold;
  const { fmt, width } = makeFormatter(shownValues(data, shape, summarize, o.edgeItems), dtype, o);
  if (shape.length === 0) return `${prefix}${fmt(data[0]!).trim()})`;

  const vector = (offset: number, n: number, indent: number): string => {
    const items = shownIndices(n, summarize, o.edgeItems).map((i) => (i < 0 ? ' ...' : fmt(data[offset + i]!)));
    const perLine = Math.max(1, Math.floor((o.lineWidth - indent) / (width + 2)));
    const lines: string[] = [];
    for (let i = 0; i < items.length; i += perLine) lines.push(items.slice(i, i + perLine).join(', '));
    return `[${lines.join(`,\n${' '.repeat(indent + 1)}`)}]`;
  };
  const block = (dim: number, offset: number, stride: number, indent: number): string => {
    const n = shape[dim]!;
    if (dim === shape.length - 1) return vector(offset, n, indent);
    const inner = stride / n;
    const rest = shape.length - dim;
    const part = (i: number): string => block(dim + 1, offset + i * inner, inner, indent + 1);
    const parts = shownIndices(n, summarize, o.edgeItems).map((i) => (i < 0 ? '...' : part(i)));
    return `[${parts.join(`,${'\n'.repeat(rest - 1)}${' '.repeat(indent + 1)}`)}]`;
  };
  return `${prefix}${block(0, 0, data.length, prefix.length)})`;
}
