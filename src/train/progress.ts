// Progress display for long work: a live bar on a terminal (one line redrawn in place), plain
// lines at a steady pace when the output is a file or a pipe.

export type ProgressFields = Record<string, string | number>;

export interface ProgressOptions {
  /** Where to write (default process.stderr). */
  stream?: NodeJS.WriteStream;
  /** Force bar or plain mode (default: bar when the stream is a TTY). */
  tty?: boolean;
  /** Plain mode: at most one line per this many milliseconds (default 10 s), plus the last. */
  plainEveryMs?: number;
  label?: string;
}

function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function formatFields(f: ProgressFields): string {
  return Object.entries(f).map(([k, v]) => `${k} ${typeof v === 'number' ? (Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v * 100) / 100) : v.toFixed(4)) : v}`).join('  ');
}

export class Progress {
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly every: number;
  private readonly start = performance.now();
  private lastPlain = -Infinity;
  private drawn = false;

  constructor(private total: number, private readonly opts: ProgressOptions = {}) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? Boolean(this.stream.isTTY);
    this.every = opts.plainEveryMs ?? 10000;
  }

  /** Elapsed seconds. */
  elapsed(): number {
    return (performance.now() - this.start) / 1000;
  }

  /** Reports `done` of `total` units with fields such as loss and accuracy. startedAt: units already done before this run (resume). */
  update(done: number, fields: ProgressFields = {}, startedAt = 0): void {
    const el = this.elapsed();
    const rate = (done - startedAt) / Math.max(el, 1e-9);
    const eta = rate > 0 ? (this.total - done) / rate : NaN;
    const pct = this.total > 0 ? (100 * done) / this.total : 100;
    const head = `${this.opts.label ? `${this.opts.label} ` : ''}${done}/${this.total} ${pct.toFixed(1)}%  ${formatDuration(el)} eta ${formatDuration(eta)}`;
    if (this.tty) {
      const width = 24;
      const filled = Math.round((width * Math.min(done, this.total)) / Math.max(this.total, 1));
      const line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${head}  ${formatFields(fields)}`;
      const cols = this.stream.columns ?? 160;
      this.stream.write(`\r\x1b[2K${line.slice(0, cols - 1)}`);
      this.drawn = true;
    } else if (performance.now() - this.lastPlain >= this.every || done >= this.total) {
      this.lastPlain = performance.now();
      this.stream.write(`${head}  ${formatFields(fields)}\n`);
    }
  }

  /** Prints a line without breaking the bar. */
  log(line: string): void {
    if (this.tty && this.drawn) this.stream.write('\r\x1b[2K');
    this.stream.write(`${line}\n`);
    this.drawn = false;
  }

  done(): void {
    if (this.tty && this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
