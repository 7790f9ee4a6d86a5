// DataError: a missing or malformed data file, with the path, what was expected and what was found.

import { existsSync, readFileSync, statSync } from 'node:fs';

export class DataError extends Error {
  /** The file or directory at fault. */
  readonly path: string;

  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = 'DataError';
    this.path = path;
  }
}

/**
 * Reads a whole file, turning the system's terse ENOENT/EISDIR into a DataError that says what
 * the file was supposed to be, so that a user knows which file to fetch.
 */
export function readFileOrThrow(path: string, what: string): Buffer {
  if (!existsSync(path)) throw new DataError(path, `expected ${what}, found no such file`);
  if (statSync(path).isDirectory()) throw new DataError(path, `expected ${what}, found a directory`);
  return readFileSync(path);
}

export function hex32(v: number): string {
  return '0x' + (v >>> 0).toString(16).padStart(8, '0');
}
