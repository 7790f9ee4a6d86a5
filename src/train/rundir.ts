// Run-directory rules: one writer at a time (a lock file), no silent reuse of an old run, log repair on resume.
//
// A run directory holds config.json, metrics.jsonl, checkpoint/ and, while a process trains into it,
// the lock file .moe.lock ({ pid, host, started, ... }). Why a hand-written lock: the training loop is
// synchronous and blocks the event loop for minutes, so mtime-refreshing locks (proper-lockfile and
// kin) would be judged stale mid-run; liveness here is the holder's pid (with its start time, so a
// recycled pid is not mistaken for the holder), which needs no heartbeat. A killed process leaves
// its lock behind; the next writer sees the pid is gone and takes the lock over, saying so.

import { accessSync, constants, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fsErrorMessage, tempSiblingPath, writeFileAtomic, writeFileSynced } from '../io/atomic.js';

export const LOCK_NAME = '.moe.lock';
/** Held for the few microseconds of taking over a stale lock, so two takers cannot remove each other's fresh lock. */
const BREAKER_SUFFIX = '.break';
/** The files a run writes; --force removes exactly these. */
export const RUN_FILES = ['config.json', 'metrics.jsonl', 'checkpoint'] as const;

export interface LockRecord {
  pid: number;
  host: string;
  /** ISO time the lock was taken. */
  started: string;
  /** The command line, so the refusal can say what holds the directory. */
  command: string;
  /** Linux: boot id and the process's start time in clock ticks (/proc/PID/stat field 22); they tell a recycled pid apart. */
  bootId?: string;
  procStart?: string;
}

function readProcStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may hold spaces and parentheses: count fields after the last ')'
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function readBootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
}

function ownRecord(): LockRecord {
  const bootId = readBootId();
  const procStart = readProcStart(process.pid);
  return {
    pid: process.pid, host: hostname(), started: new Date().toISOString(), command: process.argv.slice(1).join(' '),
    ...(bootId !== undefined ? { bootId } : {}), ...(procStart !== undefined ? { procStart } : {}),
  };
}

/** 'alive', 'dead', or 'unknown' (another host: its pids cannot be checked from here). */
export function holderState(rec: LockRecord): 'alive' | 'dead' | 'unknown' {
  if (rec.host !== hostname()) return 'unknown';
  const bootId = readBootId();
  if (rec.bootId !== undefined && bootId !== undefined && rec.bootId !== bootId) return 'dead';
  try {
    process.kill(rec.pid, 0);
  } catch (e) {
    // EPERM: the process exists but belongs to another user
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return 'dead';
  }
  const start = readProcStart(rec.pid);
  if (rec.procStart !== undefined && start !== undefined && start !== rec.procStart) return 'dead';
  return 'alive';
}

/** Creates `path` holding `text` only if it does not exist; the content appears complete or not at all (link of a synced temp file). */
function createExclusive(path: string, text: string): boolean {
  const tmp = tempSiblingPath(path);
  writeFileSynced(tmp, text);
  try {
    linkSync(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new Error(fsErrorMessage('cannot create the lock file', path, e), { cause: e });
  } finally {
    try { unlinkSync(tmp); } catch { /* already gone */ }
  }
}

type ReadLock = { rec: LockRecord; text: string } | 'missing' | 'unreadable';

function readLock(path: string): ReadLock {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw new Error(fsErrorMessage('cannot read the lock file', path, e), { cause: e });
  }
  try {
    const rec = JSON.parse(text) as LockRecord;
    if (typeof rec.pid !== 'number' || typeof rec.host !== 'string') return 'unreadable';
    return { rec, text };
  } catch {
    return 'unreadable';
  }
}

const sleepMs = (ms: number): void => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); };

const describeHolder = (r: LockRecord): string => `process ${r.pid} on ${r.host}, started ${r.started}${r.command ? ` (${r.command})` : ''}`;

/** Removes the stale lock `seen` if it is still the one in place; false when another process is in the middle of the same. */
function removeStale(path: string, seen: string): boolean {
  const breaker = path + BREAKER_SUFFIX;
  const mine = JSON.stringify(ownRecord());
  if (!createExclusive(breaker, mine)) {
    const b = readLock(breaker);
    if (typeof b === 'object' && holderState(b.rec) === 'dead') {
      try { unlinkSync(breaker); } catch { /* another process removed it */ }
    } else {
      sleepMs(50);
    }
    return false;
  }
  try {
    const now = readLock(path);
    if (typeof now === 'object' && now.text === seen) unlinkSync(path);
    return true;
  } finally {
    try { unlinkSync(breaker); } catch { /* best effort */ }
  }
}

export class RunLock {
  private released = false;
  private readonly onExit = (): void => this.release();

  constructor(readonly path: string, readonly text: string) {
    // a thrown error or process.exit() still frees the directory; signals kill without running JS (see the file comment)
    process.on('exit', this.onExit);
  }

  /** Removes the lock file if it is still this process's. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    process.off('exit', this.onExit);
    const now = readLock(this.path);
    if (typeof now === 'object' && now.text === this.text) {
      try { unlinkSync(this.path); } catch { /* the directory went away */ }
    }
  }
}

/** Takes the run directory's lock, or throws naming the process that holds it. */
export function acquireRunLock(dir: string, log: (line: string) => void = () => {}): RunLock {
  const path = join(dir, LOCK_NAME);
  const text = `${JSON.stringify(ownRecord())}\n`;
  for (let attempt = 0; attempt < 20; attempt++) {
    if (createExclusive(path, text)) return new RunLock(path, text);
    const held = readLock(path);
    if (held === 'missing') continue;
    if (held === 'unreadable') {
      throw new Error(`${dir} is locked by ${path}, which is not a moe lock record (edited by hand?); if no moe process is writing this directory, delete that file`);
    }
    const state = holderState(held.rec);
    if (state === 'alive') {
      throw new Error(`${dir} is in use by ${describeHolder(held.rec)}; only one process may write a run directory. Wait for it to finish, or stop it (kill ${held.rec.pid}), or train into another --out directory`);
    }
    if (state === 'unknown') {
      throw new Error(`${dir} is locked by ${describeHolder(held.rec)}, which cannot be checked from ${hostname()}; if no run is active there, delete ${path}`);
    }
    if (removeStale(path, held.text)) log(`moe: ${dir}: taking over the lock of ${describeHolder(held.rec)}, which is no longer running`);
  }
  throw new Error(`${dir}: could not take the lock ${path}: other processes keep taking it`);
}

/**
 * Makes `dir` ready to be written by this process: it must be a directory (created if missing) and
 * is locked. A new run (fresh = true) refuses a directory that already holds files, unless `force`,
 * which removes the previous run's files (RUN_FILES) and keeps anything else.
 */
export function openRunDir(dir: string, opts: { fresh: boolean; force?: boolean; log?: (line: string) => void }): RunLock {
  const log = opts.log ?? (() => {});
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new Error(`--out ${dir} is an existing file, not a directory; choose a directory for the run`);
  }
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new Error(fsErrorMessage('cannot create the run directory', dir, e), { cause: e });
  }
  try {
    accessSync(dir, constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'EROFS' ? 'it is on a read-only file system' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (e as Error).message;
    throw new Error(`cannot write into the run directory ${dir}: ${why} (${code}); choose another --out directory`, { cause: e });
  }
  const lock = acquireRunLock(dir, log);
  try {
    if (opts.fresh) {
      const entries = readdirSync(dir).filter((n) => n !== LOCK_NAME && n !== LOCK_NAME + BREAKER_SUFFIX);
      if (entries.length > 0 && !opts.force) {
        const hasRun = existsSync(join(dir, 'checkpoint', 'state.json')) || existsSync(join(dir, 'metrics.jsonl'));
        const shown = entries.slice(0, 5).join(', ') + (entries.length > 5 ? `, ... (${entries.length} entries)` : '');
        throw new Error(`${dir} is not empty (${shown})${hasRun ? ': it holds an earlier run' : ''}. A new run never overwrites one: `
          + `continue it with --resume ${dir}, replace it with --force, or choose another --out directory`);
      }
      const removed = RUN_FILES.filter((f) => existsSync(join(dir, f)));
      for (const f of removed) rmSync(join(dir, f), { recursive: true, force: true });
      if (removed.length > 0) log(`moe: --force: removed the previous run's ${removed.join(', ')} from ${dir}`);
    }
    return lock;
  } catch (e) {
    lock.release();
    throw e;
  }
}

export interface LogCut {
  /** The kept lines, each a complete record, newline-terminated. */
  text: string;
  kept: number;
  /** Records logged after the checkpoint step (they will be logged again as training repeats those steps). */
  after: number;
  /** Lines that are not a complete JSON record (a write cut short by a kill or a full disk). */
  torn: number;
  /** Earlier copies of a record logged again (same type, split and step; the last copy is kept). */
  duplicates: number;
}

/**
 * The records of a metrics log that a run resumed from a checkpoint at `step` keeps: complete records
 * with step <= `step`, in order; for a record logged twice (by an older, unrepaired resume) the later copy.
 */
export function cutMetricsLog(text: string, step: number): LogCut {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const keep: Array<{ line: string; key: string | null }> = [];
  let after = 0;
  let torn = 0;
  for (const line of lines) {
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      torn++;
      continue;
    }
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) { torn++; continue; }
    const r = rec as Record<string, unknown>;
    if (typeof r['step'] === 'number' && r['step'] > step) { after++; continue; }
    keep.push({ line, key: typeof r['step'] === 'number' ? `${String(r['type'])}/${String(r['split'])}/${r['step']}` : null });
  }
  const lastIndex = new Map<string, number>();
  keep.forEach((k, i) => { if (k.key !== null) lastIndex.set(k.key, i); });
  const final = keep.filter((k, i) => k.key === null || lastIndex.get(k.key) === i);
  return {
    text: final.map((k) => `${k.line}\n`).join(''), kept: final.length, after, torn, duplicates: keep.length - final.length,
  };
}

function readLog(path: string): string | null {
  try {
    // a device or fifo (a link to /dev/full, say) would be read without end
    if (!statSync(path).isFile()) throw new Error(`the metrics log ${path} is not a regular file`);
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(fsErrorMessage('cannot read the metrics log', path, e), { cause: e });
  }
}

const describeCut = (c: LogCut, step: number): string => [
  c.after > 0 ? `${c.after} record(s) after the checkpoint's step ${step}` : '',
  c.torn > 0 ? `${c.torn} incomplete line(s)` : '',
  c.duplicates > 0 ? `${c.duplicates} duplicate record(s)` : '',
].filter(Boolean).join(', ');

/**
 * Cuts `path` back to what the checkpoint at `step` covers (see cutMetricsLog), atomically, so that
 * the resumed run appends after a clean log; returns a sentence on what was removed, or null if nothing was.
 */
export function repairMetricsLog(path: string, step: number): string | null {
  const text = readLog(path);
  if (text === null) return null;
  const cut = cutMetricsLog(text, step);
  if (cut.text === text) return null;
  writeFileAtomic(path, cut.text);
  return `${path}: removed ${describeCut(cut, step)}`;
}

/** Writes the part of `from` (a metrics log, possibly missing) that the checkpoint at `step` covers to `to`: a run continued in a new directory. */
export function copyMetricsLog(from: string, to: string, step: number): void {
  const text = readLog(from);
  writeFileAtomic(to, text === null ? '' : cutMetricsLog(text, step).text);
}

/** Whether the log holds a test evaluation at `step` (a finished run logs one after its last checkpoint). */
export function hasTestRecord(path: string, step: number): boolean {
  const text = readLog(path);
  if (text === null) return false;
  return text.split('\n').some((l) => {
    try {
      const r = JSON.parse(l) as Record<string, unknown>;
      return r['type'] === 'eval' && r['split'] === 'test' && r['step'] === step;
    } catch {
      return false;
    }
  });
}

/**
 * Where a --resume argument points. RUN (a run directory) and RUN/checkpoint both mean the run RUN;
 * a checkpoint directory outside a run (copied on its own) has no run directory.
 */
export function resolveResume(arg: string): { runDir: string | null; checkpointDir: string } {
  const dir = resolve(arg);
  if (existsSync(join(dir, 'checkpoint', 'state.json'))) return { runDir: arg, checkpointDir: join(arg, 'checkpoint') };
  if (existsSync(join(dir, 'state.json'))) {
    const parent = resolve(dir, '..');
    const inRun = basename(dir) === 'checkpoint' && (existsSync(join(parent, 'metrics.jsonl')) || existsSync(join(parent, 'config.json')));
    return { runDir: inRun ? join(arg, '..') : null, checkpointDir: arg };
  }
  if (existsSync(join(dir, 'metrics.jsonl')) || existsSync(join(dir, 'config.json'))) {
    throw new Error(`--resume ${arg}: this run has no checkpoint yet (one is written at the end of every epoch; it stopped before the first). Start it again with --force`);
  }
  throw new Error(`--resume ${arg}: no checkpoint here (neither state.json nor checkpoint/state.json)`);
}
