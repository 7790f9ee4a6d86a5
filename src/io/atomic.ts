// Atomic file replacement: write a temp file beside the target, fsync, rename over it.

import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

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
    throw e;
  }
}

/**
 * Replaces `path` with `data` so that a reader (or a crash) sees either the old file or the new one,
 * never a prefix. On failure the temp file is removed and the old file is untouched.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = tempSiblingPath(path);
  try {
    writeFileSynced(tmp, data);
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* never created, or already renamed */ }
    throw new Error(`writeFileAtomic: cannot write ${path}: ${(e as Error).message}`, { cause: e });
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
