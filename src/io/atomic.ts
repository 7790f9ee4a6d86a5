// Atomic file replacement: write a temp file beside the target, fsync, rename over it.

import { closeSync, existsSync, fsyncSync, openSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** `dir` or its closest ancestor that exists: the folder whose permissions decide a write below it. */
function nearestExisting(dir: string): string {
  let d = dir;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

/** What an errno means for someone writing `path`, in words (the bare code, 'ENOENT', names neither cause nor place). */
function explainCode(code: string | undefined, path: string): string | null {
  const dir = dirname(path);
  switch (code) {
    case 'EACCES':
    case 'EPERM': return `permission denied (is ${nearestExisting(dir)} writable by this user?)`;
    case 'EROFS': return `${dir} is on a read-only file system`;
    case 'ENOSPC': return 'no space left on the device';
    case 'EDQUOT': return 'the disk quota is exhausted';
    case 'EISDIR': return `${path} is a directory`;
    case 'ENOTDIR': return `a part of ${dir} is a file, not a directory`;
    case 'ENOENT': return existsSync(dir) ? `${basename(path)} does not exist in ${dir}` : `the directory ${dir} does not exist`;
    case 'EMFILE':
    case 'ENFILE': return 'too many open files';
    case 'EIO': return 'input/output error (a failing disk or network file system)';
    default: return null;
  }
}

/**
 * An error message that says what failed and where: `${what} ${path}: <cause in words> (CODE)`. Temp
 * names made by tempSiblingPath are shown as the file they stand for, since the user never asked for them.
 */
export function fsErrorMessage(what: string, path: string, e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const shown = stagedTarget(path);
  const words = explainCode(err.code, shown);
  return `${what} ${shown}: ${words !== null ? `${words} (${err.code})` : err.message}`;
}

/** The file a temp sibling name stands for ('x.json.tmp-12-ab34...' -> 'x.json'); other names unchanged. */
export function stagedTarget(path: string): string {
  return path.replace(/\.tmp-\d+-[0-9a-f]{12}$/, '');
}

/**
 * A sibling name for staging `path`: same directory so that rename() never crosses a filesystem,
 * pid and random suffix so that concurrent writers (and a crashed earlier run) never collide.
 */
export function tempSiblingPath(path: string, tag = 'tmp'): string {
  return join(dirname(path), `${basename(path)}.${tag}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/**
 * Creates `path` (which must not exist) holding `data`, flushed to disk before returning. On failure
 * the partial file is removed. The building block of atomic replacement and of staged commits.
 */
export function writeFileSynced(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let fd: number | null = null;
  try {
    // 'wx': never follow or clobber something already at this name.
    fd = openSync(path, 'wx', 0o644);
    let off = 0;
    while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    // Without fsync before a later rename, a power loss can leave the new name pointing at an empty file.
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
  } catch (e) {
    if (fd !== null) {
      try { closeSync(fd); } catch { /* already failing; the original error matters */ }
    }
    try { unlinkSync(path); } catch { /* never created */ }
    // a write error names no file of its own ('ENOSPC: no space left on device, write')
    throw Object.assign(new Error(fsErrorMessage('cannot write', path, e), { cause: e }), { code: (e as NodeJS.ErrnoException).code });
  }
}

/**
 * Replaces `path` with `data` so that a reader (or a crash) sees either the old file or the new one,
 * never a prefix. On failure the temp file is removed and the old file is untouched.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  // Checked first: otherwise the failure would come from the temp file and name it, not `path`.
  if (existsSync(path) && statSync(path).isDirectory()) throw new Error(`cannot write ${path}: it is a directory`);
  const tmp = tempSiblingPath(path);
  // on failure it has removed the temp file and named `path` in its message
  writeFileSynced(tmp, data);
  try {
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* never created, or already renamed */ }
    throw Object.assign(new Error(fsErrorMessage('cannot write', path, e), { cause: e }), { code: (e as NodeJS.ErrnoException).code });
  }
  fsyncDir(dirname(path));
}

/** Makes a rename durable. Best effort: some platforms (Windows) cannot open a directory for fsync. */
export function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Durability of the directory entry is not guaranteed there; atomicity still is.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}
