// Follows a growing metrics.jsonl by polling its size: new complete lines as records, a reset when the file is replaced.

import { open, stat } from 'node:fs/promises';
import { parseLines, splitComplete, type MetricsRecord } from './runs.js';

/** Where a reader stands in a log: the file's inode (replacement changes it) and the bytes consumed, always at a line boundary. */
export interface LogPosition { ino: number; offset: number }

export interface TailOptions {
  /** Milliseconds between polls (default 250). */
  intervalMs?: number;
  /** Bytes read per poll at most (default 1 MiB): a huge backlog arrives over several polls instead of one big buffer. */
  chunkBytes?: number;
  /** An unterminated line longer than this is dropped as bad (default 1 MiB), so a log without newlines cannot grow memory. */
  maxLineBytes?: number;
}

export interface TailHandlers {
  records(records: MetricsRecord[], position: LogPosition): void;
  /** The file was replaced or truncated: everything read so far is void; records follow from its start. */
  reset(): void;
  /** Lines that were not JSON records (skipped). */
  bad?(count: number): void;
}

export class MetricsTail {
  private ino: number;
  private offset: number;
  private rest: Buffer = Buffer.alloc(0);
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly intervalMs: number;
  private readonly chunkBytes: number;
  private readonly maxLineBytes: number;

  constructor(private readonly file: string, from: LogPosition | null, private readonly on: TailHandlers, opts: TailOptions = {}) {
    this.ino = from?.ino ?? -1;
    this.offset = from?.offset ?? 0;
    this.intervalMs = opts.intervalMs ?? 250;
    this.chunkBytes = opts.chunkBytes ?? 1 << 20;
    this.maxLineBytes = opts.maxLineBytes ?? 1 << 20;
  }

  start(): void {
    if (this.timer || this.stopped) return;
    const tick = (): void => {
      this.poll().catch(() => { /* a transient error (file gone mid-replace) is retried at the next poll */ }).finally(() => {
        if (!this.stopped) this.timer = setTimeout(tick, this.intervalMs);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  /** Bytes of the file consumed so far (complete lines plus the unterminated rest held back). */
  get bytesRead(): number {
    return this.offset;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** One poll: notices replacement, reads what was appended (at most chunkBytes), hands over complete lines. */
  async poll(): Promise<void> {
    let st;
    try {
      st = await stat(this.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // not written yet, or between unlink and rename
      throw e;
    }
    if (this.ino === -1) this.ino = st.ino;
    if (st.ino !== this.ino || st.size < this.offset) {
      // replaced (an atomic rewrite, moe train --force, a resume cutting the log back) or truncated
      this.ino = st.ino;
      this.offset = 0;
      this.rest = Buffer.alloc(0);
      if (!this.stopped) this.on.reset();
    }
    if (st.size === this.offset) return;
    const want = Math.min(st.size - this.offset, this.chunkBytes);
    const buf = Buffer.alloc(want);
    const fh = await open(this.file, 'r');
    let got: number;
    try {
      ({ bytesRead: got } = await fh.read(buf, 0, want, this.offset));
    } finally {
      await fh.close();
    }
    this.offset += got;
    // split on the byte '\n' before decoding, so a multi-byte character cut by the read stays whole in rest
    const data = this.rest.length > 0 ? Buffer.concat([this.rest, buf.subarray(0, got)]) : buf.subarray(0, got);
    const end = data.lastIndexOf(0x0a);
    let bad = 0;
    if (end < 0) {
      this.rest = Buffer.from(data);
    } else {
      const { lines } = splitComplete(data.subarray(0, end + 1).toString('utf8'));
      this.rest = Buffer.from(data.subarray(end + 1));
      const parsed = parseLines(lines);
      bad += parsed.bad;
      if (parsed.records.length > 0 && !this.stopped) this.on.records(parsed.records, { ino: this.ino, offset: this.offset - this.rest.length });
    }
    if (this.rest.length > this.maxLineBytes) {
      this.rest = Buffer.alloc(0);
      bad++;
    }
    if (bad > 0 && !this.stopped) this.on.bad?.(bad);
  }
}

/** Reads the whole log as it is now: its records and the position just after the last complete line. */
export async function readLog(file: string): Promise<{ records: MetricsRecord[]; bad: number; position: LogPosition }> {
  const records: MetricsRecord[] = [];
  let bad = 0;
  let position: LogPosition = { ino: -1, offset: 0 };
  const tail = new MetricsTail(file, null, {
    records: (r, p) => { records.push(...r); position = p; },
    reset: () => { records.length = 0; },
    bad: (n) => { bad += n; },
  });
  // poll until the size stops moving: each poll reads at most one chunk
  for (;;) {
    let size: number;
    try {
      size = (await stat(file)).size;
    } catch {
      return { records, bad, position };
    }
    const before = tail.bytesRead;
    if (before >= size) break;
    await tail.poll();
    if (tail.bytesRead === before) break;
  }
  if (position.ino === -1) {
    try { position = { ino: (await stat(file)).ino, offset: 0 }; } catch { /* no log yet */ }
  }
  tail.stop();
  return { records, bad, position };
}
