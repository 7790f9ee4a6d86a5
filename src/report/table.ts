// Markdown tables and number formatting for reports.

/**
 * A number as a table cell: integers exactly, others to `digits` significant digits (trailing zeros kept so
 * a column lines up), exponent form only for magnitudes where fixed notation would hide the digits.
 */
export function formatNumber(x: number, digits = 4): string {
  if (!Number.isInteger(digits) || digits < 1 || digits > 21) throw new Error(`formatNumber: digits must be an integer in [1, 21], got ${digits}`);
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (Number.isInteger(x) && Math.abs(x) < 1e15) return String(x);
  const a = Math.abs(x);
  if (a < 1e-4 || a >= 1e15) return x.toExponential(digits - 1);
  // toPrecision switches to exponent form once the integer part outgrows `digits`; whole numbers read better.
  if (a >= 10 ** digits) return Math.round(x).toString();
  return x.toPrecision(digits);
}

export interface TableOptions {
  /** Per-column alignment; default: right for columns whose cells are all numbers, left otherwise. */
  align?: ('l' | 'r')[];
  /** Significant digits for number cells (see formatNumber). */
  digits?: number;
}

/** Cell text that cannot break the table: pipes escaped, line breaks flattened. */
function cellText(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

/** A GitHub-flavoured Markdown table, padded so the source reads as a table too. */
export function markdownTable(header: string[], rows: (string | number)[][], opts: TableOptions = {}): string {
  const n = header.length;
  if (n === 0) throw new Error('markdownTable: header is empty');
  rows.forEach((r, i) => {
    if (r.length !== n) throw new Error(`markdownTable: row ${i} has ${r.length} cells, header has ${n}`);
  });
  if (opts.align !== undefined && opts.align.length !== n) {
    throw new Error(`markdownTable: align has ${opts.align.length} entries, header has ${n}`);
  }
  const align = opts.align ?? header.map((_, c) => (rows.length > 0 && rows.every((r) => typeof r[c] === 'number') ? 'r' : 'l'));
  const body = rows.map((r) => r.map((v) => cellText(typeof v === 'number' ? formatNumber(v, opts.digits) : v)));
  const head = header.map(cellText);
  // Width 3 is the shortest separator ('---' / '--:') Markdown accepts.
  const width = head.map((h, c) => Math.max(3, h.length, ...body.map((r) => r[c].length)));
  const pad = (s: string, c: number) => (align[c] === 'r' ? s.padStart(width[c]) : s.padEnd(width[c]));
  const line = (cells: string[]) => `| ${cells.map(pad).join(' | ')} |`;
  const sep = `| ${width.map((w, c) => (align[c] === 'r' ? '-'.repeat(w - 1) + ':' : '-'.repeat(w))).join(' | ')} |`;
  return [line(head), sep, ...body.map(line)].join('\n') + '\n';
}
