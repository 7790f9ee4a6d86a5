// The shape of one part of `moe experiment multilingual <part>`: options, result, and the helpers every part shares.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../io/atomic.js';

export interface PartOptions {
  /** Tiny sizes for tests (seconds). */
  quick: boolean;
  /** Output directory (default: each part's docs/results/multilingual/<part>[-quick]). */
  out?: string;
  /** Training seeds per cell (default: the part's, at least 2 where cells are compared). */
  seeds?: number;
  /** The command line, written into results.md. */
  command: string;
  log?: (line: string) => void;
}

export interface PartResult {
  out: string;
  seconds: number;
  /** One line for the terminal. */
  summary: string;
}

export interface MultilingualPart {
  /** One paragraph for `moe experiment --help`. */
  help: string;
  run(o: PartOptions): Promise<PartResult>;
}

export function defaultOut(part: string, quick: boolean): string {
  return quick ? join('runs', 'experiments', 'multilingual', `${part}-quick`) : join('docs', 'results', 'multilingual', part);
}

/** Writes results.json and results.md into out (atomically). */
export function writeResults(out: string, json: unknown, markdown: string): void {
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(json, null, 1)}\n`);
  writeFileAtomic(join(out, 'results.md'), markdown);
}
